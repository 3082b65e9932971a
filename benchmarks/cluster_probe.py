"""What thread block clusters would give a persistent kernel here, on a CUDA GPU (sm_90+).

A question for the depformer kernel's next form (docs/cuda-kernels.md §The depformer: its 200
grid barriers are a quarter of its time): can a kernel launched through MLX's
`mx.fast.cuda_kernel` be built with a cluster size (`__cluster_dims__`, put on MLX's declaration
by a macro as `model/cuda/source.py` puts `__launch_bounds__`), how many blocks of 512 threads
are then resident together, what a cluster's barrier costs against the grid barrier of
src/common.cuh, and what a value read from another block's shared memory (distributed shared
memory) costs. For cluster sizes 1 (no cluster), 2, 4, 8 and 16 (16 needs the non-portable
size, allowed here by the kernel's attribute):

- `blocks`: the SMs the launch's blocks ran on, and whether a grid barrier over all of them
  returned (it gives up after a second: blocks not resident together);
- `grid barrier`, `cluster barrier`: µs per barrier, 2,000 in a row, from the global timer;
- `dsmem`: µs per round of "write a word, cluster barrier, read the next block's word, cluster
  barrier".

    python3 benchmarks/cluster_probe.py --blocks 132 128 64 16
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MLX_USE_CUDA_GRAPHS", "0")

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from model.cuda import source  # noqa: E402

THREADS = 512
ITERS = 2000

# the project's grid barrier and clock (src/common.cuh), then the probe's own
HEADER = (
    source.header()
    + """
__device__ __forceinline__ unsigned int cp_smid() {
  unsigned int r;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned int cp_rank() {
  unsigned int r = 0;
  if (CL > 1) asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ void cp_cluster_sync() {
  if (CL > 1) {
    asm volatile("barrier.cluster.arrive.release.aligned;\\n" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;\\n" ::: "memory");
  } else {
    __syncthreads();
  }
}
"""
)

# out: per block [smid, rank, grid barrier ok, grid ns, cluster ns, dsmem ns, dsmem check, 0]
BODY = """
  __shared__ unsigned int word;
  unsigned int target = 0;
  const unsigned int b = blockIdx.x;
  ppx_grid_sync(sync, target);  // after a second without every block it raises the flag
  unsigned long long t0 = ppx_now();
  for (int i = 0; i < ITERS; i++) ppx_grid_sync(sync, target);  // (then falls through)
  const unsigned long long grid_ns = ppx_now() - t0;
  const bool ok = *reinterpret_cast<volatile unsigned int*>(sync + 1) == 0u;
  cp_cluster_sync();
  t0 = ppx_now();
  for (int i = 0; i < ITERS; i++) cp_cluster_sync();
  const unsigned long long cluster_ns = ppx_now() - t0;
  unsigned int seen = 0;
  t0 = ppx_now();
  for (int i = 0; i < ITERS; i++) {
    if (threadIdx.x == 0) word = b * 100000u + i;
    cp_cluster_sync();
    if (threadIdx.x == 0) {
      if (CL > 1) {
        unsigned int local, remote, v;
        const unsigned int next = (cp_rank() + 1) % CL;
        local = static_cast<unsigned int>(__cvta_generic_to_shared(&word));
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(next));
        asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(remote) : "memory");
        seen += v == (b - cp_rank() + next) * 100000u + i;
      } else {
        seen += word == b * 100000u + i;
      }
    }
    cp_cluster_sync();
  }
  const unsigned long long dsmem_ns = ppx_now() - t0;
  if (threadIdx.x == 0) {
    unsigned int* o = out + 8 * b;
    o[0] = cp_smid();
    o[1] = cp_rank();
    o[2] = ok ? 1u : 0u;
    o[3] = static_cast<unsigned int>(grid_ns / ITERS);
    o[4] = static_cast<unsigned int>(cluster_ns / ITERS);
    o[5] = static_cast<unsigned int>(dsmem_ns / ITERS);
    o[6] = seen;
  }
"""


def kernel(cl: int):
    """The probe built with cluster size `cl` (1: none)."""
    name = f"cluster_probe_{cl}"
    full = f"custom_kernel_{name}"
    dims = f"__cluster_dims__({cl}, 1, 1) " if cl > 1 else ""
    head = (
        f"#define CL {cl}\n#define ITERS {ITERS}\n" + HEADER
        + f"\n#define {full} {dims}__launch_bounds__({THREADS}, 1) {full}\n"
    )  # fmt: skip
    return mx.fast.cuda_kernel(
        name=name,
        input_names=["dummy"],
        output_names=["out", "sync"],
        source=BODY + f"\n#undef {full}\n",
        header=head,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[132, 128, 64, 16])
    parser.add_argument("--clusters", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    dummy = mx.zeros((1,), dtype=mx.uint32)
    print(f"{'blocks':>6s} {'cluster':>7s} {'SMs':>4s} {'resident':>8s} {'grid µs':>8s} "
          f"{'cluster µs':>10s} {'dsmem µs':>8s} {'dsmem ok':>8s}")  # fmt: skip
    for cl in args.clusters:
        k = kernel(cl)
        for blocks in args.blocks:
            if blocks % cl:
                continue
            try:
                out, _ = k(
                    inputs=[dummy],
                    grid=(blocks * THREADS, 1, 1),
                    threadgroup=(THREADS, 1, 1),
                    output_shapes=[(blocks * 8,), (32,)],
                    output_dtypes=[mx.uint32, mx.uint32],
                    init_value=0,
                )
                o = np.array(out).reshape(blocks, 8)
            except Exception as err:  # a launch the GPU refuses: say so and go on
                print(f"{blocks:6d} {cl:7d}  failed: {str(err).splitlines()[0][:100]}")
                continue
            resident = bool(o[:, 2].all())
            print(
                f"{blocks:6d} {cl:7d} {len(set(o[:, 0])):4d} {str(resident):>8s} "
                f"{np.median(o[:, 3]) / 1e3:8.2f} {np.median(o[:, 4]) / 1e3:10.3f} "
                f"{np.median(o[:, 5]) / 1e3:8.3f} {str(bool((o[:, 6] == ITERS).all())):>8s}",
                flush=True,
            )


if __name__ == "__main__":
    main()
