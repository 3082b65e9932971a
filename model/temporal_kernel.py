"""The temporal transformer's one-position step (all 32 layers) as one persistent CUDA kernel.

As MLX ops a step is ~300 kernels (per layer: two norms, four mat-vecs, RoPE, two cache writes,
attention); most of its time is launch latency and host encoding. This kernel keeps one block
per SM resident and separates the phases of a layer with grid-wide barriers (see
`model.persistent_kernel`):

1. every block RMS-normalises x; the grid computes q/k/v two rows per warp (a RoPE pair), rotates
   q and k and writes k and v into the layer's ring slot -- barrier;
2. the grid computes attention partials, one (head, run of cached positions) per warp: running
   max, sum and weighted values (flash-decoding) -- barrier;
3. 128 warps combine the partials of each head -- barrier;
4. the grid computes `x + out_proj(attention)` -- barrier;
5. every block normalises x'; the grid computes `silu(gate) * value` -- barrier;
6. the grid computes `x' + linear_out(hidden)` -- barrier.

The ring caches are written in place: the kernel gets them as inputs (MLX allocates a custom
kernel's outputs anew, and copying 32 rings per step is what the step must never do) and writes
the new slot through them, so the step returns the same arrays as its new ring states. Slots
attended are 0..min(pos, context - 1): exactly those written (see `model.ring_mask`), so one
compiled kernel serves every window. Intermediate values are rounded to the activation dtype
where MLX's ops round them. `check` compares the kernel with MLX's ops at load (a few steps on
the model's weights) and turns it off, with the reason, if they differ. `PPX_TEMPORAL=mlx` turns
it off. Measured on an H200 at a full ring: 3.9 ms against 6.2-6.9 ms for MLX's ops, at 8 and 4
bits (`python -m benchmarks.kernels_ab`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model import matvec, persistent_kernel
from model.stacked import stack_into

ENV_VAR = "PPX_TEMPORAL"
THREADS = 512  # per block, one per SM (__launch_bounds__); H100 8-bit: 384 4.96, 512 4.56, 640 4.70, 1024 5.3 ms
UNROLL = {8: 4, 4: 8}  # 16-byte chunks per lane in flight (two rows each); 4-bit: 4 4.53, 8 4.05 ms
KERNEL_NAME = "ppx_temporal"
DTYPES = (mx.bfloat16, mx.float16)  # x and the hidden state live in shared memory in this type


@dataclass(frozen=True)
class TemporalStack(persistent_kernel.StackedWeights):
    """The temporal transformer's weights as the kernel reads them (the modules hold views).

    qa/sa/ba: every 4096-input projection (per layer: in_proj, out_proj, linear_in rows);
    qb/sb/bb: every `linear_out`; norms: norm1/norm2 weights in the activation dtype.
    """


_HEADER = """
// Shared-memory layout of a mat-vec's input: its 16-byte segments XOR-swizzled within rows of
// eight, so that the 32 lanes reading their chunks (SPC segments each, lane-strided) hit
// distinct banks: segment s lives at s ^ ((s >> 3) & (SPC - 1)).
template <int SPC>
__device__ __forceinline__ int ppx_seg(int s) {
  return s ^ ((s >> 3) & (SPC - 1));
}
template <int XV, int SPC>
__device__ __forceinline__ int ppx_sw(int i) {
  return ppx_seg<SPC>(i / XV) * XV + i % XV;
}

// Two rows of an affine quantized weight times x (shared memory, activation dtype, swizzled);
// csum: the sums of x over each 16-byte weight chunk (computed once per phase).
template <typename T, int BITS, int G, int K, int U>
__device__ __forceinline__ float2 ppx_qdot2(
    const uint32_t* w, const T* s, const T* b, size_t row0, size_t row1, const T* x,
    const float* csum, int lane) {
  constexpr int CHUNKS = K * BITS / 128;
  constexpr int EPC = 128 / BITS;
  constexpr int PW = 32 / BITS;
  constexpr int GROUPS = K / G;
  constexpr int XV = 16 / sizeof(T);
  constexpr int SPC = EPC / XV;
  const uint4* w0 = reinterpret_cast<const uint4*>(w) + row0 * CHUNKS;
  const uint4* w1 = reinterpret_cast<const uint4*>(w) + row1 * CHUNKS;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const T* s0 = s + row0 * GROUPS;
  const T* s1 = s + row1 * GROUPS;
  const T* b0 = b + row0 * GROUPS;
  const T* b1 = b + row1 * GROUPS;
  float a0 = 0.f, a1 = 0.f;
#pragma unroll U
  for (int c = lane; c < CHUNKS; c += 32) {
    const uint4 q0 = w0[c];
    const uint4 q1 = w1[c];
    float xf[EPC];
#pragma unroll
    for (int v = 0; v < SPC; v++) {
      const uint4 u = xv[ppx_seg<SPC>(c * SPC + v)];
      const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int j = 0; j < XV; j++) xf[v * XV + j] = ppx_f(t[j]);
    }
    const float xsum = csum[c];
    const int g = c * EPC / G;
    const float d0 = ppx_word_dot<BITS>(q0.x, xf) + ppx_word_dot<BITS>(q0.y, xf + PW)
        + ppx_word_dot<BITS>(q0.z, xf + 2 * PW) + ppx_word_dot<BITS>(q0.w, xf + 3 * PW);
    const float d1 = ppx_word_dot<BITS>(q1.x, xf) + ppx_word_dot<BITS>(q1.y, xf + PW)
        + ppx_word_dot<BITS>(q1.z, xf + 2 * PW) + ppx_word_dot<BITS>(q1.w, xf + 3 * PW);
    a0 = fmaf(ppx_f(s0[g]), d0, fmaf(ppx_f(b0[g]), xsum, a0));
    a1 = fmaf(ppx_f(s1[g]), d1, fmaf(ppx_f(b1[g]), xsum, a1));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    a0 += __shfl_xor_sync(0xffffffff, a0, off);
    a1 += __shfl_xor_sync(0xffffffff, a1, off);
  }
  return make_float2(a0, a1);
}

// The sums of a swizzled x[K] over each chunk of EPC values (in order, as the mat-vec kernel
// sums them).
template <typename T, int K, int EPC, int NT>
__device__ __forceinline__ void ppx_chunk_sums(const T* x, float* csum) {
  constexpr int XV = 16 / sizeof(T);
  for (int c = threadIdx.x; c < K / EPC; c += NT) {
    float t = 0.f;
#pragma unroll
    for (int j = 0; j < EPC; j++) t += ppx_f(x[ppx_sw<XV, EPC / XV>(c * EPC + j)]);
    csum[c] = t;
  }
  __syncthreads();
}

// RMSNorm of x into out (both shared, activation dtype; out swizzled for a mat-vec of SPC
// segments per chunk), as MLX's kernel rounds.
template <typename T, int D, int NT, int SPC>
__device__ __forceinline__ void ppx_rms_t(const T* x, const T* w, T* out, float eps, float* red) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < D; i += NT) {
    const float v = ppx_f(x[i]);
    ss += v * v;
  }
  const float inv = rsqrtf(ppx_block_sum<NT>(ss, red) / D + eps);
  for (int i = threadIdx.x; i < D; i += NT) {
    const T y = T(ppx_f(x[i]) * inv);
    out[ppx_sw<16 / sizeof(T), SPC>(i)] = T(ppx_f(w[i]) * ppx_f(y));
  }
  __syncthreads();
}
"""

_BODY = """
  constexpr int NW = NT / 32;
  constexpr int QKV = 3 * D;
  constexpr int LROWS = QKV + D + 2 * HID;
  constexpr int VPL = DH / 32;
  constexpr int KV16 = DH * sizeof(T) / 16;
  constexpr int XV = 16 / sizeof(T);
  constexpr int PART = DH + 2;
  __shared__ __align__(16) T xs[D];
  constexpr int EPC = 128 / BITS;
  constexpr int SPC = EPC / XV;
  __shared__ __align__(16) T nt[HID > D ? HID : D];  // a mat-vec's input (swizzled)
  __shared__ float csum[(HID > D ? HID : D) / EPC];
  __shared__ float qsm[NW][DH];  // each warp's query, for its attention items
  __shared__ float redf[NW];

  unsigned int* sync = reinterpret_cast<unsigned int*>(work);
  float* x1 = work + SYNC;
  float* x2 = x1 + D;
  float* qg = x2 + D;
  float* att = qg + D;
  float* hidg = att + D;
  float* part = hidg + HID;

  T* kc[NL];
  T* vc[NL];
  KV_POINTERS

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int wib = tid >> 5;
  const int gwarp = blockIdx.x * NW + wib;
  const int nwarps = gridDim.x * NW;
  unsigned int target = 0;
  const float eps = params[0];
  const float scale_log2 = params[1];
  const float log2_base = params[2];
  const int p = pos[0];
  const int slot = p % CTX;
  const int nvalid = p + 1 < CTX ? p + 1 : CTX;
  // positions per attention item: about one item per warp, whole runs of 32
  int run = (nvalid * NH + nwarps - 1) / nwarps;
  run = ((run + 31) / 32) * 32;
  const int nch = (nvalid + run - 1) / run;

  for (int i = tid; i < D; i += NT) xs[i] = x[i];
  __syncthreads();

  for (int l = 0; l < NL; l++) {
    const size_t base = static_cast<size_t>(l) * LROWS;
    // 1. norm1; q/k/v by RoPE pairs; k, v into the ring slot
    ppx_rms_t<T, D, NT, SPC>(xs, norms + (2 * l) * D, nt, eps, redf);
    ppx_chunk_sums<T, D, EPC, NT>(nt, csum);
    for (int pr = gwarp; pr < QKV / 2; pr += nwarps) {
      const int r = 2 * pr;
      const float2 v =
          ppx_qdot2<T, BITS, G, D, U>(qa, sa, ba, base + r, base + r + 1, nt, csum, lane);
      if (lane == 0) {
        float y0 = ppx_f(T(v.x));
        float y1 = ppx_f(T(v.y));
        const int part_ = r / D;  // 0 q, 1 k, 2 v
        const int within = r % D;
        const int head = within / DH;
        const int dd = within % DH;
        if (part_ < 2) {
          const float inv_freq = exp2f(-(static_cast<float>(dd / 2) / (DH / 2)) * log2_base);
          const float theta = static_cast<float>(p) * inv_freq;
          const float c = cosf(theta), s = sinf(theta);
          const float r0 = y0 * c - y1 * s;
          const float r1 = y0 * s + y1 * c;
          y0 = ppx_f(T(r0));
          y1 = ppx_f(T(r1));
        }
        if (part_ == 0) {
          qg[within] = y0;
          qg[within + 1] = y1;
        } else {
          T* cache = part_ == 1 ? kc[l] : vc[l];
          const size_t at = (static_cast<size_t>(head) * CTX + slot) * DH + dd;
          cache[at] = T(y0);
          cache[at + 1] = T(y1);
        }
      }
    }
    ppx_grid_sync(sync, target);
    // 2. attention partials: one (head, run of positions) per warp
    {
      const T* kl = kc[l];
      const T* vl = vc[l];
      for (int it = gwarp; it < NH * nch; it += nwarps) {
        const int h = it / nch;
        const int c = it % nch;
        __syncwarp();
        for (int d = lane; d < DH; d += 32) qsm[wib][d] = scale_log2 * __ldcg(qg + h * DH + d);
        __syncwarp();
        const T* kb = kl + static_cast<size_t>(h) * CTX * DH;
        const T* vb = vl + static_cast<size_t>(h) * CTX * DH;
        float m = -cuda::std::numeric_limits<float>::infinity();
        float lsum = 0.f;
        float o[VPL];
#pragma unroll
        for (int i = 0; i < VPL; i++) o[i] = 0.f;
        const int j0 = c * run;
        const int j1 = j0 + run < nvalid ? j0 + run : nvalid;
        for (int jb = j0; jb < j1; jb += 32) {
          const int j = jb + lane;
          float s = -cuda::std::numeric_limits<float>::infinity();
          if (j < j1) {
            const uint4* kp = reinterpret_cast<const uint4*>(kb + static_cast<size_t>(j) * DH);
            float acc = 0.f;
#pragma unroll
            for (int v = 0; v < KV16; v++) {
              const uint4 u = __ldcg(kp + v);
              const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
              for (int e = 0; e < XV; e++) acc = fmaf(qsm[wib][v * XV + e], ppx_f(t[e]), acc);
            }
            s = acc;
          }
          float mb = s;
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, off));
          const float mn = fmaxf(m, mb);
          const float f = exp2f(m - mn);
          const float pj = exp2f(s - mn);
          float ps = pj;
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffff, ps, off);
          lsum = lsum * f + ps;
#pragma unroll
          for (int i = 0; i < VPL; i++) o[i] *= f;
          const int nj = j1 - jb < 32 ? j1 - jb : 32;
#pragma unroll 8
          for (int t = 0; t < nj; t++) {
            const float pt = __shfl_sync(0xffffffff, pj, t);
            const T* vp = vb + static_cast<size_t>(jb + t) * DH + lane * VPL;
#pragma unroll
            for (int i = 0; i < VPL; i++) o[i] = fmaf(pt, ppx_f(vp[i]), o[i]);
          }
          m = mn;
        }
        float* dst = part + static_cast<size_t>(h * nch + c) * PART;
        if (lane == 0) {
          dst[0] = m;
          dst[1] = lsum;
        }
#pragma unroll
        for (int i = 0; i < VPL; i++) dst[2 + lane * VPL + i] = o[i];
      }
    }
    ppx_grid_sync(sync, target);
    // 3. combine each head's partials (one warp per head and 32 of its dims)
    for (int it = gwarp; it < NH * (DH / 32); it += nwarps) {
      const int h = it / (DH / 32);
      const int d = (it % (DH / 32)) * 32 + lane;
      const float* src = part + static_cast<size_t>(h * nch) * PART;
      float mx_ = -cuda::std::numeric_limits<float>::infinity();
      for (int c = 0; c < nch; c++) mx_ = fmaxf(mx_, __ldcg(src + c * PART));
      float lsum = 0.f, acc = 0.f;
#pragma unroll 4
      for (int c = 0; c < nch; c++) {
        const float f = exp2f(__ldcg(src + c * PART) - mx_);
        lsum = fmaf(__ldcg(src + c * PART + 1), f, lsum);
        acc = fmaf(__ldcg(src + c * PART + 2 + d), f, acc);
      }
      att[h * DH + d] = ppx_f(T(acc * __frcp_rn(lsum)));
    }
    ppx_grid_sync(sync, target);
    // 4. x + out_proj(attention)
    for (int i = tid; i < D; i += NT) nt[ppx_sw<XV, SPC>(i)] = T(__ldcg(att + i));
    __syncthreads();
    ppx_chunk_sums<T, D, EPC, NT>(nt, csum);
    for (int pr = gwarp; pr < D / 2; pr += nwarps) {
      const int r = 2 * pr;
      const float2 v = ppx_qdot2<T, BITS, G, D, U>(
          qa, sa, ba, base + QKV + r, base + QKV + r + 1, nt, csum, lane);
      if (lane == 0) {
        x1[r] = ppx_f(T(v.x + ppx_f(xs[r])));
        x1[r + 1] = ppx_f(T(v.y + ppx_f(xs[r + 1])));
      }
    }
    ppx_grid_sync(sync, target);
    // 5. norm2, silu(gate) * value
    for (int i = tid; i < D; i += NT) xs[i] = T(__ldcg(x1 + i));
    __syncthreads();
    ppx_rms_t<T, D, NT, SPC>(xs, norms + (2 * l + 1) * D, nt, eps, redf);
    ppx_chunk_sums<T, D, EPC, NT>(nt, csum);
    for (int r = gwarp; r < HID; r += nwarps) {
      const size_t g0 = base + QKV + D + r;
      const float2 v =
          ppx_qdot2<T, BITS, G, D, U>(qa, sa, ba, g0, g0 + HID, nt, csum, lane);
      if (lane == 0) hidg[r] = ppx_f(T(v.x / (1.f + __expf(-v.x)) * v.y));
    }
    ppx_grid_sync(sync, target);
    // 6. x' + linear_out(hidden)
    for (int i = tid; i < HID; i += NT) nt[ppx_sw<XV, SPC>(i)] = T(__ldcg(hidg + i));
    __syncthreads();
    ppx_chunk_sums<T, HID, EPC, NT>(nt, csum);
    for (int pr = gwarp; pr < D / 2; pr += nwarps) {
      const size_t r = static_cast<size_t>(l) * D + 2 * pr;
      const float2 v = ppx_qdot2<T, BITS, G, HID, U>(qb, sb, bb, r, r + 1, nt, csum, lane);
      if (lane == 0) {
        x2[2 * pr] = ppx_f(T(v.x + ppx_f(xs[2 * pr])));
        x2[2 * pr + 1] = ppx_f(T(v.y + ppx_f(xs[2 * pr + 1])));
      }
    }
    ppx_grid_sync(sync, target);
    for (int i = tid; i < D; i += NT) xs[i] = T(__ldcg(x2 + i));
    __syncthreads();
  }
  if (blockIdx.x == 0) {
    for (int i = tid; i < D; i += NT) out[i] = xs[i];
  }
"""

_kernels: dict[tuple, Any] = {}


def _get_kernel(consts: list[tuple[str, Any]], layers: int) -> Any:
    key = (KERNEL_NAME, tuple(consts), THREADS, _BODY, _HEADER)
    if key not in _kernels:
        pointers = "\n".join(
            f"  kc[{i}] = const_cast<T*>(k{i});\n  vc[{i}] = const_cast<T*>(v{i});"
            for i in range(layers)
        )
        names = ["x", "pos", "params", "qa", "sa", "ba", "qb", "sb", "bb", "norms"]
        names += [f"k{i}" for i in range(layers)] + [f"v{i}" for i in range(layers)]
        _kernels[key] = persistent_kernel.bounded_kernel(
            KERNEL_NAME,
            names,
            ["out", "work"],
            _BODY.replace("KV_POINTERS", pointers),
            persistent_kernel.HEADER + _HEADER,
            consts,
            THREADS,
            ensure_row_contiguous=False,  # the rings must be the arrays themselves, never copies
        )
    return _kernels[key]


disabled_reason: str | None = None  # why `check` turned the kernel off (None: it did not)


def enabled() -> bool:
    """The kernel may run: CUDA, `PPX_TEMPORAL` is not `mlx`, the SM count is known, no `check`
    failed."""
    return persistent_kernel.available(ENV_VAR) and disabled_reason is None


def _linears(layer: Any) -> list[Any]:
    return [
        layer.self_attn.in_proj,
        layer.self_attn.out_proj,
        layer.gating.linear_in,
        layer.gating.linear_out,
    ]


def supports(lm: Any) -> str | None:
    """Why the kernel cannot run `lm`'s temporal transformer (None: it can)."""
    cfg = lm.config.temporal
    layers = lm.transformer.layers
    if not layers:
        return "the transformer has no layers"
    linears = [x for layer in layers for x in _linears(layer)]
    if any(not matvec.affine(x) or x.bits not in matvec.BITS for x in linears):
        return "its projections are not 4- or 8-bit affine quantized"
    if len({(x.bits, x.group_size) for x in linears}) != 1:
        return "its projections are quantized in different ways"
    if lm.dtype not in DTYPES:
        return f"its activations are {lm.dtype} (the kernel takes bfloat16 or float16)"
    bits, group = linears[0].bits, linears[0].group_size
    hidden = cfg.dim_feedforward
    head_dim = cfg.d_model // cfg.num_heads
    chunk = 128 // bits
    if (
        head_dim % 32
        or head_dim % 8
        or cfg.d_model % group
        or hidden % group
        or group % chunk
        or cfg.d_model % 2
        or _shared_bytes(cfg.d_model, hidden, head_dim, bits) > 48 * 1024
    ):
        return "its shapes are not ones it handles"
    return None


def _shared_bytes(d: int, hidden: int, head_dim: int, bits: int) -> int:
    """Static shared memory of the kernel (at most 48 KiB): x, a mat-vec's input, chunk sums,
    each warp's query."""
    chunk = 128 // bits
    return (
        2 * d + max(4 * d, 2 * hidden) + 4 * max(d, hidden) // chunk + 4 * THREADS // 32 * head_dim
    )


def stack(lm: Any) -> TemporalStack:
    """The kernel's arrays for `lm`'s temporal transformer; the modules' weights become views."""
    layers = lm.transformer.layers
    parts = ("weight", "scales", "biases")
    first = [x for layer in layers for x in _linears(layer)[:3]]
    second = [layer.gating.linear_out for layer in layers]
    qa, sa, ba = (stack_into(first, p) for p in parts)
    qb, sb, bb = (stack_into(second, p) for p in parts)
    norms = mx.concatenate(
        [n.alpha.reshape(-1) for layer in layers for n in (layer.norm1, layer.norm2)]
    ).astype(lm.dtype)
    mx.eval(norms)
    head = layers[0].self_attn.in_proj
    eps = layers[0].norm1.eps
    return TemporalStack(qa, sa, ba, qb, sb, bb, norms, head.bits, head.group_size, eps)


def stack_sources(lm: Any) -> tuple[mx.array, ...]:
    """The arrays `stack(lm)` reads (to tell when a stack is stale)."""
    out: list[mx.array] = []
    for layer in lm.transformer.layers:
        for lin in _linears(layer):
            out += [lin[p] for p in ("weight", "scales", "biases") if p in lin]
        out += [layer.norm1.alpha, layer.norm2.alpha]
    return tuple(out)


def work_size(lm: Any) -> int:
    cfg = lm.config.temporal
    head_dim = cfg.d_model // cfg.num_heads
    runs = -(-cfg.context // 32)
    return (
        persistent_kernel.SYNC_WORDS
        + 4 * cfg.d_model
        + cfg.dim_feedforward
        + cfg.num_heads * runs * (head_dim + 2)
    )


def run(
    lm: Any, weights: TemporalStack, x: mx.array, pos: mx.array, states: list[list[mx.array]]
) -> tuple[mx.array, mx.array]:
    """The temporal transformer's output for one position: x [1, 1, D] at `pos` (int32 scalar
    array); writes keys and values into the ring `states` in place. Returns (out [1, 1, D],
    the work buffer: word 1 is the barrier's error flag)."""
    cfg = lm.config.temporal
    head_dim = cfg.d_model // cfg.num_heads
    params = [weights.eps, head_dim**-0.5 * math.log2(math.e), math.log2(cfg.max_period)]
    consts: list[tuple[str, Any]] = [
        ("T", lm.dtype),
        ("BITS", weights.bits),
        ("G", weights.group_size),
        ("D", cfg.d_model),
        ("HID", cfg.dim_feedforward),
        ("NH", cfg.num_heads),
        ("DH", head_dim),
        ("NL", cfg.num_layers),
        ("CTX", cfg.context),
        ("NT", THREADS),
        ("U", UNROLL[weights.bits]),
        ("SYNC", persistent_kernel.SYNC_WORDS),
    ]
    keys = [state[0] for state in states]
    values = [state[1] for state in states]
    out, work = persistent_kernel.launch(
        _get_kernel(consts, cfg.num_layers),
        [
            x.reshape(-1).astype(lm.dtype),
            pos.reshape(1).astype(mx.int32),
            mx.array(params, dtype=mx.float32),
            *weights.projections,
            weights.norms,
            *keys,
            *values,
        ],
        [(cfg.d_model,), (work_size(lm),)],
        [lm.dtype, mx.float32],
        THREADS,
    )
    return out.reshape(1, 1, cfg.d_model), work


def _fill_rings(caches: list[Any], seed: int) -> None:
    """Random keys and values in every slot of `caches` (a ring that has wrapped)."""
    for i, c in enumerate(caches):
        k_key, v_key = mx.random.split(mx.random.key(seed + i))
        shape, dtype = c.keys.shape, c.keys.dtype
        c.state = [
            mx.random.normal(shape, key=k_key).astype(dtype),
            mx.random.normal(shape, key=v_key).astype(dtype),
        ]


def verify(lm: Any, weights: TemporalStack) -> float:
    """Step the kernel with `weights` beside MLX's ops (each with its own rings) and raise
    ValueError where they differ; returns the worst relative row error seen.

    Positions 0-2 on empty rings, then two positions past the end of a full ring of random
    keys and values (every slot attended, the slot written wrapped around). At each step,
    every layer's new key and value, the output after the final norm and the text logits must
    agree per row (`persistent_kernel.compare`), and the logits' argmax must be the same.
    """
    cfg = lm.config.temporal
    ours, theirs = lm.make_cache(), lm.make_cache()
    positions = [0, 1, 2, cfg.context + 5, cfg.context + 6]
    worst = 0.0
    for n, p in enumerate(positions):
        if p == cfg.context + 5:  # the same wrapped ring on both sides
            _fill_rings(ours, 1000)
            _fill_rings(theirs, 1000)
            for c in (*ours, *theirs):
                c.offset = p
        x = mx.random.normal((1, 1, cfg.d_model), key=mx.random.key(10 + n)).astype(lm.dtype)
        pos = mx.array(p, dtype=mx.int32)
        got, work = run(lm, weights, x, pos, [c.state for c in ours])
        states = [list(c.state) for c in theirs]
        want = lm.transformer.step(x, states, pos, theirs[0].window_at(p))
        for c, st in zip(theirs, states, strict=True):
            c.state = st
        mx.eval(got, want, work, [c.state for c in ours], [c.state for c in theirs])
        for c in (*ours, *theirs):
            c.offset += 1
        if np.array(work[:2]).view(np.uint32)[1]:
            raise ValueError("its grid barrier timed out (blocks not resident together)")
        slot = p % cfg.context
        for layer, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            for i, what in enumerate(("key", "value")):
                row_a = a.state[i][:, :, slot].reshape(1, -1)
                row_b = b.state[i][:, :, slot].reshape(1, -1)
                what = f"layer {layer} {what}s at position {p}"
                worst = max(worst, persistent_kernel.compare(row_a, row_b, what))
        h_got, h_want = lm.out_norm(got), lm.out_norm(want)
        worst = max(worst, persistent_kernel.compare(h_got, h_want, f"outputs at position {p}"))
        logits_got, logits_want = lm.text_linear(h_got), lm.text_linear(h_want)
        worst = max(
            worst, persistent_kernel.compare(logits_got, logits_want, f"logits at position {p}")
        )
        persistent_kernel.same_argmax(logits_got, logits_want, f"text logits at position {p}")
    return worst


def check(lm: Any) -> bool:
    """`verify` the kernel on `lm`'s weights; outside compiled graphs (`LM.prepare` calls it).
    A failure turns the kernel off for the process (`disabled_reason`). Returns whether it is
    on."""
    global disabled_reason
    weights = lm.temporal_stack()
    if not enabled() or weights is None:
        return False
    if not persistent_kernel.first_check(lm, "_temporal_checked", weights):
        return True
    try:
        verify(lm, weights)
    except Exception as err:  # any failure: MLX's ops run the temporal transformer
        disabled_reason = (
            f"the temporal kernel failed its check ({err}); using MLX's kernels instead"
        )
    return enabled()
