"""One activation row times an MLX-affine quantized weight in one CUDA kernel, with fused epilogues.

An LM step multiplies a single row by ~350 quantized weights. MLX's CUDA mat-vec reads 8 bytes
per thread at a time and converts codes with integer-to-float instructions; a residual add or
the gated FFN's SiLU then run as kernels of their own. This kernel gives each warp one output
row, reads 16-byte chunks, turns a code into a float by placing its bits under the exponent of
2^23 (a byte permute and a subtraction), folds the affine dequantization per chunk
(`sum((q*s + b) * x) = s * sum(q*x) + b * sum(x)`, float32 accumulation) and fuses the epilogue:

- `matvec(x, q)`: `x @ W.T`;
- `matvec(x, q, residual=r)`: `r + x @ W.T` (one rounding instead of two);
- `gated_matvec(x, q)`: `silu(x @ G.T) * (x @ V.T)`, G and V the two halves of W's rows.

Measured against MLX's kernels plus separate adds and SiLU (`python -m benchmarks.matvec_ab`):
32 temporal layers of 4 projections and two norms each, compiled: H100 8-bit 5.27 -> 4.13 ms,
4-bit 5.83 -> 4.30 ms; H200 (this version, two runs) 8-bit 4.94 -> 4.55 and 4.92 -> 4.20 ms,
4-bit 5.72 -> 4.44 and 5.40 -> 4.09 ms. The whole LM step on an H200
(rounds alternating the two in one process, median of the rounds' medians): 8-bit 10.73 -> 10.30
and 12.42 -> 10.67 ms, 4-bit 11.75 -> 11.12 and 14.19 -> 14.33 ms (noisy shared machines);
1076 -> 807 kernels per step. Applying the RMSNorm
inside the kernel as well (each warp reads all of x) was tried and was slower (+1.5 to 2 ms).
The kernel is compiled once per process (NVRTC, about 2 s; MLX does not cache custom kernels on
disk), when `check` first runs it against MLX's ops while the model loads. `usable(...)` says when it applies (CUDA, one row, 4 or 8 bits,
shapes it handles); otherwise the same functions run MLX's own ops, so callers need not care.
`PPX_MATVEC=mlx` turns it off (for comparisons). With the temporal and depformer kernels on
(`model.temporal_kernel`, `model.depformer_kernel`), which do their own mat-vecs, it runs the
stacked `depformer_in` projection and whatever those kernels leave to MLX.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from model.backend import on_cuda

ENV_VAR = "PPX_MATVEC"
ROWS_ENV_VAR = "PPX_QUANTIZED_ROWS"  # `qmm`: several rows through MLX's quantized GEMM on CUDA
ROWS = 1  # output rows per warp (1, 2 and 4 measured: 1 is fastest)
UNROLL = 2  # 16-byte chunks per thread the loop is unrolled by (2, 4 and 8 measured)
THREADS = 256  # per block (8 warps)
BITS = (4, 8)
DTYPES = (mx.bfloat16, mx.float16, mx.float32)


@dataclass(frozen=True)
class Quantized:
    """A quantized weight [N, K] (MLX affine layout) as `mx.quantized_matmul` takes it."""

    weight: mx.array  # uint32 [N, K * bits / 32]
    scales: mx.array  # [N, K / group_size]
    biases: mx.array  # [N, K / group_size]
    group_size: int
    bits: int

    @property
    def rows(self) -> int:
        return self.weight.shape[0]

    @property
    def inputs(self) -> int:
        return self.weight.shape[1] * 32 // self.bits


_HEADER = """
template <typename T>
__device__ __forceinline__ float ppx_f(T v) { return static_cast<float>(v); }

// The byte at `i` of `word` (0..255) as a float: its bits put under the exponent of 2^23.
__device__ __forceinline__ float ppx_byte(uint32_t word, int i) {
  return __int_as_float(__byte_perm(word, 0x4B000000u, 0x7540u + i)) - 8388608.f;
}

// sum_j q_j * x[j] for the 32 / BITS codes of one packed word.
template <int BITS>
__device__ __forceinline__ float ppx_word_dot(uint32_t word, const float* x) {
  float dot = 0.f;
  if constexpr (BITS == 8) {
#pragma unroll
    for (int i = 0; i < 4; i++) dot = fmaf(ppx_byte(word, i), x[i], dot);
  } else if constexpr (BITS == 4) {
    const uint32_t lo = word & 0x0F0F0F0Fu, hi = (word >> 4) & 0x0F0F0F0Fu;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      dot = fmaf(ppx_byte(lo, i), x[2 * i], dot);
      dot = fmaf(ppx_byte(hi, i), x[2 * i + 1], dot);
    }
  } else {
#pragma unroll
    for (int j = 0; j < 32 / BITS; j++) {
      dot = fmaf(static_cast<float>((word >> (j * BITS)) & ((1u << BITS) - 1u)), x[j], dot);
    }
  }
  return dot;
}
"""

# The kernel body. What it computes is chosen by the length of the input `r` (a kernel takes
# no scalar arguments, and one kernel compiles faster than three): 1 plain, 2 gated, else a
# residual of n_rows values.
_BODY = """
  const int n_rows = w_shape[0];
  const int words = w_shape[1];
  const int chunks = words / 4;
  const bool gated = r_shape[0] == 2;
  const bool residual = r_shape[0] > 2;
  const int n_out = gated ? n_rows / 2 : n_rows;
  const int n_acc = gated ? 2 * R : R;
  constexpr int EPC = 128 / BITS;
  constexpr int XV = 16 / sizeof(T);
  constexpr int PW = 32 / BITS;
  // 4-bit: weights read as streaming (no L1 allocation) and x through the read-only cache:
  // the 32 temporal layers' projections 4.33 -> 4.08 ms on an H200; at 8 bits it was slower.
  constexpr bool CACHE_HINTS = BITS == 4;
  const int groups = words * PW / G;
  const int lane = threadIdx.x & 31;
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int out0 = warp * R;
  if (out0 >= n_out) return;
  const uint4* wv = reinterpret_cast<const uint4*>(w);
  int wrow[2 * R];
  float acc[2 * R];
#pragma unroll
  for (int i = 0; i < 2 * R; i++) {
    const int o = min(out0 + (i % R), n_out - 1);
    wrow[i] = i >= R ? o + n_out : o;
    acc[i] = 0.f;
  }
#pragma unroll U
  for (int c = lane; c < chunks; c += 32) {
    const int e0 = c * EPC;
    float xf[EPC];
    const uint4* xp = reinterpret_cast<const uint4*>(x + e0);
#pragma unroll
    for (int v = 0; v < EPC / XV; v++) {
      const uint4 u = CACHE_HINTS ? __ldg(xp + v) : xp[v];
      const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int j = 0; j < XV; j++) xf[v * XV + j] = ppx_f(t[j]);
    }
    float xsum = 0.f;
#pragma unroll
    for (int j = 0; j < EPC; j++) xsum += xf[j];
    const int g = e0 / G;
#pragma unroll
    for (int i = 0; i < 2 * R; i++) {
      if (i < n_acc) {
        const uint4* qp = wv + (size_t)wrow[i] * chunks + c;
        const uint4 q = CACHE_HINTS ? __ldcs(qp) : *qp;
        const float s = ppx_f(scales[(size_t)wrow[i] * groups + g]);
        const float b = ppx_f(biases[(size_t)wrow[i] * groups + g]);
        const float dot = ppx_word_dot<BITS>(q.x, xf) + ppx_word_dot<BITS>(q.y, xf + PW)
            + ppx_word_dot<BITS>(q.z, xf + 2 * PW) + ppx_word_dot<BITS>(q.w, xf + 3 * PW);
        acc[i] = fmaf(s, dot, fmaf(b, xsum, acc[i]));
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 2 * R; i++) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffff, acc[i], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < R; i++) {
      const int o = out0 + i;
      if (o < n_out) {
        float v = acc[i];
        if (gated) {
          v = v / (1.f + __expf(-v)) * acc[i + R];
        } else if (residual) {
          v += ppx_f(r[o]);
        }
        out[o] = T(v);
      }
    }
  }
"""

_kernel: list[Any] = []


def _get_kernel() -> Any:
    if not _kernel:
        _kernel.append(
            mx.fast.cuda_kernel(
                name="ppx_matvec",
                input_names=["x", "w", "scales", "biases", "r"],
                output_names=["out"],
                source=_BODY,
                header=_HEADER,
            )
        )
    return _kernel[0]


def enabled() -> bool:
    """The fused kernel is on: CUDA, `PPX_MATVEC` is not `mlx`, and no `check` failed."""
    return (
        on_cuda()
        and os.environ.get(ENV_VAR, "").strip().lower() != "mlx"
        and disabled_reason is None
    )


disabled_reason: str | None = None  # why `check` turned the kernel off (None: it did not)
_checked: set[tuple[Any, int, int]] = set()
# Relative L2 error of the output row: both round the same float32 sums to bfloat16, so they
# differ by summation order and the odd rounding flip (see persistent_kernel.ROW_TOLERANCE).
CHECK_TOLERANCE = 1e-2


def check(dtype: mx.Dtype, bits: int, group_size: int) -> bool:
    """Run the kernel once on a small random problem of this kind (plain, residual and gated)
    and compare it with MLX's ops; outside compiled graphs (`LM.prepare` calls it).

    A failure (no runtime compiler, an MLX whose custom kernels work differently, a wrong
    result) turns the kernel off for the process, with the reason in `disabled_reason`: the
    model then runs on MLX's kernels instead of failing mid-conversation. The kernel compiled
    here is the one the model's graphs use (same source and template), so it costs no extra
    compilation. Returns whether the kernel is on.
    """
    global disabled_reason
    key = (dtype, bits, group_size)
    if not enabled() or key in _checked:
        return enabled()
    _checked.add(key)
    inputs, rows = 4 * max(group_size, 128 // bits * 32), 64
    keys = mx.random.split(mx.random.key(0), 3)
    w = mx.random.normal((rows, inputs), key=keys[0]) * inputs**-0.5
    q = Quantized(*mx.quantize(w.astype(dtype), group_size, bits), group_size, bits)
    x = mx.random.normal((1, 1, inputs), key=keys[1]).astype(dtype)
    r = mx.random.normal((1, 1, rows), key=keys[2]).astype(dtype)
    try:
        if not usable(x, q):
            raise ValueError(f"{bits}-bit, group {group_size} is not a shape it handles")
        want = _mlx(x, q)
        gate, value = mx.split(want, 2, axis=-1)
        pairs = [
            (_run(x, q, rows, mx.zeros((1,), dtype=dtype)), want),
            (_run(x, q, rows, r.reshape(-1)), r + want),
            (_run(x, q, rows // 2, mx.zeros((2,), dtype=dtype)), nn.silu(gate) * value),
        ]
        for got, ref in pairs:
            got, ref = got.astype(mx.float32).reshape(-1), ref.astype(mx.float32).reshape(-1)
            error = (mx.linalg.norm(got - ref) / mx.linalg.norm(ref)).item()
            if not error <= CHECK_TOLERANCE:  # also catches NaN
                raise ValueError(f"its result is off by {error:.3g} of the output's norm")
    except Exception as err:  # any failure: fall back to MLX's kernels
        disabled_reason = (
            f"the fused quantized mat-vec kernel failed its check ({err}); "
            "using MLX's kernels instead"
        )
    return enabled()


def usable(x: mx.array, q: Quantized) -> bool:
    """The kernel handles this product: one row of a supported dtype, 4 or 8 bits, whole
    16-byte chunks per row, chunks inside one quantization group."""
    return (
        enabled()
        and x.size == q.inputs
        and x.dtype in DTYPES
        and q.bits in BITS
        and q.weight.shape[1] % 4 == 0
        and q.group_size % (128 // q.bits) == 0
        and q.inputs % q.group_size == 0
        and q.rows > 4  # the kernel tells its modes apart by lengths 1 and 2 of `r`
    )


def _run(x: mx.array, q: Quantized, n_out: int, r: mx.array) -> mx.array:
    warps = -(-n_out // ROWS)
    template: list[tuple[str, Any]] = [
        ("T", x.dtype),
        ("BITS", q.bits),
        ("G", q.group_size),
        ("R", ROWS),
        ("U", UNROLL),
    ]
    (out,) = _get_kernel()(
        inputs=[x.reshape(-1), q.weight, q.scales, q.biases, r],
        template=template,
        grid=(warps * 32, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(n_out,)],
        output_dtypes=[x.dtype],
    )
    return out.reshape(*x.shape[:-1], n_out)


def dequantizes_rows() -> bool:
    """Products of several rows multiply dequantized weights (CUDA, unless `PPX_QUANTIZED_ROWS`
    is `qmm`)."""
    return on_cuda() and os.environ.get(ROWS_ENV_VAR, "").strip().lower() != "qmm"


def _mlx(x: mx.array, q: Quantized) -> mx.array:
    if x.size > q.inputs and dequantizes_rows():
        return x @ dequantized(q).T
    return mx.quantized_matmul(
        x, q.weight, q.scales, q.biases, transpose=True, group_size=q.group_size, bits=q.bits
    )


def dequantized(q: Quantized) -> mx.array:
    """The weight [N, K] in the scales' dtype (a temporary: made at each use, freed after).

    On CUDA a product of several rows (the prompt prefill) multiplies this with cuBLAS: MLX's
    quantized GEMM is a CUTLASS kernel compiled on first use, 40 s or more on a machine's first
    run (4-bit), while dequantizing is a precompiled kernel. `PPX_QUANTIZED_ROWS=qmm` goes back
    to MLX's quantized GEMM."""
    return mx.dequantize(q.weight, q.scales, q.biases, group_size=q.group_size, bits=q.bits)


def matvec(x: mx.array, q: Quantized, residual: mx.array | None = None) -> mx.array:
    """`x @ W.T` (+ `residual`), x [..., K] with one row when the kernel is used."""
    if not usable(x, q):
        y = _mlx(x, q)
        return y if residual is None else residual + y
    if residual is None:
        return _run(x, q, q.rows, mx.zeros((1,), dtype=x.dtype))
    return _run(x, q, q.rows, residual.astype(x.dtype).reshape(-1))


def gated_matvec(
    x: mx.array, q: Quantized, halves: tuple[Quantized, Quantized] | None = None
) -> mx.array:
    """`silu(gate) * value`, gate and value the first and second halves of `x @ W.T`.

    `halves`: the two row blocks of `q` as separate weights, for MLX's own kernels (whose
    mat-vec takes at most `backend.CUDA_MATVEC_ROWS` rows).
    """
    if usable(x, q):
        return _run(x, q, q.rows // 2, mx.zeros((2,), dtype=x.dtype))
    if halves is not None:
        gate, value = (_mlx(x, h) for h in halves)
    else:
        gate, value = mx.split(_mlx(x, q), 2, axis=-1)
    return nn.silu(gate) * value


def of_linear(linear: Any, arrays: tuple[mx.array, ...] | None = None) -> Quantized:
    """The quantized weight of an affine quantized linear (`nn.QuantizedLinear`, a quantized
    multi-linear): its own arrays, or `arrays` (weight, scales, biases: row blocks of them)."""
    weight, scales, biases = arrays or (linear.weight, linear.scales, linear.biases)
    return Quantized(weight, scales, biases, linear.group_size, linear.bits)


def affine(linear: object) -> bool:
    """`linear` is an MLX-affine quantized linear without a bias (what this module handles)."""
    return (
        isinstance(linear, nn.QuantizedLinear)
        and getattr(linear, "mode", "affine") == "affine"
        and "bias" not in linear
    )
