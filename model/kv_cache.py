"""KV caches: a preallocated ring over the last `context` positions, and a per-column depformer cache."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


class RingKVCache:
    """Keys and values of the last `context` positions in preallocated [B, H, context, Dh] arrays.

    Position p lives in slot p % context; positions keep counting past the context. `state` is the
    list [keys, values]: writes replace its items (so MLX can update the buffers in place when
    nothing else holds them) and it can be handed to `mx.compile(inputs=..., outputs=...)`.
    `offset` (a host int) counts the positions written so far.
    """

    def __init__(
        self, num_heads: int, head_dim: int, context: int, dtype: mx.Dtype, batch: int = 1
    ):
        self.context = context
        shape = (batch, num_heads, context, head_dim)
        self.state: list[mx.array] = [mx.zeros(shape, dtype=dtype), mx.zeros(shape, dtype=dtype)]
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
        self, keys: mx.array, values: mx.array, pos: mx.array
    ) -> tuple[mx.array, mx.array]:
        """Write one position `pos` (a device scalar) at slot pos % context; fixed shapes, no sync.

        Returns the whole ring; the caller masks slots above `pos` until the ring is full and
        advances `offset` itself (this method leaves host state alone so it can be compiled).
        """
        start = (pos % self.context).astype(mx.int32).reshape(1)
        k = mx.slice_update(self.state[0], keys, start, axes=(2,))
        v = mx.slice_update(self.state[1], values, start, axes=(2,))
        self.state[0] = k
        self.state[1] = v
        return k, v


class ColumnKVCache:
    """The depformer's cache: the keys and values of the steps run so far in one column."""

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None

    @property
    def offset(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def reset(self) -> None:
        self.keys = None
        self.values = None

    def append(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is None or self.values is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        return self.keys, self.values
