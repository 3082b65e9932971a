"""Building blocks of the PersonaPlex LM: f32 RMSNorm, gated SiLU FFN, per-step linears, attention."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from model.kv_cache import ColumnKVCache, RingKVCache


def embed_or_zero(table: mx.array, ids: mx.array) -> mx.array:
    """Rows of `table` for `ids`; the id -1 ("no token") gives a zero vector."""
    rows = table[mx.maximum(ids, 0)]
    return mx.where(mx.expand_dims(ids >= 0, -1), rows, mx.array(0, dtype=rows.dtype))


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (Moshi's `rms_norm_f32`); the weight is named `alpha`, [1, 1, D]."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.alpha = mx.ones((1, 1, dim), dtype=mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        y = mx.fast.rms_norm(x.astype(mx.float32), self.alpha.reshape(-1), self.eps)
        return y.astype(x.dtype)


class GatedFFN(nn.Module):
    """Gated SiLU feed-forward: `linear_out(silu(gate) * value)`, gate and value halves of `linear_in`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        gate, value = mx.split(self.linear_in(x), 2, axis=-1)
        return self.linear_out(nn.silu(gate) * value)


class MultiLinear(nn.Module):
    """`num_steps` bias-free linears stored as one weight: step k owns rows [k*out, (k+1)*out)."""

    def __init__(self, num_steps: int, input_dims: int, output_dims: int):
        super().__init__()
        self.num_steps = num_steps
        self.output_dims = output_dims
        scale = 1.0 / math.sqrt(input_dims)
        self.weight = mx.random.uniform(-scale, scale, (num_steps * output_dims, input_dims))

    def __call__(self, x: mx.array, step: int) -> mx.array:
        w = self.weight[step * self.output_dims : (step + 1) * self.output_dims]
        return x @ w.T

    def to_quantized(
        self, group_size: int = 64, bits: int = 4, mode: str = "affine", **_: object
    ) -> QuantizedMultiLinear:
        return QuantizedMultiLinear.from_multi_linear(self, group_size, bits)


class QuantizedMultiLinear(nn.Module):
    """A `MultiLinear` whose stacked weight is MLX-affine quantized (weight, scales, biases)."""

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

    def __call__(self, x: mx.array, step: int) -> mx.array:
        rows = slice(step * self.output_dims, (step + 1) * self.output_dims)
        return mx.quantized_matmul(
            x,
            self.weight[rows],
            self.scales[rows],
            self.biases[rows],
            transpose=True,
            group_size=self.group_size,
            bits=self.bits,
        )


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

    def __call__(self, x: mx.array, cache: RingKVCache) -> mx.array:
        """Any number of positions, continuing at `cache.offset` (prefill; host-side bookkeeping)."""
        q, k, v = _split_heads(self.in_proj(x), self.num_heads)
        q, k = self._rope(q, cache.offset), self._rope(k, cache.offset)
        keys, values, mask = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale, mask=mask)
        return self.out_proj(_merge_heads(out))

    def step(
        self, x: mx.array, cache: RingKVCache, pos: mx.array, mask: mx.array | None
    ) -> mx.array:
        """One position `pos` (a device scalar) with fixed shapes: compile-friendly, no host sync."""
        q, k, v = _split_heads(self.in_proj(x), self.num_heads)
        q, k = self._rope(q, pos), self._rope(k, pos)
        keys, values = cache.step_update(k, v, pos)
        out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale, mask=mask)
        return self.out_proj(_merge_heads(out))


class StepAttention(nn.Module):
    """Depformer self-attention: per-step packed in/out projections, no positional embedding."""

    def __init__(self, dim: int, num_heads: int, num_steps: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.in_proj = MultiLinear(num_steps, dim, 3 * dim)
        self.out_proj = MultiLinear(num_steps, dim, dim)

    def __call__(self, x: mx.array, step: int, cache: ColumnKVCache) -> mx.array:
        q, k, v = _split_heads(self.in_proj(x, step), self.num_heads)
        keys, values = cache.append(k, v)
        out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale)
        return self.out_proj(_merge_heads(out), step)
