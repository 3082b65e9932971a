"""How fast the temporal kernel's way of reading 4-bit weights can stream them, on a CUDA GPU.

A microbenchmark of the memory side alone (no arithmetic: each warp folds what it copied into one
word), on the shapes of the 7B's `linear_in` at 4 bits (11,264 row pairs of 4,096 inputs per
layer, groups of 64; 32 layers, 1.66 GB), one block of 512 threads per SM as the kernel runs:

- `split`: the weight stream as the kernel has it (`ppx_stream_issue` in src/temporal.cuh): a
  warp's item is two 16-byte chunks per lane of each row of a pair (gate row r, value row r +
  11264), from the codes array, plus the pieces of the scales and biases arrays those chunks'
  groups need, copied with `cp.async` into NS stages of shared memory, NS - 1 items ahead;
- `packed`: the same items, the same copies and stages, but each item's 2,304 bytes stored
  together (codes and scales in the order a stage holds them), as a weight laid out for the
  kernel at load time would be;
- `coalesced`: every thread reads 16-byte words of the same arrays, grid-strided, eight loads in
  flight: the GPU's plain streaming rate for the same bytes.

`--sms N ...` runs the kernels on N blocks (one per SM) instead of every SM's, for what fewer
SMs can read. `--phases N` puts a grid barrier after every 32 / N layers (32: one per layer, as
the kernel's `linear_in` phase ends), each warp's stream going on through it as the kernel's
does. Rounds are
alternated; a timed block queues `--calls` calls back to back and waits once, so a call's time
(the block's over its calls) is the GPU's, with MLX's small fills of the outputs between calls;
reported as the median and the rate it gives for the 1.66 GB.

    python3 benchmarks/weight_layout.py --stages 3 6 --phases 1 32 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# launched directly, one after the other: with CUDA graphs MLX may run independent calls at
# once, and the second then reads the first's bytes from the L2 (rates above the HBM's)
os.environ.setdefault("MLX_USE_CUDA_GRAPHS", "0")

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from model.cuda import source  # noqa: E402
from model.cuda.gpu_facts import sm_count  # noqa: E402

HID = 11264  # the 7B's gated hidden width: row pairs per layer
LAYERS = 32
ROW_BYTES = 4096 // 2  # 4-bit codes of 4,096 inputs
GROUPS = 4096 // 64  # scales (and biases) per row
ITEM_WORDS = 144  # 16-byte words per item: 2 rows x 2 chunks x 32 lanes, then 16 of scales
THREADS = 512

# the project's own copies, commit groups and grid barrier (src/common.cuh, src/temporal.cuh)
HEADER = source.header("temporal.cuh")

# MODE 0 split, 1 packed, 2 coalesced; NS stages; LPP layers per phase
BODY = """
  constexpr int NW = 512 / 32;
  constexpr int HIDP = 11264;
  constexpr int CH = 128;   // 16-byte chunks per row
  constexpr int GR = 64;    // groups per row
  constexpr int SW = 144;   // words per stage and warp
  constexpr int IPP = 2;    // items per row pair
  extern __shared__ __align__(16) uint4 stage[];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int wib = tid >> 5;
  const int nwarps = gridDim.x * NW;
  const int swarp = wib * gridDim.x + blockIdx.x;
  const int phases = 32 / LPP;
  unsigned int target = 0;
  unsigned int acc = 0;
  const uint4* w4 = reinterpret_cast<const uint4*>(w);
  const uint4* p4 = reinterpret_cast<const uint4*>(wp);
  if constexpr (MODE == 2) {
    const size_t nthreads = static_cast<size_t>(gridDim.x) * blockDim.x;
    const size_t gt = static_cast<size_t>(blockIdx.x) * blockDim.x + tid;
    for (int ph = 0; ph < phases; ph++) {
      const size_t r0 = static_cast<size_t>(ph) * LPP * 2 * HIDP;
      const size_t rows = static_cast<size_t>(LPP) * 2 * HIDP;
      const uint4* a = w4 + r0 * CH;
      const size_t na = rows * CH;
      for (size_t i = gt; i < na; i += 8 * nthreads) {  // eight loads in flight
        uint4 u[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
          const size_t j = i + k * nthreads;
          u[k] = j < na ? __ldcs(a + j) : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int k = 0; k < 8; k++) acc ^= u[k].x ^ u[k].y ^ u[k].z ^ u[k].w;
      }
      const uint4* s4 = reinterpret_cast<const uint4*>(s) + r0 * GR / 8;
      const uint4* b4 = reinterpret_cast<const uint4*>(b) + r0 * GR / 8;
      const size_t ns_ = rows * GR / 8;
      for (size_t i = gt; i < ns_; i += 4 * nthreads) {
        uint4 u[8];
#pragma unroll
        for (int k = 0; k < 4; k++) {
          const size_t j = i + k * nthreads;
          u[2 * k] = j < ns_ ? __ldcs(s4 + j) : make_uint4(0u, 0u, 0u, 0u);
          u[2 * k + 1] = j < ns_ ? __ldcs(b4 + j) : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int k = 0; k < 8; k++) acc ^= u[k].x ^ u[k].y ^ u[k].z ^ u[k].w;
      }
      if (ph + 1 < phases) ppx_grid_sync(sync, target);
    }
  } else {
    uint4* area = stage + wib * SW;
    constexpr int SSTRIDE = NW * SW;
    // items of phase ph for this warp: pairs swarp, swarp + nwarps, ... < LPP * HIDP (within
    // the phase's layers), IPP items each
    const int per = LPP * HIDP;
    const int cnt = per > swarp ? ((per - swarp + nwarps - 1) / nwarps) * IPP : 0;
    auto issue = [&](int ph, int i, int st) {
      if (i >= cnt) {
        ph += 1;
        i -= cnt;
      }
      if (ph < phases && i < cnt) {
        const int pr = ph * per + swarp + (i / IPP) * nwarps;
        const int ii = i % IPP;
        uint4* dst = area + st * SSTRIDE;
        if constexpr (MODE == 0) {
          const int l = pr / HIDP;
          const int r = pr % HIDP;
          const size_t row0 = static_cast<size_t>(l) * 2 * HIDP + r;
          const size_t row1 = row0 + HIDP;
          const int k0 = ii * 2;
#pragma unroll
          for (int u = 0; u < 2; u++) {
            const int c = lane + 32 * (k0 + u);
            ppx_cp16(dst + u * 32 + lane, w4 + row0 * CH + c);
            ppx_cp16(dst + (2 + u) * 32 + lane, w4 + row1 * CH + c);
          }
          if (lane < 16) {
            const int u = lane / 8;
            const int a = (lane / 2) % 4;
            const int g = (k0 + u) * 16 + (lane % 2) * 8;
            const uint16_t* src = ((a & 1) ? b : s) + ((a & 2) ? row1 : row0) * GR + g;
            ppx_cp16(dst + 128 + lane, reinterpret_cast<const uint4*>(src));
          }
        } else {
          const uint4* src = p4 + (static_cast<size_t>(pr) * IPP + ii) * SW;
          for (int j = lane; j < SW; j += 32) ppx_cp16(dst + j, src + j);
        }
      }
      ppx_cp_commit();
    };
    int base = 0;
    for (int i = 0; i < NS - 1; i++) issue(0, i, i % NS);
    for (int ph = 0; ph < phases; ph++) {
      for (int i = 0; i < cnt; i++) {
        const int o = i + NS - 1;
        issue(ph, o, (base + o) % NS);
        ppx_cp_wait<NS - 1>();
        __syncwarp();
        const uint4* st = area + ((base + i) % NS) * SSTRIDE;
#pragma unroll
        for (int u = 0; u < 4; u++) {
          const uint4 q = st[u * 32 + lane];
          acc ^= q.x ^ q.y ^ q.z ^ q.w;
        }
        if (lane < 16) {
          const uint4 q = st[128 + lane];
          acc ^= q.x ^ q.y ^ q.z ^ q.w;
        }
        __syncwarp();
      }
      base = (base + cnt) % NS;
      if (ph + 1 < phases) ppx_grid_sync(sync, target);
    }
    ppx_cp_wait<0>();
  }
  out[static_cast<size_t>(blockIdx.x) * blockDim.x + tid] = acc;
"""


def random_words(rows: int) -> tuple[mx.array, mx.array, mx.array]:
    """Codes (uint32 words), scales and biases (uint16) of `rows` rows, random bits."""
    w = mx.random.randint(0, 1 << 30, (rows, ROW_BYTES // 4)).astype(mx.uint32)
    s = mx.random.randint(0, 1 << 16, (rows, GROUPS)).astype(mx.uint16)
    b = mx.random.randint(0, 1 << 16, (rows, GROUPS)).astype(mx.uint16)
    return w, s, b


def packed_items(w: mx.array, s: mx.array, b: mx.array) -> mx.array:
    """The split arrays' items, each item's 144 words together, in pair-major order (as a
    weight laid out for the kernel would be)."""
    rows = w.shape[0]
    pairs = rows // 2
    codes = w.reshape(LAYERS, 2, HID, 2, 2, 32, 4)  # layer, gate/value, r, item, u, lane, word
    codes = codes.transpose(0, 2, 3, 1, 4, 5, 6)  # layer, r, item, gate/value, u, lane, word
    codes = codes.reshape(pairs, 2, 128 * 4)
    sc = s.reshape(LAYERS, 2, HID, 2, 2, 2, 8)  # layer, g/v, r, item, u, half, 8 scales
    bi = b.reshape(LAYERS, 2, HID, 2, 2, 2, 8)
    sb = mx.stack([sc, bi], axis=4)  # layer, g/v, r, item, s|b, u, half, 8
    # a stage's scale words: j = u*8 + a*2 + half, a = (row << 1) | is_bias
    sb = sb.transpose(0, 2, 3, 5, 1, 4, 6, 7)  # layer, r, item, u, g/v, s|b, half, 8
    sb = sb.reshape(pairs, 2, 16 * 8)
    words16 = mx.view(sb, mx.uint32)  # 16 words of 8 uint16 = 64 uint32
    return mx.concatenate([codes, words16], axis=-1).reshape(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="*", default=[3, 6])
    parser.add_argument("--phases", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sms", type=int, nargs="*", default=[],
                        help="blocks of 512 threads to run on (default: one per SM)")  # fmt: skip
    parser.add_argument("--calls", type=int, default=20, help="calls per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per round")
    args = parser.parse_args()
    sms = sm_count()
    rows = LAYERS * 2 * HID
    w, s, b = random_words(rows)
    wp = packed_items(w, s, b)
    mx.eval(w, s, b, wp)
    total = rows * (ROW_BYTES + 4 * GROUPS)
    assert wp.size * 4 == total, (wp.size * 4, total)
    kernels: dict[int, object] = {}

    def kernel(ns: int):
        if ns not in kernels:
            kernels[ns] = mx.fast.cuda_kernel(
                name=f"weight_layout_{ns}",
                input_names=["w", "s", "b", "wp"],
                output_names=["out", "sync"],
                source=BODY,
                header=HEADER,
                shared_memory=ns * (THREADS // 32) * ITEM_WORDS * 16,
            )
        return kernels[ns]

    def call(mode: int, ns: int, phases: int, grid: int) -> mx.array:
        out, _ = kernel(ns)(
            inputs=[w, s, b, wp],
            template=[("MODE", mode), ("NS", ns), ("LPP", LAYERS // phases)],
            grid=(grid * THREADS, 1, 1),
            threadgroup=(THREADS, 1, 1),
            output_shapes=[(grid * THREADS,), (32,)],
            output_dtypes=[mx.uint32, mx.uint32],
            init_value=0,
        )
        return out

    variants = []
    for phases in args.phases:
        for grid in args.sms or [sms]:
            on = "" if grid == sms else f", {grid} SMs"
            variants.append((f"coalesced, {phases} phase(s){on}", 2, 2, phases, grid))
            for ns in args.stages:
                variants.append((f"split, {ns} stages, {phases} phase(s){on}", 0, ns, phases, grid))
                variants.append(
                    (f"packed, {ns} stages, {phases} phase(s){on}", 1, ns, phases, grid)
                )
    # every variant reads every byte once, so the xor of all it folded is the same for all
    folded = {
        name: int(np.bitwise_xor.reduce(np.array(call(mode, ns, phases, grid))))
        for name, mode, ns, phases, grid in variants
    }
    if len(set(folded.values())) != 1:
        raise SystemExit(f"the variants read different bytes: {folded}")
    print(f"every variant folded the same bytes to {next(iter(folded.values())):#010x}")
    times: dict[str, list[float]] = {name: [] for name, *_ in variants}
    for _ in range(args.rounds):
        for name, mode, ns, phases, grid in variants:
            for _ in range(3):
                mx.eval(call(mode, ns, phases, grid))
            for _ in range(args.blocks):  # calls queued back to back, one wait per block
                t0 = time.perf_counter()
                mx.eval([call(mode, ns, phases, grid) for _ in range(args.calls)])
                times[name].append((time.perf_counter() - t0) / args.calls)
    print(
        f"{sms} SMs, {total / 1e9:.2f} GB per call; {args.rounds} rounds of {args.blocks} blocks"
        f" of {args.calls} calls queued back to back (ms per call)"
    )
    print(f"{'variant':40s} {'median ms':>10s} {'GB/s':>8s} {'rounds (ms)':>24s}")
    for name, *_ in variants:
        t = times[name]
        med = statistics.median(t)
        per_round = [
            statistics.median(t[i * args.blocks : (i + 1) * args.blocks]) * 1e3
            for i in range(args.rounds)
        ]
        rounds = ", ".join(f"{x:.3f}" for x in per_round)
        print(f"{name:40s} {med * 1e3:10.3f} {total / med / 1e9:8.0f} {rounds:>24s}")


if __name__ == "__main__":
    main()
