"""Mimi's causal transformer (LayerNorm, RoPE, GELU MLP, layer scale) with a streaming KV cache.

`step` is moshi's streaming forward over a ring of `context` slots: the new keys are written,
then every query attends to what the ring holds (so the first query of a step sees one key
fewer once the ring has wrapped). The cache here keeps the same `context` positions in time
order instead (a step shifts the oldest out and appends its own), which makes the set a query
may see exactly a bottom-right "causal" mask: once every slot holds a position (`full`), the
attention needs no mask array at all (on CUDA the fused single-query kernel takes it; a mask
array would send it down the unfused path). `forward` runs a whole sequence at once and
reproduces exactly what stepping one codec frame at a time would attend to.

A step is launch-bound (a few small kernels per layer), so it runs on weights rearranged by
`prepare()`: the projection gives each head a query row [q | 0] and a key-value row [k | v];
RoPE on the first half of every row turns q and k and leaves v alone; the cache stores the
key-value rows (one shift per layer); attention runs every row as a query against them, keys
and values alike being the whole rows ([q | 0] . [k | v] = q . k, and the second half of the
output is the attention over v), and the output projection reads only those halves of the
query rows. The layer scales are folded into the output projections, which add the residual
in the matmul.

On CUDA, `step` runs one frame on Mimi's transformer kernel instead (`model/cuda/
mimi_transformer.py`, docs/cuda-kernels.md §Mimi's transformer), whose caches are rings written
in place; `mlx_step` is the path above, and the kernel's load-time reference.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from .. import cuda
from ..activations import gelu
from ..config import MimiConfig

# (offset, [rows per layer]): offset is the int32 position of the next step; the key-value rows
# [batch, heads, context, 2 * head_dim] ([k | v]) hold positions offset-context..offset-1, oldest
# first (negative positions: never written).
TransformerState = tuple[mx.array, list[mx.array]]

_QUERY_BLOCK = 256  # queries per attention call in `forward`


class Linear(nn.Module):
    """Bias-free linear layer; `weight` is [in, out] (the matmul's right operand, contiguous)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.weight = mx.zeros((dim_in, dim_out))

    def __call__(self, x: mx.array) -> mx.array:
        return x @ self.weight


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = mx.ones((dim,))

    def __call__(self, x: mx.array) -> mx.array:
        return x * self.scale


class Attention(nn.Module):
    """Packed q/k/v projection, interleaved RoPE, no biases."""

    def __init__(self, dim: int, num_heads: int, max_period: float):
        super().__init__()
        self.in_proj = Linear(dim, 3 * dim)
        self.out_proj = Linear(dim, dim)
        self._heads = num_heads
        self._head_dim = dim // num_heads
        self._max_period = max_period
        self._scale = 1.0 / math.sqrt(self._head_dim)

    def _qkv(self, x: mx.array, offset: int | mx.array) -> tuple[mx.array, mx.array, mx.array]:
        b, t, _ = x.shape
        qkv = self.in_proj(x).reshape(b, t, 3, self._heads, self._head_dim)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # [3, b, heads, t, head_dim]
        q, k = mx.fast.rope(
            qkv[:2],
            self._head_dim,
            traditional=True,
            base=self._max_period,
            scale=1.0,
            offset=offset,
        )
        return q, k, qkv[2]

    def _out(self, y: mx.array) -> mx.array:
        b, _, t, _ = y.shape
        return self.out_proj(y.transpose(0, 2, 1, 3).reshape(b, t, -1))

    def forward(self, x: mx.array, context: int, steps_per_frame: int) -> mx.array:
        q, k, v = self._qkv(x, 0)
        n = x.shape[1]
        block = max(steps_per_frame, _QUERY_BLOCK - _QUERY_BLOCK % steps_per_frame)
        outs = []
        for start in range(0, n, block):
            stop = min(n, start + block)
            first = max(0, start + steps_per_frame - context)
            mask = frame_stepped_mask(start, stop, first, context, steps_per_frame)
            outs.append(
                mx.fast.scaled_dot_product_attention(
                    q[:, :, start:stop],
                    k[:, :, first:stop],
                    v[:, :, first:stop],
                    scale=self._scale,
                    mask=mask,
                )
            )
        y = outs[0] if len(outs) == 1 else mx.concatenate(outs, axis=2)
        return self._out(y)


def frame_stepped_mask(start: int, stop: int, first: int, context: int, per_frame: int) -> mx.array:
    """Which keys `first..stop-1` queries `start..stop-1` see when fed one frame per ring step."""
    q = mx.arange(start, stop)[:, None]
    k = mx.arange(first, stop)[None, :]
    oldest = q - q % per_frame + per_frame - context
    return (k <= q) & (k >= oldest)


class TransformerLayer(nn.Module):
    def __init__(self, cfg: MimiConfig):
        super().__init__()
        d = cfg.dimension
        self.self_attn = Attention(d, cfg.num_heads, cfg.max_period)
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.linear1 = Linear(d, cfg.dim_feedforward)
        self.linear2 = Linear(cfg.dim_feedforward, d)
        self.layer_scale_1 = LayerScale(d)
        self.layer_scale_2 = LayerScale(d)

    def _feed_forward(self, x: mx.array) -> mx.array:
        h = self.linear2(gelu(self.linear1(self.norm2(x))))
        return x + self.layer_scale_2(h)

    def prepare(self) -> None:
        """Derive the step's weights (see the module docstring); call after loading weights."""
        attn = self.self_attn
        heads, dh = attn._heads, attn._head_dim
        w_in = attn.in_proj.weight  # [d, 3d]: q, k, v, head by head
        d = w_in.shape[0]
        q, k, v = (w_in[:, i * d : (i + 1) * d].reshape(d, heads, dh) for i in range(3))
        rows = mx.concatenate([q, mx.zeros_like(q), k, v], axis=-1).reshape(d, 4 * d)
        w_out = attn.out_proj.weight * self.layer_scale_1.scale  # [d, d], rows head by head
        out = mx.zeros((heads, 2, 2 * dh, d))
        out[:, 0, dh:] = w_out.reshape(heads, dh, d)  # second half of each query row
        arrays = (rows, out.reshape(4 * d, d), self.linear2.weight * self.layer_scale_2.scale)
        mx.eval(arrays)
        self._step = (self._sources(), arrays)

    def _sources(self) -> tuple[mx.array, ...]:
        a = self.self_attn
        return (a.in_proj.weight, a.out_proj.weight, self.linear2.weight) + (
            self.layer_scale_1.scale,
            self.layer_scale_2.scale,
        )

    def _step_weights(self) -> tuple[mx.array, mx.array, mx.array]:
        derived = getattr(self, "_step", None)
        fresh = derived is not None and all(
            a is b for a, b in zip(derived[0], self._sources(), strict=True)
        )
        if not fresh:
            self.prepare()
        return self._step[1]

    def step(
        self, x: mx.array, rows: mx.array, offset: mx.array, mask: mx.array | str
    ) -> tuple[mx.array, mx.array]:
        """x [b, t, d] at `offset` through the cached key-value `rows` -> (x, rows)."""
        x, rows = self.attend_step(x, rows, offset, mask)
        return self.feed_forward_step(x), rows

    def attend_step(
        self, x: mx.array, rows: mx.array, offset: mx.array, mask: mx.array | str
    ) -> tuple[mx.array, mx.array]:
        """`step`'s first half: x + attention (layer scale folded in), and the new rows."""
        w_in, w_out, _ = self._step_weights()
        attn = self.self_attn
        b, t, d = x.shape
        heads, dh = attn._heads, attn._head_dim
        qkv = (self.norm1(x) @ w_in).reshape(b, t, 2 * heads, 2 * dh).transpose(0, 2, 1, 3)
        qkv = mx.fast.rope(
            qkv, dh, traditional=True, base=attn._max_period, scale=1.0, offset=offset
        )
        rows = mx.concatenate([rows[:, :, t:], qkv[:, 1::2]], axis=2)
        y = mx.fast.scaled_dot_product_attention(qkv, rows, rows, scale=attn._scale, mask=mask)
        return mx.addmm(x, y.transpose(0, 2, 1, 3).reshape(b, t, 4 * d), w_out), rows

    def feed_forward_step(self, x: mx.array) -> mx.array:
        """`step`'s second half: x + the feed-forward (layer scale folded in)."""
        return mx.addmm(x, gelu(self.linear1(self.norm2(x))), self._step_weights()[2])

    def forward(self, x: mx.array, context: int, steps_per_frame: int) -> mx.array:
        y = self.self_attn.forward(self.norm1(x), context, steps_per_frame)
        return self._feed_forward(x + self.layer_scale_1(y))


class MimiTransformer(nn.Module):
    """Input and output [batch, steps, dimension] (Mimi's projections are identities)."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        self.layers = [TransformerLayer(cfg) for _ in range(cfg.num_layers)]
        self._context = cfg.context
        self._per_frame = cfg.steps_per_frame
        self._heads = cfg.num_heads
        self._head_dim = cfg.dimension // cfg.num_heads
        self._slots = mx.array(list(range(cfg.context)), dtype=mx.int32)
        self._kernel = cuda.ModuleStack(cuda.MIMI_TRANSFORMER)  # its stack, once checked

    def init_state(self, batch: int = 1) -> TransformerState:
        shape = (batch, self._heads, self._context, 2 * self._head_dim)
        return mx.array(0, dtype=mx.int32), [mx.zeros(shape) for _ in self.layers]

    def prepare_kernel(self) -> bool:
        """On CUDA: stack the weights for the Mimi transformer kernel and check it against MLX's
        ops, once per set of weights (outside compiled graphs). Returns whether `step` runs on
        the kernel; elsewhere, or where the check failed, it runs MLX's ops."""
        return self._kernel.prepare(self)

    def on_kernel(self) -> bool:
        """Whether `step` runs on the CUDA kernel (prepared for the current weights)."""
        return self._kernel.current(self) is not None

    def step(
        self, x: mx.array, state: TransformerState, full: bool = False
    ) -> tuple[mx.array, TransformerState]:
        """Streams `x` (at most `context` steps) through the caches.

        On the CUDA kernel (`prepare_kernel`) for one frame's steps, the caches are rings (slot
        = position % context, written in place); otherwise `mlx_step`'s, in time order. A
        state is only ever stepped one way: the kernel is prepared when the weights load,
        before any step, and stays on unless the weights change (which resets the codec).
        """
        offset, caches = state
        stack = self._kernel.current(self) if x.shape[:2] == (1, self._per_frame) else None
        if stack is not None:
            out, _ = cuda.MIMI_TRANSFORMER.run(self, stack, x, offset, caches)
            return out, (offset + x.shape[1], caches)
        return self.mlx_step(x, state, full)

    def mlx_step(
        self, x: mx.array, state: TransformerState, full: bool = False
    ) -> tuple[mx.array, TransformerState]:
        """`step` by MLX's ops, on caches in time order.

        `full`: every slot holds a position once this step is written (`is_full`), so the
        bottom-right causal mask is the whole mask. False is always correct, only slower.
        """
        offset, caches = state
        t, c = x.shape[1], self._context
        if t > c:
            raise ValueError(f"a streaming step of {t} positions exceeds the context of {c}")
        mask = "causal" if full else self.step_mask(offset, t)
        new_caches = []
        for layer, cache in zip(self.layers, caches, strict=True):
            x, cache = layer.step(x, cache, offset, mask)
            new_caches.append(cache)
        return x, (offset + t, new_caches)

    def step_mask(self, offset: mx.array, t: int) -> mx.array:
        """The mask of a step of `t` positions at `offset` while the caches are filling."""
        new = offset + mx.array(list(range(t)), dtype=mx.int32)  # data: no kernel
        # Position held by each slot once this step is written (negative: never written).
        held = offset + (t - self._context) + self._slots
        return (held[None, :] >= 0) & (held[None, :] <= new[:, None])

    def is_full(self, positions: int, steps: int) -> bool:
        """Whether a step of `steps` positions after `positions` ones fills every slot."""
        return positions + steps >= self._context

    def __call__(self, x: mx.array) -> mx.array:
        """A whole sequence from position 0, equal to stepping it one codec frame at a time."""
        for layer in self.layers:
            x = layer.forward(x, self._context, self._per_frame)
        return x
