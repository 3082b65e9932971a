"""What the persistent CUDA kernels (`model.temporal_kernel`, `model.depformer_kernel`) share.

Both keep one block per SM resident for a whole step and separate the phases that need all of
a previous phase's outputs with a grid-wide barrier: an atomic counter in the first word of a
zeroed work buffer. Blocks are co-resident because there is one per SM (`backend.sm_count`) and
the kernel declares its block size to the compiler (`bounded_kernel`: `__launch_bounds__`), so
registers never keep a block from fitting. A barrier that waits more than a second sets an
error flag (the buffer's second word) and every later one falls through: a kernel can fail, but
never hang the GPU. Each kernel's `check` compares it with MLX's ops at load (`compare`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model import matvec
from model.backend import on_cuda, sm_count

SYNC_WORDS = 32  # the work buffer's first words: barrier counter, error flag

HEADER = (
    matvec._HEADER
    + """
#include <cuda/std/limits>

__device__ __forceinline__ unsigned long long ppx_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Grid-wide barrier over co-resident blocks: a counter that only grows (zeroed with the buffer),
// each block waiting (acquire loads) for its next multiple of gridDim.x. After a second of
// waiting it raises the error flag (word 1) and every barrier from then on falls through.
__device__ __forceinline__ void ppx_grid_sync(unsigned int* sync, unsigned int& target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    target += gridDim.x;
    __threadfence();
    atomicAdd(sync, 1u);
    unsigned int v;
    int spins = 0;
    unsigned long long t0 = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(sync) : "memory");
      if (v >= target) break;
      if ((++spins & 1023) == 0) {  // now and then: the error flag, the clock
        if (t0 == 0) t0 = ppx_now();
        const volatile unsigned int* flag = sync + 1;
        if (*flag) break;
        if (ppx_now() - t0 > 1000000000ull) {
          atomicExch(sync + 1, 1u);
          break;
        }
      }
    }
  }
  __syncthreads();
}

template <int NT>
__device__ __forceinline__ float ppx_block_sum(float v, float* red) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffff, v, off);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float t = 0.f;
#pragma unroll
  for (int i = 0; i < NT / 32; i++) t += red[i];
  return t;
}
"""
)


@dataclass(frozen=True)
class StackedWeights:
    """A kernel's quantized projections stacked by input width (the modules hold views):
    qa/sa/ba (weights, scales, biases) of the model-width inputs, qb/sb/bb of the FFN's
    `linear_out`; norms: the RMSNorm weights in the activation dtype, and their epsilon."""

    qa: mx.array
    sa: mx.array
    ba: mx.array
    qb: mx.array
    sb: mx.array
    bb: mx.array
    norms: mx.array
    bits: int
    group_size: int
    eps: float

    @property
    def projections(self) -> tuple[mx.array, ...]:
        """The quantized stacks in the kernels' input order: qa, sa, ba, qb, sb, bb."""
        return (self.qa, self.sa, self.ba, self.qb, self.sb, self.bb)


def first_check(lm: Any, attr: str, weights: StackedWeights) -> bool:
    """True when `weights` (a kernel's stack for `lm`) have not been checked yet; marks them, so
    that a kernel is checked once per set of weights."""
    if getattr(lm, attr, None) is weights:
        return False
    setattr(lm, attr, weights)
    return True


def available(env_var: str) -> bool:
    """A persistent kernel can run here: CUDA, `env_var` is not `mlx`, the SM count is known."""
    return (
        on_cuda()
        and os.environ.get(env_var, "").strip().lower() != "mlx"
        and sm_count() is not None
    )


def launch(
    kernel: Any,
    inputs: list[mx.array],
    shapes: list[tuple[int, ...]],
    dtypes: list[mx.Dtype],
    threads: int,
) -> list[mx.array]:
    """Run a persistent kernel: one block of `threads` per SM, outputs zeroed (the work buffer's
    barrier counter and error flag must start at 0)."""
    return kernel(
        inputs=inputs,
        grid=((sm_count() or 1) * threads, 1, 1),
        threadgroup=(threads, 1, 1),
        output_shapes=shapes,
        output_dtypes=dtypes,
        init_value=0,
    )


CUDA_TYPES = {mx.bfloat16: "__nv_bfloat16", mx.float16: "__half", mx.float32: "float"}


def bounded_source(
    name: str, body: str, header: str, consts: list[tuple[str, Any]], threads: int
) -> tuple[str, str, str]:
    """(name, source, header) of `bounded_kernel`: the constants written into the source, the
    name made unique by a digest, and a macro that puts `__launch_bounds__` on the declaration
    (MLX declares `__global__ void custom_kernel_<name>(...)` right after the header; the macro
    is undefined at the end of the body, before NVRTC looks the kernel up by name)."""
    lines = [
        f"  using {k} = {CUDA_TYPES[v]};"
        if isinstance(v, mx.Dtype)
        else f"  constexpr int {k} = {int(v)};"
        for k, v in consts
    ]
    digest = hashlib.sha1(repr((body, header, consts, threads)).encode()).hexdigest()[:12]
    name = f"{name}_{digest}"
    full = f"custom_kernel_{name}"
    bounds = f"\n#define {full} __launch_bounds__({threads}, 1) {full}\n"
    source = "\n".join(lines) + "\n" + body + f"\n#undef {full}\n"
    return name, source, header + bounds


def bounded_kernel(
    name: str,
    inputs: list[str],
    outputs: list[str],
    body: str,
    header: str,
    consts: list[tuple[str, Any]],
    threads: int,
    **kwargs: Any,
) -> Any:
    """`mx.fast.cuda_kernel` with its constants written into the source (dtypes as `using`,
    ints as `constexpr int`) instead of template arguments, so that the kernel's name is known
    and its declaration can carry `__launch_bounds__(threads, 1)`: the compiler then fits its
    registers to `threads` per block, one block per SM. Call it without `template`."""
    name, source, header = bounded_source(name, body, header, consts, threads)
    return mx.fast.cuda_kernel(
        name=name,
        input_names=inputs,
        output_names=outputs,
        source=source,
        header=header,
        **kwargs,
    )


# A kernel's output rows are compared with MLX's ops' rows in two ways. The relative L2 error
# (|got - ref| <= ROW_TOLERANCE * |ref| for each row, cosine >= ~0.99995) bounds what bfloat16
# allows: both round to the activation dtype at the same places and differ by float32
# summation order and the odd rounding flip, which add up to 0.5-1.6e-2 of a row's norm
# through 32 layers on the 7B shapes with random weights (measured on an H200: 1.56e-2 at the
# worst, layer 20's keys). A bound on each row's norm,
# rather than on the largest value anywhere, lets no outlier channel hide an error in all the
# others. Rounding noise is uncorrelated with the row, so its projection on the row averages
# out, as 1/sqrt(n) over a row of n values; the row's gain <got, ref> / <ref, ref> must stay
# within `gain_tolerance(n)` of 1 (2e-3 for the 7B's rows of 2048-4096 values, 7.5e-3 for a
# test model's 64 logits), which catches a weight or scale off by 1% that the L2 bound alone
# lets through (measured on the 7B shapes: a layer's norm weight x1.01 moves its keys' gain by
# 7.5e-3).
ROW_TOLERANCE = 3e-2


def gain_tolerance(n: int) -> float:
    """How far from 1 the gain of a row of n values may be."""
    return max(2e-3, 0.06 / n**0.5)


def compare(got: mx.array, ref: mx.array, what: str, tolerance: float = ROW_TOLERANCE) -> float:
    """Raise ValueError unless every row (last axis) of `got` is within `tolerance` of the same
    row of `ref`, relative to that row's norm, and has a gain within `gain_tolerance` of 1 (NaN
    fails). Returns the worst relative error."""
    got = got.astype(mx.float32).reshape(-1, got.shape[-1])
    ref = ref.astype(mx.float32).reshape(-1, ref.shape[-1])
    energy = mx.maximum(mx.sum(ref * ref, axis=-1), 1e-30)
    error = (mx.linalg.norm(got - ref, axis=-1) / mx.sqrt(energy)).max().item()
    gain = (mx.abs(mx.sum(got * ref, axis=-1) / energy - 1)).max().item()
    if not error <= tolerance:  # also catches NaN (and a timed-out barrier's garbage)
        raise ValueError(f"its {what} are off by {error:.3g} of a row's norm")
    if not gain <= gain_tolerance(ref.shape[-1]):
        raise ValueError(f"its {what} have a gain off by {gain:.3g}")
    return error


def near_tie(ref: np.ndarray, got: np.ndarray, picked: int, best: int) -> bool:
    """Whether entry `picked` of the row `ref` (MLX's scores) is as good as its best entry to the
    precision at which `got` (the kernel's scores for the same row) agrees with `ref`: two
    scores each off by at most e can swap order only if they are within 2e."""
    e = float(np.abs(got - ref).max())
    return bool(ref[best] - ref[picked] <= 2 * e)


def same_argmax(got: mx.array, ref: mx.array, what: str) -> None:
    """Raise ValueError unless each row's largest entry is at the same index in both, or the
    two entries are a `near_tie`."""
    got_np = np.array(got.astype(mx.float32)).reshape(-1, got.shape[-1])
    ref_np = np.array(ref.astype(mx.float32)).reshape(-1, ref.shape[-1])
    a, b = got_np.argmax(axis=-1), ref_np.argmax(axis=-1)
    for row, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y and not near_tie(ref_np[row], got_np[row], int(x), int(y)):
            raise ValueError(f"its {what} pick {a.tolist()} where MLX's ops pick {b.tolist()}")
