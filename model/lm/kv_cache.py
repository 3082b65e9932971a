"""The temporal transformer's KV cache: a preallocated ring over the last `context` positions.

A one-position step (compiled, fixed shapes) writes its keys in place with `put_along_axis` and
attends a static prefix of the ring, its `Window`: while the ring fills, the smallest of a few
bucket lengths that holds every written slot (slots past the step's position are hidden, see
`model.lm.ring_mask`); once the ring is full, all of it with no mask at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

# Window lengths double from this up to the context while the ring fills. Each is one more
# compiled step graph; 512 covers the first ~40 s of a conversation after a typical prompt.
SMALLEST_WINDOW = 512

KVState = list[mx.array]  # [keys, values] of one layer, each [B, H, context, Dh]


@dataclass(frozen=True)
class Window:
    """What one step attends: ring slots [0, length); `masked` when some of them are unwritten."""

    length: int
    masked: bool


def window_lengths(context: int, smallest: int = SMALLEST_WINDOW) -> tuple[int, ...]:
    """The bucket lengths of a ring of `context` slots: smallest, 2*smallest, ... < context, context."""
    lengths = []
    n = max(1, smallest)
    while n < context:
        lengths.append(n)
        n *= 2
    return (*lengths, context)


class RingKVCache:
    """Keys and values of the last `context` positions in preallocated [B, H, context, Dh] arrays.

    Position p lives in slot p % context; positions keep counting past the context. `state` is
    the list [keys, values]: writes replace its items (so MLX can update the buffers in place
    when nothing else holds them). A compiled step takes the states of all layers as an input
    and returns the new ones (see `step_write`); the caller puts them back into `state` before
    evaluating, dropping its references to the old buffers. `offset` (a host int) counts the
    positions written so far.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        context: int,
        dtype: mx.Dtype,
        batch: int = 1,
        smallest_window: int = SMALLEST_WINDOW,
    ):
        self.context = context
        self.windows = window_lengths(context, smallest_window)
        shape = (batch, num_heads, context, head_dim)
        self.state: KVState = [mx.zeros(shape, dtype=dtype), mx.zeros(shape, dtype=dtype)]
        self.offset = 0

    @property
    def keys(self) -> mx.array:
        return self.state[0]

    @property
    def values(self) -> mx.array:
        return self.state[1]

    @property
    def is_full(self) -> bool:
        """True once every slot holds a valid position (no mask needed any more)."""
        return self.offset >= self.context

    def reset(self) -> None:
        """Forget every position (the buffers are reused; stale slots are never attended)."""
        self.offset = 0

    def step_window(self) -> Window:
        """The window of the next one-position step (the one writing position `offset`)."""
        return self.window_at(self.offset)

    def window_at(self, position: int) -> Window:
        """The window of the one-position step that writes `position`."""
        written = position + 1
        if written >= self.context:
            return Window(self.context, False)
        return Window(next(n for n in self.windows if n >= written), True)

    def _slot_positions(self) -> np.ndarray:
        """Absolute position held by each valid slot, in slot order."""
        n, c = self.offset, self.context
        if n <= c:
            return np.arange(n)
        slots = np.arange(c)
        return (n - 1) - ((n - 1 - slots) % c)

    def _write(self, keys: mx.array, values: mx.array) -> None:
        """Store the last min(T, context) of T new positions starting at `offset`."""
        t, c = keys.shape[2], self.context
        m = min(t, c)
        keys, values = keys[:, :, t - m :], values[:, :, t - m :]
        start = (self.offset + t - m) % c
        first = min(m, c - start)
        k_buf, v_buf = self.state
        k_buf[:, :, start : start + first] = keys[:, :, :first]
        v_buf[:, :, start : start + first] = values[:, :, :first]
        if first < m:
            k_buf[:, :, : m - first] = keys[:, :, first:]
            v_buf[:, :, : m - first] = values[:, :, first:]

    def update_and_fetch(
        self, keys: mx.array, values: mx.array
    ) -> tuple[mx.array, mx.array, mx.array | str | None]:
        """Add T positions; return keys, values and the mask their queries need (any T, host-side).

        Queries at positions offset..offset+T-1 see the `context` positions ending at themselves;
        positions about to be overwritten in the ring are still visible to the earlier queries.
        """
        t, c, n = keys.shape[2], self.context, self.offset
        q_pos = np.arange(n, n + t)
        if n == 0:
            all_k, all_v, k_pos = keys, values, q_pos
        else:
            old = self._slot_positions()
            valid = len(old)
            all_k = mx.concatenate([self.keys[:, :, :valid], keys], axis=2)
            all_v = mx.concatenate([self.values[:, :, :valid], values], axis=2)
            k_pos = np.concatenate([old, q_pos])
        self._write(keys, values)
        self.offset = n + t
        delta = q_pos[:, None] - k_pos[None, :]
        allowed = (delta >= 0) & (delta < c)
        if allowed.all():
            return all_k, all_v, None
        if n == 0 and t <= c:
            return all_k, all_v, "causal"
        return all_k, all_v, mx.array(allowed)

    def step_update(
        self, keys: mx.array, values: mx.array, index: mx.array, window: Window
    ) -> tuple[mx.array, mx.array]:
        """`step_write` into this cache's `state`."""
        return step_write(self.state, keys, values, index, window)


def step_write(
    state: KVState, keys: mx.array, values: mx.array, index: mx.array, window: Window
) -> tuple[mx.array, mx.array]:
    """Write one position into a layer's ring `state` in place; fixed shapes, no host sync.

    keys/values: [B, H, 1, Dh]; index: int32 broadcast to their shape, holding the slot
    (position % context; built once per step for all layers), written by a scatter; or a bool
    mask [1, 1, context, 1] of the slot, written by a select over the whole ring: the same
    values, on MLX's prebuilt elementwise kernels, where a fresh CUDA machine JIT-compiles the
    scatter for seconds (the kernels' load-time checks use it, `Transformer.step`'s
    `slot_mask`; a step graph keeps the scatter, which touches one slot). Replaces the items of
    `state` and returns the window's keys and values (views of the ring). Host state is left
    alone so that this can be compiled: the caller advances the cache's `offset`.
    """
    if index.dtype == mx.bool_:
        state[0] = mx.where(index, keys, state[0])
        state[1] = mx.where(index, values, state[1])
    else:
        state[0] = mx.put_along_axis(state[0], index, keys, axis=2)
        state[1] = mx.put_along_axis(state[1], index, values, axis=2)
    n = window.length
    if n == state[0].shape[2]:
        return state[0], state[1]
    return state[0][:, :, :n], state[1][:, :, :n]
