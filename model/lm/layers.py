"""Building blocks of the PersonaPlex LM: RMSNorm, gated SiLU FFN, per-step linears, attention.

Arrays a hot path needs in another form than the checkpoint's (per-step row blocks, norm weights
in the activation dtype) are derived once by `prepare(dtype)`, outside any compiled graph, so
they enter compiled steps as constants; a module that was never prepared (or whose weights were
replaced since) derives them on the fly with the same numbers.
"""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import mlx.nn as nn

from model import backend, cuda, quantized
from model.activations import silu
from model.derived import current, derive, refreshed
from model.lm.kv_cache import KVState, RingKVCache, Window, step_write
from model.lm.ring_mask import hide_unwritten
from model.quantized import Quantized, mlx_matmul


def embed_or_zero(table: mx.array, ids: mx.array) -> mx.array:
    """Rows of `table` for `ids`; the id -1 ("no token") gives a zero vector."""
    rows = table[mx.maximum(ids, 0)]
    return mx.where(mx.expand_dims(ids >= 0, -1), rows, mx.array(0, dtype=rows.dtype))


def prepare_modules(root: nn.Module, dtype: mx.Dtype) -> set[tuple[int, int]]:
    """`prepare(dtype)` every module under `root` that has one (not `root` itself); returns the
    kinds (bits, group size) of quantized weight met, for the fused mat-vec's check."""
    kinds = set()
    for _, module in root.named_modules():
        if module is not root and hasattr(module, "prepare"):
            module.prepare(dtype)
        if hasattr(module, "bits") and hasattr(module, "group_size"):
            kinds.add((module.bits, module.group_size))
    return kinds


def stack_scalars(values: list[mx.array], dtype: mx.Dtype = mx.int32) -> mx.array:
    """`mx.stack` of scalar arrays, as one elementwise kernel once compiled (a concatenation
    copies each input with a kernel of its own)."""
    return place_in_slots([v.reshape(()) for v in values]).astype(dtype)


def place_in_slots(values: list[mx.array]) -> mx.array:
    """values[i] in slot i of a new last axis (each of the same shape), as a chain of `where`
    that a compiled graph fuses into few elementwise kernels (a concatenation copies each
    input with a kernel of its own)."""
    masks = _one_hot_rows(len(values))
    out = values[-1][..., None]
    for i in range(len(values) - 2, -1, -1):
        out = mx.where(masks[i], values[i][..., None], out)
    return out


@functools.lru_cache(maxsize=16)
def _one_hot_rows(n: int) -> tuple[mx.array, ...]:
    """Row i is True at slot i only: data, so a kernel input of a compiled graph, where
    `slots == i` would bake i into the fused kernel (one JIT module per distinct i)."""
    return tuple(mx.array([k == i for k in range(n)]) for i in range(n))


class RMSNorm(nn.Module):
    """RMSNorm (Moshi's `rms_norm_f32`); the weight is named `alpha`, [1, 1, D], kept in float32.

    `mx.fast.rms_norm` accumulates in float32 for any input; the weight is applied in the input's
    dtype, so a bfloat16 output may differ from a single rounding of the float32 result by one
    unit in the last place (measured: ~1 in 4 elements at most 1 ulp), for two kernels fewer
    per norm than casting the input to float32 and back.
    """

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.alpha = mx.ones((1, 1, dim), dtype=mx.float32)

    def prepare(self, dtype: mx.Dtype) -> None:
        weight = current(getattr(self, "_weight", None), (self.alpha,))
        if weight is None or weight.dtype != dtype:
            self._weight = derive((self.alpha,), lambda: self.alpha.reshape(-1).astype(dtype))

    def __call__(self, x: mx.array) -> mx.array:
        weight = current(getattr(self, "_weight", None), (self.alpha,))
        if weight is not None:
            if weight.dtype != x.dtype:
                weight = weight.astype(x.dtype)
        else:
            weight = self.alpha.reshape(-1).astype(x.dtype)
        return mx.fast.rms_norm(x, weight, self.eps)


def matvec(x: mx.array, q: Quantized, residual: mx.array | None = None) -> mx.array:
    """`x @ W.T` (+ `residual`): one row by the fused kernel on CUDA (`model.cuda`), MLX's ops
    otherwise."""
    fused = cuda.fused_matvec(x, q, residual)
    if fused is not None:
        return fused
    y = mlx_matmul(x, q)
    return y if residual is None else residual + y


def gated_matvec(
    x: mx.array, q: Quantized, halves: tuple[Quantized, Quantized] | None = None
) -> mx.array:
    """`silu(gate) * value`, gate and value the first and second halves of `x @ W.T`.

    `halves`: the two row blocks of `q` as separate weights, for MLX's own kernels (whose
    mat-vec takes at most `backend.CUDA_MATVEC_ROWS` rows).
    """
    fused = cuda.fused_gated_matvec(x, q)
    if fused is not None:
        return fused
    if halves is not None:
        gate, value = (mlx_matmul(x, h) for h in halves)
    else:
        gate, value = mx.split(mlx_matmul(x, q), 2, axis=-1)
    return silu(gate) * value


def project(linear: nn.Module, x: mx.array) -> mx.array:
    """`linear(x)`; a quantized single row goes through the fused mat-vec (`matvec`)."""
    if quantized.affine(linear):
        return matvec(x, quantized.of_linear(linear))
    return linear(x)


def linear_add(linear: nn.Module, x: mx.array, residual: mx.array | None) -> mx.array:
    """`residual + linear(x)` (bias-free `linear`); the add happens inside the matmul kernel for
    float weights and for the fused quantized mat-vec."""
    if residual is None:
        return project(linear, x)
    if isinstance(linear, nn.Linear):
        return mx.addmm(residual, x, linear.weight.T)
    if quantized.affine(linear):
        return matvec(x, quantized.of_linear(linear), residual)
    return residual + linear(x)


class GatedFFN(nn.Module):
    """Gated SiLU feed-forward: `linear_out(silu(gate) * value)`, gate and value halves of `linear_in`.

    A quantized `linear_in` wider than the backend's mat-vec kernel takes (`backend.matvec_rows`)
    runs as two matmuls, gate and value (row-block views, prepared by `prepare`).
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def _sources(self) -> tuple[mx.array, ...]:
        lin = self.linear_in
        return (lin.weight, lin.scales, lin.biases) if "scales" in lin else (lin.weight,)

    def prepare(self, dtype: mx.Dtype | None = None) -> None:
        lin, limit = self.linear_in, backend.matvec_rows()
        if not isinstance(lin, nn.QuantizedLinear) or not limit or lin.weight.shape[0] <= limit:
            self._halves = None
            return
        half = lin.weight.shape[0] // 2
        self._halves = refreshed(
            getattr(self, "_halves", None),
            self._sources(),
            lambda: [
                tuple(a[rows] for a in self._sources())
                for rows in (slice(0, half), slice(half, None))
            ],
        )

    def __call__(self, x: mx.array, residual: mx.array | None = None) -> mx.array:
        """The FFN of x (normed), plus `residual` when given (the add happens in the output
        projection's kernel for float weights and for the fused quantized mat-vec)."""
        lin = self.linear_in
        if quantized.affine(lin):
            halves = current(getattr(self, "_halves", None), self._sources())
            split = None
            if halves is not None:
                split = tuple(quantized.of_linear(lin, arrays) for arrays in halves)
            hidden = gated_matvec(x, quantized.of_linear(lin), split)
        else:
            gate, value = mx.split(lin(x), 2, axis=-1)
            hidden = silu(gate) * value
        return linear_add(self.linear_out, hidden, residual)


class _PerStepRows:
    """Shared by the float and quantized multi-linears: per-step row blocks of the stacked arrays."""

    num_steps: int
    output_dims: int
    _SOURCES: tuple[str, ...]  # the stacked arrays' attribute names, set by each subclass

    def _sources(self) -> tuple[mx.array, ...]:
        return tuple(getattr(self, name) for name in self._SOURCES)

    def _rows(self, step: int) -> tuple[mx.array, ...]:
        rows = slice(step * self.output_dims, (step + 1) * self.output_dims)
        return tuple(a[rows] for a in self._sources())

    def prepare(self, dtype: mx.Dtype | None = None) -> None:
        """Pre-split the stacked arrays into per-step row blocks (views: no copy, no memory)."""
        self._split = refreshed(
            getattr(self, "_split", None),
            self._sources(),
            lambda: [self._rows(k) for k in range(self.num_steps)],
        )

    def step_weights(self, step: int) -> tuple[mx.array, ...]:
        split = current(getattr(self, "_split", None), self._sources())
        return split[step] if split is not None else self._rows(step)


class MultiLinear(_PerStepRows, nn.Module):
    """`num_steps` bias-free linears stored as one weight: step k owns rows [k*out, (k+1)*out)."""

    _SOURCES = ("weight",)

    def __init__(self, num_steps: int, input_dims: int, output_dims: int):
        super().__init__()
        self.num_steps = num_steps
        self.output_dims = output_dims
        scale = 1.0 / math.sqrt(input_dims)
        self.weight = mx.random.uniform(-scale, scale, (num_steps * output_dims, input_dims))

    def __call__(self, x: mx.array, step: int, residual: mx.array | None = None) -> mx.array:
        (w,) = self.step_weights(step)
        return x @ w.T if residual is None else mx.addmm(residual, x, w.T)

    def to_quantized(
        self, group_size: int = 64, bits: int = 4, mode: str = "affine", **_: object
    ) -> QuantizedMultiLinear:
        return QuantizedMultiLinear.from_multi_linear(self, group_size, bits)


class QuantizedMultiLinear(_PerStepRows, nn.Module):
    """A `MultiLinear` whose stacked weight is MLX-affine quantized (weight, scales, biases)."""

    _SOURCES = ("weight", "scales", "biases")

    def __init__(
        self, num_steps: int, input_dims: int, output_dims: int, group_size: int, bits: int
    ):
        super().__init__()
        self.num_steps = num_steps
        self.output_dims = output_dims
        self.group_size = group_size
        self.bits = bits
        rows = num_steps * output_dims
        self.weight = mx.zeros((rows, input_dims * bits // 32), dtype=mx.uint32)
        self.scales = mx.zeros((rows, input_dims // group_size), dtype=mx.float16)
        self.biases = mx.zeros((rows, input_dims // group_size), dtype=mx.float16)
        self.freeze()

    @classmethod
    def from_multi_linear(
        cls, layer: MultiLinear, group_size: int, bits: int
    ) -> QuantizedMultiLinear:
        rows, input_dims = layer.weight.shape
        out = cls(layer.num_steps, input_dims, layer.output_dims, group_size, bits)
        out.weight, out.scales, out.biases = mx.quantize(layer.weight, group_size, bits)
        return out

    def __call__(self, x: mx.array, step: int, residual: mx.array | None = None) -> mx.array:
        return matvec(x, quantized.of_linear(self, self.step_weights(step)), residual)


def _split_heads(qkv: mx.array, num_heads: int) -> tuple[mx.array, mx.array, mx.array]:
    """[B, T, 3*D] packed q, k, v -> three [B, H, T, Dh]."""
    b, t, _ = qkv.shape
    parts = qkv.reshape(b, t, 3, num_heads, -1).transpose(2, 0, 3, 1, 4)
    return parts[0], parts[1], parts[2]


def _merge_heads(x: mx.array) -> mx.array:
    b, _, t, _ = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, -1)


class Attention(nn.Module):
    """Causal self-attention of the temporal transformer: packed in_proj, interleaved RoPE, ring cache."""

    def __init__(self, dim: int, num_heads: int, max_period: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.max_period = max_period
        self.in_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def _rope(self, x: mx.array, offset: int | mx.array) -> mx.array:
        return mx.fast.rope(
            x, self.head_dim, traditional=True, base=self.max_period, scale=1.0, offset=offset
        )

    def __call__(
        self, x: mx.array, cache: RingKVCache, residual: mx.array | None = None
    ) -> mx.array:
        """Any number of positions, continuing at `cache.offset` (prefill; host-side bookkeeping).
        Adds `residual` to the output when given."""
        q, k, v = _split_heads(project(self.in_proj, x), self.num_heads)
        q, k = self._rope(q, cache.offset), self._rope(k, cache.offset)
        keys, values, mask = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale, mask=mask)
        return linear_add(self.out_proj, _merge_heads(out), residual)

    def step(
        self,
        x: mx.array,
        state: KVState,
        pos: mx.array,
        index: mx.array,
        window: Window,
        written: mx.array | None,
        residual: mx.array | None = None,
    ) -> mx.array:
        """One position `pos` (device scalar) into the ring slot `index` holds (broadcast to
        [B, H, 1, Dh], see `step_write`) of the ring `state`; fixed shapes, no host sync.

        x: [B, 1, D]. Heads are split by reshapes only (q, k, v are row blocks of the packed
        projection when T = 1) and q, k get RoPE in one call. `written` (bool [window]) marks
        the window's slots that hold a position (None: all), hidden as `model.lm.ring_mask` says. Adds
        `residual` to the output when given.
        """
        b, h, dh = x.shape[0], self.num_heads, self.head_dim
        qkv = project(self.in_proj, x).reshape(b, 3 * h, 1, dh)
        qk = self._rope(qkv[:, : 2 * h], pos)
        q, k, v = qk[:, :h], qk[:, h:], qkv[:, 2 * h :]
        keys, values = step_write(state, k, v, index, window)
        keys, mask = hide_unwritten(q, keys, written)
        out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale, mask=mask)
        return linear_add(self.out_proj, out.reshape(b, 1, h * dh), residual)


class StepAttention(nn.Module):
    """Depformer self-attention: per-step packed in/out projections, no positional embedding.

    One column's keys and values live in one [B, 2, H, num_steps, Dh] array (keys at index 0,
    values at 1): step 0 fills it with its own (one kernel), step k writes slot k in place (one
    kernel: keys and values are adjacent row blocks of the packed projection) and attends slots
    0..k.
    """

    def __init__(self, dim: int, num_heads: int, num_steps: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.in_proj = MultiLinear(num_steps, dim, 3 * dim)
        self.out_proj = MultiLinear(num_steps, dim, dim)

    def __call__(
        self, x: mx.array, step: int, kv: mx.array | None, residual: mx.array | None = None
    ) -> tuple[mx.array, mx.array]:
        """x [B, 1, D] at `step`; kv: the column's keys/values of the steps before (None at 0).
        Adds `residual` to the output when given."""
        b, h = x.shape[0], self.num_heads
        qkv = self.in_proj(x, step).reshape(b, 3, h, 1, -1)
        new = qkv[:, 1:]
        if kv is None:
            shape = (b, 2, h, self.in_proj.num_steps, qkv.shape[-1])
            kv = mx.contiguous(mx.broadcast_to(new, shape))  # slot 0; the others unused yet
            out = qkv[:, 2]  # attention over a single key is its value
        else:
            kv[:, :, :, step : step + 1] = new
            out = mx.fast.scaled_dot_product_attention(
                qkv[:, 0], kv[:, 0, :, : step + 1], kv[:, 1, :, : step + 1], scale=self.scale
            )
        return self.out_proj(out.reshape(b, 1, -1), step, residual), kv
