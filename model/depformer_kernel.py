"""The whole depformer of one column (every step, layer and draw) as one persistent CUDA kernel.

The depformer runs up to 16 sub-steps of 6 small layers per column; as MLX ops that is ~390
kernels for ~100 MB of weights per step: its time is launch latency and host encoding, not
bandwidth. This kernel keeps one block per SM resident for the whole column and separates the
phases that need all of a previous phase's outputs with a grid-wide barrier (see
`model.persistent_kernel`). Per layer and step:

1. every block RMS-normalises the residual stream x (1024 values, in shared memory) and the grid
   computes the packed q/k/v projection, one output row per warp -- barrier;
2. every block computes the attention of all heads over steps 0..k from the stored q/k/v, then
   the grid computes `x + out_proj(attention)` -- barrier;
3. every block normalises x' and the grid computes `silu(gate) * value` of `linear_in` -- barrier;
4. the grid computes `x' + linear_out(hidden)` -- barrier.

Then the grid computes the step's logits (the float `linears[k]`), and every block draws the
token itself (argmax, or the top-k cut by a radix select and the Gumbel-max draw with the noise
MLX drew), so the next step's input `depformer_in[k+1](h) + emb[token]` needs no barrier: 25
barriers per step, one kernel per column. Intermediate values are rounded to the activation
dtype where MLX's ops round them, and accumulated in float32. Weights are MLX-affine 4/8-bit
(the depformer's projections), read from a few stacked arrays (`stack`): the modules' own
weights become views of them, so memory stays the same.

`check` runs the kernel at load on the model's weights against MLX's ops (teacher-forced logits
and the draws from them) and turns it off, with the reason, if anything differs (a timed-out
barrier included). `PPX_DEPFORMER=mlx` turns it off. Measured on an H200, 8 steps with top-k
sampling: 1.3-1.4 ms against 4.0-6.5 ms for MLX's ops (`python -m benchmarks.kernels_ab`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model import matvec, persistent_kernel
from model.sampling import SamplingParams, draw, gumbel_noise
from model.stacked import stack_into

ENV_VAR = "PPX_DEPFORMER"
THREADS = 512  # per block, one block per SM (H100, 8 steps: 256 1.60, 512 1.49, 1024 1.54 ms)
KERNEL_NAME = "ppx_depformer"  # a digest of the source and constants is appended


@dataclass(frozen=True)
class DepformerStack(persistent_kernel.StackedWeights):
    """The depformer's weights as the kernel reads them (the modules hold views of these).

    qa/sa/ba: every 1024-input projection (rows per layer: in_proj of all steps, out_proj of all
    steps, then `linear_in` of step 0, 1, ...); qb/sb/bb: every `linear_out` (layer-major, then
    step); heads: the float `linears` stacked; emb: `depformer_text_emb` then `depformer_emb`;
    norms: norm1/norm2 weights of each layer in the activation dtype.
    """

    heads: mx.array | None = None
    emb: mx.array | None = None


_HEADER = (
    persistent_kernel.HEADER
    + """
__device__ __forceinline__ int ppx_pad(int i) { return i + ((i >> 4) << 2); }

// The first index of the largest value over the block (as MLX's argmax breaks ties).
template <int NT>
__device__ __forceinline__ int ppx_block_argmax(float best, int idx, float* redf, int* redi) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffff, best, off);
    const int oi = __shfl_xor_sync(0xffffffff, idx, off);
    if (ob > best || (ob == best && oi < idx)) {
      best = ob;
      idx = oi;
    }
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    redf[threadIdx.x >> 5] = best;
    redi[threadIdx.x >> 5] = idx;
  }
  __syncthreads();
  best = redf[0];
  idx = redi[0];
  for (int w = 1; w < NT / 32; w++) {
    if (redf[w] > best || (redf[w] == best && redi[w] < idx)) {
      best = redf[w];
      idx = redi[w];
    }
  }
  return idx;
}

// RMSNorm of x[D] into out (padded), as MLX's kernel rounds: w * T(x * rsqrt(mean(x^2) + eps)).
template <typename T, int D, int NT>
__device__ __forceinline__ void ppx_rms(
    const float* x, const T* w, float* out, float eps, float* red) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < D; i += NT) ss += x[i] * x[i];
  const float inv = rsqrtf(ppx_block_sum<NT>(ss, red) / D + eps);
  for (int i = threadIdx.x; i < D; i += NT) {
    const T y = T(x[i] * inv);
    out[ppx_pad(i)] = ppx_f(T(ppx_f(w[i]) * ppx_f(y)));
  }
  __syncthreads();
}

// One row of an affine quantized weight times x (shared, padded); every lane gets the sum.
template <typename T, int BITS, int G, int K>
__device__ __forceinline__ float ppx_qdot(
    const uint32_t* w, const T* s, const T* b, size_t row, const float* x, int lane) {
  constexpr int CHUNKS = K * BITS / 128;
  constexpr int EPC = 128 / BITS;
  constexpr int PW = 32 / BITS;
  constexpr int GROUPS = K / G;
  const uint4* wv = reinterpret_cast<const uint4*>(w) + row * CHUNKS;
  const T* sr = s + row * GROUPS;
  const T* br = b + row * GROUPS;
  float acc = 0.f;
#pragma unroll 2
  for (int c = lane; c < CHUNKS; c += 32) {
    const uint4 q = wv[c];
    const int e0 = c * EPC;
    float xf[EPC];
#pragma unroll
    for (int v = 0; v < EPC / 4; v++) {
      const float4 f = *reinterpret_cast<const float4*>(x + ppx_pad(e0 + 4 * v));
      xf[4 * v] = f.x;
      xf[4 * v + 1] = f.y;
      xf[4 * v + 2] = f.z;
      xf[4 * v + 3] = f.w;
    }
    float xsum = 0.f;
#pragma unroll
    for (int j = 0; j < EPC; j++) xsum += xf[j];
    const int g = e0 / G;
    const float dot = ppx_word_dot<BITS>(q.x, xf) + ppx_word_dot<BITS>(q.y, xf + PW)
        + ppx_word_dot<BITS>(q.z, xf + 2 * PW) + ppx_word_dot<BITS>(q.w, xf + 3 * PW);
    acc = fmaf(ppx_f(sr[g]), dot, fmaf(ppx_f(br[g]), xsum, acc));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, off);
  return acc;
}

// One row of a float weight [rows, K] times x (shared, padded); every lane gets the sum.
template <typename T, int K>
__device__ __forceinline__ float ppx_fdot(const T* w, size_t row, const float* x, int lane) {
  constexpr int EPC = 16 / sizeof(T);
  constexpr int CHUNKS = K / EPC;
  const uint4* wv = reinterpret_cast<const uint4*>(w + row * K);
  float acc = 0.f;
#pragma unroll 2
  for (int c = lane; c < CHUNKS; c += 32) {
    const uint4 u = wv[c];
    const T* t = reinterpret_cast<const T*>(&u);
    const int e0 = c * EPC;
#pragma unroll
    for (int j = 0; j < EPC; j++) acc = fmaf(ppx_f(t[j]), x[ppx_pad(e0 + j)], acc);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, off);
  return acc;
}

// Float32 <-> unsigned keys in the same order (for the radix select of the top-k cut).
__device__ __forceinline__ unsigned int ppx_key(float f) {
  const unsigned int u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float ppx_unkey(unsigned int k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
"""
)

_BODY = """
  constexpr int NW = NT / 32;
  constexpr int DH = D / NH;
  constexpr int VPL = DH / 32;
  constexpr int QKV = 3 * D;
  constexpr int LROWS = S * (QKV + D + 2 * HID);
  constexpr int MAXK = D > HID ? D : HID;
  __shared__ __align__(16) float xs[D];
  __shared__ __align__(16) float ns[MAXK + MAXK / 4 + 16];
  __shared__ float lg[CARD];
  __shared__ float redf[NW];
  __shared__ int redi[NW];
  __shared__ int hist[256];
  __shared__ int sel_s, kk_s;

  unsigned int* sync = reinterpret_cast<unsigned int*>(work);
  float* x1 = work + SYNC;
  float* x2 = x1 + D;
  float* qkvg = x2 + D;
  float* hidg = qkvg + NL * S * QKV;
  float* logg = hidg + HID;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int gwarp = blockIdx.x * NW + (tid >> 5);
  const int nwarps = gridDim.x * NW;
  unsigned int target = 0;
  const float eps = params[0];
  const float inv_temp = params[1];
  const float scale_log2 = params[2];
  const int n_steps = static_cast<int>(params[3]);
  const int top_k = static_cast<int>(params[4]);
  const bool use_forced = params[5] != 0.f;
  const bool greedy = inv_temp <= 0.f;

  {
    const T* row = emb + static_cast<size_t>(text[0]) * D;
    for (int i = tid; i < D; i += NT) xs[i] = ppx_f(T(ppx_f(dep_in[i]) + ppx_f(row[i])));
    __syncthreads();
  }

  for (int k = 0; k < n_steps; k++) {
    for (int l = 0; l < NL; l++) {
      const size_t base = static_cast<size_t>(l) * LROWS;
      float* qkv_l = qkvg + static_cast<size_t>(l) * S * QKV;
      // 1. norm1, packed q/k/v
      ppx_rms<T, D, NT>(xs, norms + (2 * l) * D, ns, eps, redf);
      for (int r = gwarp; r < QKV; r += nwarps) {
        const float v = ppx_qdot<T, BITS, G, D>(qa, sa, ba, base + k * QKV + r, ns, lane);
        if (lane == 0) qkv_l[k * QKV + r] = ppx_f(T(v));
      }
      ppx_grid_sync(sync, target);
      // 2. attention over steps 0..k (every block, all heads), x + out_proj
      for (int hh = tid >> 5; hh < NH; hh += NW) {
        float q[VPL], o[VPL];
        const int d0 = hh * DH + lane * VPL;
#pragma unroll
        for (int i = 0; i < VPL; i++) {
          q[i] = scale_log2 * __ldcg(qkv_l + k * QKV + d0 + i);
          o[i] = 0.f;
        }
        float m = -cuda::std::numeric_limits<float>::infinity();
        float sum = 0.f;
        for (int j = 0; j <= k; j++) {
          const float* kp = qkv_l + j * QKV + D + d0;
          float s = 0.f;
#pragma unroll
          for (int i = 0; i < VPL; i++) s = fmaf(q[i], __ldcg(kp + i), s);
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffff, s, off);
          const float mn = fmaxf(m, s);
          const float f = exp2f(m - mn);
          const float e = exp2f(s - mn);
          sum = sum * f + e;
#pragma unroll
          for (int i = 0; i < VPL; i++) o[i] = o[i] * f + e * __ldcg(kp + D + i);
          m = mn;
        }
        const float rs = __frcp_rn(sum);
#pragma unroll
        for (int i = 0; i < VPL; i++) ns[ppx_pad(d0 + i)] = ppx_f(T(o[i] * rs));
      }
      __syncthreads();
      for (int r = gwarp; r < D; r += nwarps) {
        const float v = ppx_qdot<T, BITS, G, D>(qa, sa, ba, base + S * QKV + k * D + r, ns, lane);
        if (lane == 0) x1[r] = ppx_f(T(v + xs[r]));
      }
      ppx_grid_sync(sync, target);
      // 3. norm2, silu(gate) * value
      for (int i = tid; i < D; i += NT) xs[i] = __ldcg(x1 + i);
      __syncthreads();
      ppx_rms<T, D, NT>(xs, norms + (2 * l + 1) * D, ns, eps, redf);
      const size_t gin = base + S * (QKV + D) + static_cast<size_t>(k) * 2 * HID;
      for (int r = gwarp; r < HID; r += nwarps) {
        const float g = ppx_qdot<T, BITS, G, D>(qa, sa, ba, gin + r, ns, lane);
        const float v = ppx_qdot<T, BITS, G, D>(qa, sa, ba, gin + HID + r, ns, lane);
        if (lane == 0) hidg[r] = ppx_f(T(g / (1.f + __expf(-g)) * v));
      }
      ppx_grid_sync(sync, target);
      // 4. x' + linear_out
      for (int i = tid; i < HID; i += NT) ns[ppx_pad(i)] = __ldcg(hidg + i);
      __syncthreads();
      const size_t gout = (static_cast<size_t>(l) * S + k) * D;
      for (int r = gwarp; r < D; r += nwarps) {
        const float v = ppx_qdot<T, BITS, G, HID>(qb, sb, bb, gout + r, ns, lane);
        if (lane == 0) x2[r] = ppx_f(T(v + xs[r]));
      }
      ppx_grid_sync(sync, target);
      for (int i = tid; i < D; i += NT) xs[i] = __ldcg(x2 + i);
      __syncthreads();
    }
    // logits of step k
    for (int i = tid; i < D; i += NT) ns[ppx_pad(i)] = xs[i];
    __syncthreads();
    for (int r = gwarp; r < CARD; r += nwarps) {
      const float v = ppx_fdot<T, D>(heads, static_cast<size_t>(k) * CARD + r, ns, lane);
      if (lane == 0) logg[k * CARD + r] = ppx_f(T(v));
    }
    ppx_grid_sync(sync, target);
    // the token (every block draws it: the next input needs no barrier)
    for (int i = tid; i < CARD; i += NT) lg[i] = __ldcg(logg + k * CARD + i);
    __syncthreads();
    float best = -cuda::std::numeric_limits<float>::infinity();
    int idx = 0x7fffffff;
    if (greedy) {
      for (int i = tid; i < CARD; i += NT) {
        if (lg[i] > best) {
          best = lg[i];
          idx = i;
        }
      }
    } else {
      float kth = -cuda::std::numeric_limits<float>::infinity();
      if (top_k > 0 && top_k < CARD) {
        // radix select of the top_k-th largest logit, 8 bits at a time from the top
        unsigned int prefix = 0u, mask = 0u;
        int kk = top_k;
        for (int shift = 24; shift >= 0; shift -= 8) {
          for (int i = tid; i < 256; i += NT) hist[i] = 0;
          __syncthreads();
          for (int i = tid; i < CARD; i += NT) {
            const unsigned int key = ppx_key(lg[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
          }
          __syncthreads();
          if (tid < 32) {
            int c[8];
            int tot = 0;
#pragma unroll
            for (int j = 0; j < 8; j++) {
              c[j] = hist[lane * 8 + j];
              tot += c[j];
            }
            int incl = tot;  // this lane's bins and every higher lane's
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) {
              const int o = __shfl_down_sync(0xffffffff, incl, off);
              if (lane + off < 32) incl += o;
            }
            int above = incl - tot;
#pragma unroll
            for (int j = 7; j >= 0; j--) {
              if (above < kk && above + c[j] >= kk) {
                sel_s = lane * 8 + j;
                kk_s = kk - above;
              }
              above += c[j];
            }
          }
          __syncthreads();
          prefix |= static_cast<unsigned int>(sel_s) << shift;
          mask |= 255u << shift;
          kk = kk_s;
          __syncthreads();
        }
        kth = ppx_unkey(prefix);
      }
      const float* nz = noise + static_cast<size_t>(k) * CARD;
      for (int i = tid; i < CARD; i += NT) {
        const float v = (lg[i] >= kth ? lg[i] * inv_temp
                                      : -cuda::std::numeric_limits<float>::infinity())
            + nz[i];
        if (v > best) {
          best = v;
          idx = i;
        }
      }
    }
    int token = ppx_block_argmax<NT>(best, idx, redf, redi);
    if (use_forced && provided[k] != 0) token = forced[k];
    if (blockIdx.x == 0 && tid == 0) tokens[k] = token;
    if (k + 1 < n_steps) {
      const T* row = emb + (static_cast<size_t>(TEXT_ROWS) + static_cast<size_t>(k) * (CARD + 1)
                            + token) * D;
      const T* din = dep_in + static_cast<size_t>(k + 1) * D;
      for (int i = tid; i < D; i += NT) xs[i] = ppx_f(T(ppx_f(din[i]) + ppx_f(row[i])));
      __syncthreads();
    }
  }
"""

_INPUTS = [
    "dep_in", "text", "noise", "forced", "provided", "params",
    "qa", "sa", "ba", "qb", "sb", "bb", "heads", "emb", "norms",
]  # fmt: skip

_kernel: dict[tuple, Any] = {}


def _get_kernel(consts: list[tuple[str, Any]]) -> Any:
    key = (KERNEL_NAME, tuple(consts), THREADS, _BODY, _HEADER)
    if key not in _kernel:
        _kernel[key] = persistent_kernel.bounded_kernel(
            KERNEL_NAME, _INPUTS, ["tokens", "work"], _BODY, _HEADER, consts, THREADS
        )
    return _kernel[key]


disabled_reason: str | None = None  # why `check` turned the kernel off (None: it did not)


def enabled() -> bool:
    """The kernel may run: CUDA, `PPX_DEPFORMER` is not `mlx`, the SM count is known, no
    `check` failed."""
    return persistent_kernel.available(ENV_VAR) and disabled_reason is None


def supports(lm: Any) -> str | None:
    """Why the kernel cannot run `lm`'s depformer (None: it can)."""
    cfg = lm.config
    d, dep = cfg.depformer, lm.depformer
    if not dep.layers:
        return "the depformer has no layers"
    layer = dep.layers[0]
    linears = _projections(lm)
    if any(getattr(x, "bits", None) not in matvec.BITS for x in linears):
        return "its projections are not 4- or 8-bit quantized"
    if len({(x.bits, x.group_size) for x in linears}) != 1:
        return "its projections are quantized in different ways"
    if any(getattr(x, "mode", "affine") != "affine" for x in linears):
        return "its projections are not affine quantized"
    bits, group = linears[0].bits, linears[0].group_size
    if lm.dtype not in matvec.DTYPES or any(h.weight.dtype != lm.dtype for h in lm.linears):
        return "its output heads are not float weights of the activation dtype"
    card = cfg.card
    hidden = layer.gating[0].linear_out.weight.shape[1] * 32 // bits
    head_dim = d.d_model // d.num_heads
    chunk = 128 // bits
    if (
        card & (card - 1)
        or head_dim % 32
        or d.d_model % 16
        or hidden % 16
        or d.d_model % chunk
        or hidden % chunk
        or group % chunk
        or d.d_model % group
        or hidden % group
    ):
        return "its shapes are not ones it handles"
    return None


def stack(lm: Any) -> DepformerStack:
    """The kernel's arrays for `lm`'s depformer, its modules' weights becoming views of them
    (`stacked.stack_into`: no extra memory once done)."""
    dep = lm.depformer
    parts = ("weight", "scales", "biases")
    first = []
    for layer in dep.layers:
        first += [layer.self_attn.in_proj, layer.self_attn.out_proj]
        first += [g.linear_in for g in layer.gating]
    second = [g.linear_out for layer in dep.layers for g in layer.gating]
    qa, sa, ba = (stack_into(first, p) for p in parts)
    qb, sb, bb = (stack_into(second, p) for p in parts)
    heads = stack_into(list(lm.linears), "weight")
    emb = stack_into([lm.depformer_text_emb, *lm.depformer_emb], "weight")
    norms = mx.concatenate(
        [n.alpha.reshape(-1) for layer in dep.layers for n in (layer.norm1, layer.norm2)]
    ).astype(lm.dtype)
    mx.eval(norms)
    head = dep.layers[0].self_attn.in_proj
    eps = dep.layers[0].norm1.eps
    return DepformerStack(
        qa, sa, ba, qb, sb, bb, norms, head.bits, head.group_size, eps, heads=heads, emb=emb
    )


def _projections(lm: Any) -> list[Any]:
    """The depformer layers' projections, layer by layer (attention, then each step's FFN)."""
    out: list[Any] = []
    for layer in lm.depformer.layers:
        out += [layer.self_attn.in_proj, layer.self_attn.out_proj]
        out += [lin for g in layer.gating for lin in (g.linear_in, g.linear_out)]
    return out


def stack_sources(lm: Any) -> tuple[mx.array, ...]:
    """The arrays `stack(lm)` reads (to tell when a stack is stale)."""
    parts = ("weight", "scales", "biases")
    out = [lin[p] for lin in _projections(lm) for p in parts if p in lin]
    out += [n.alpha for layer in lm.depformer.layers for n in (layer.norm1, layer.norm2)]
    out += [h.weight for h in lm.linears]
    out += [lm.depformer_text_emb.weight] + [e.weight for e in lm.depformer_emb]
    return tuple(out)


_NO_INT = mx.zeros((1,), dtype=mx.int32)
_NO_FLOAT = mx.zeros((1,), dtype=mx.float32)


def run(
    lm: Any,
    weights: DepformerStack,
    dep_in: mx.array,
    text_token: mx.array,
    n_steps: int,
    params: SamplingParams,
    noise: mx.array | None,
    forced: mx.array | None = None,
    provided: mx.array | None = None,
) -> tuple[mx.array, mx.array, mx.array]:
    """Tokens int32 [n_steps] of one column, its logits float32 [n_steps, card] and the whole
    work buffer (word 1: the barrier's error flag, as float bits).

    dep_in: `depformer_in[k](h)` of steps 0..n_steps-1, [n_steps * D] (activation dtype);
    noise: Gumbel noise float32 [n_steps, card] (None when greedy); forced / provided as
    `LM.depformer_step` takes them.
    """
    cfg = lm.config
    d = cfg.depformer
    hidden = weights.qb.shape[1] * 32 // weights.bits
    dtype = lm.dtype
    greedy = params.greedy
    inv_temp = 0.0 if greedy else float(np.float32(1.0 / params.temperature))
    scalars = [
        weights.eps,
        inv_temp,
        (d.d_model // d.num_heads) ** -0.5 * math.log2(math.e),
        n_steps,
        params.top_k,
        0.0 if forced is None else 1.0,
    ]
    work_size = (
        persistent_kernel.SYNC_WORDS + 2 * d.d_model + d.num_layers * cfg.dep_q * 3 * d.d_model
    )
    work_size += hidden + cfg.dep_q * cfg.card
    consts: list[tuple[str, Any]] = [
        ("T", dtype),
        ("BITS", weights.bits),
        ("G", weights.group_size),
        ("D", d.d_model),
        ("HID", hidden),
        ("NH", d.num_heads),
        ("NL", d.num_layers),
        ("S", cfg.dep_q),
        ("CARD", cfg.card),
        ("TEXT_ROWS", cfg.text_card + 1),
        ("NT", THREADS),
        ("SYNC", persistent_kernel.SYNC_WORDS),
    ]
    tokens, work = persistent_kernel.launch(
        _get_kernel(consts),
        [
            dep_in.reshape(-1).astype(dtype),
            text_token.reshape(1).astype(mx.int32),
            _NO_FLOAT if noise is None else noise.astype(mx.float32).reshape(-1),
            _NO_INT if forced is None else forced.astype(mx.int32).reshape(-1),
            _NO_INT if provided is None else provided.astype(mx.int32).reshape(-1),
            mx.array(scalars, dtype=mx.float32),
            *weights.projections,
            weights.heads,
            weights.emb,
            weights.norms,
        ],
        [(n_steps,), (work_size,)],
        [mx.int32, mx.float32],
        THREADS,
    )
    start = work_size - cfg.dep_q * cfg.card
    logits = work[start : start + n_steps * cfg.card].reshape(n_steps, cfg.card)
    return tokens, logits, work


def verify(lm: Any, weights: DepformerStack) -> float:
    """Run the kernel with `weights` beside MLX's ops and raise ValueError where they differ;
    returns the worst relative row error of the logits.

    Greedy: each step's logits must match MLX's depformer teacher-forced with the kernel's
    tokens, per row (`persistent_kernel.compare`), and each token must be the argmax of MLX's
    logits. Sampling (top-k 250, temperature 0.8): each token must be what MLX's draw gives for
    MLX's logits and the same noise.
    """
    cfg = lm.config
    n = cfg.dep_q
    keys = mx.random.split(mx.random.key(1), 3)
    h = mx.random.normal((1, 1, cfg.temporal.d_model), key=keys[0]).astype(lm.dtype)
    text = mx.array(3, dtype=mx.int32)
    dep_in = lm.depformer_inputs_flat(h, n)
    tokens, logits, work = run(lm, weights, dep_in, text, n, SamplingParams(0.0, 0), None)
    ref = lm.depformer_logits(h, text, tokens, n)
    mx.eval(tokens, logits, ref, work)
    if np.array(work[:2]).view(np.uint32)[1]:
        raise ValueError("its grid barrier timed out (blocks not resident together)")
    worst = persistent_kernel.compare(logits, ref, "greedy logits")
    _same_picks(tokens, logits, ref, SamplingParams(0.0, 0), None, "greedy")
    params = SamplingParams(0.8, 250)
    noise = gumbel_noise(keys[1], (n, cfg.card))
    tokens, logits, _ = run(lm, weights, dep_in, text, n, params, noise)
    ref = lm.depformer_logits(h, text, tokens, n)
    mx.eval(tokens, logits, ref)
    worst = max(worst, persistent_kernel.compare(logits, ref, "sampled logits"))
    _same_picks(tokens, logits, ref, params, noise, "sampled")
    return worst


def _same_picks(
    tokens: mx.array,
    logits: mx.array,
    ref: mx.array,
    params: SamplingParams,
    noise: mx.array | None,
    what: str,
) -> None:
    """The kernel's tokens are exactly what MLX's draw picks from the kernel's own logits, and
    what it picks from MLX's logits up to a `near_tie` of the scores (logits / temperature +
    noise, as `sampling.draw` ranks them)."""
    got = np.array(tokens)
    own = np.array(draw(logits.astype(ref.dtype), params, noise))
    if not np.array_equal(got, own):
        raise ValueError(f"{what} tokens {got.tolist()} are not its logits' picks {own.tolist()}")

    def scores(x: mx.array) -> np.ndarray:
        s = np.array(x.astype(mx.float32))
        if params.greedy:
            return s
        kth = np.sort(s, axis=-1)[:, -params.top_k][:, None]
        s = np.where(s >= kth, s / params.temperature + np.array(noise), -np.inf)
        return s

    mine, theirs = scores(logits), scores(ref)
    want = theirs.argmax(axis=-1)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        if a == b:
            continue
        kept = np.isfinite(theirs[k]) & np.isfinite(mine[k])  # inside both top-k cuts
        ours_k, theirs_k = np.where(kept, mine[k], 0), np.where(kept, theirs[k], 0)
        if not (kept[a] and persistent_kernel.near_tie(theirs_k, ours_k, int(a), int(b))):
            raise ValueError(f"{what} tokens {got.tolist()} differ from MLX's {want.tolist()}")


def check(lm: Any) -> bool:
    """`verify` the kernel on `lm`'s weights; outside compiled graphs (`LM.prepare` calls it).
    A failure turns the kernel off for the process (`disabled_reason`). Returns whether it is
    on for this model."""
    global disabled_reason
    weights = lm.depformer_stack()
    if not enabled() or weights is None:
        return False
    if not persistent_kernel.first_check(lm, "_depformer_checked", weights):
        return True
    try:
        verify(lm, weights)
    except Exception as err:  # any failure: MLX's ops run the depformer
        disabled_reason = (
            f"the depformer kernel failed its check ({err}); using MLX's kernels instead"
        )
    return enabled()
