"""The ring KV cache past its context: attention sees exactly the last `context` positions."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.kv_cache import RingKVCache
from model.layers import Attention

CONTEXT, STEPS, DIM, HEADS = 4, 13, 32, 2


@pytest.fixture(scope="module")
def attention():
    mx.random.seed(0)
    attn = Attention(DIM, HEADS, 10000.0)
    mx.eval(attn.parameters())
    return attn


@pytest.fixture(scope="module")
def inputs():
    return mx.random.normal((1, STEPS, DIM), key=mx.random.key(1))


def window_reference(attn: Attention, x: mx.array) -> np.ndarray:
    """Attention over the whole history, each query restricted by hand to its last CONTEXT keys."""
    qkv = attn.in_proj(x).reshape(1, STEPS, 3, HEADS, -1).transpose(2, 0, 3, 1, 4)
    q, k = attn._rope(qkv[0], 0), attn._rope(qkv[1], 0)
    q, k, v = (np.array(a[0], dtype=np.float64) for a in (q, k, qkv[2]))
    out = np.zeros_like(q)
    for p in range(STEPS):
        lo = max(0, p - CONTEXT + 1)
        scores = np.einsum("hd,hsd->hs", q[:, p], k[:, lo : p + 1]) * attn.scale
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out[:, p] = np.einsum("hs,hsd->hd", weights, v[:, lo : p + 1])
    merged = out.transpose(1, 0, 2).reshape(1, STEPS, DIM)
    return np.array(attn.out_proj(mx.array(merged.astype(np.float32))))[0]


def new_cache() -> RingKVCache:
    return RingKVCache(HEADS, DIM // HEADS, CONTEXT, mx.float32)


def run_chunks(attn: Attention, x: mx.array, sizes: list[int], cache: RingKVCache) -> np.ndarray:
    outs, start = [], 0
    for size in sizes:
        outs.append(np.array(attn(x[:, start : start + size], cache))[0])
        start += size
    assert start == STEPS and cache.offset == STEPS
    return np.concatenate(outs)


@pytest.mark.parametrize(
    "sizes",
    [[1] * STEPS, [STEPS], [3, 1, 5, 2, 2], [2, 6, 1, 4]],
    ids=["one-by-one", "all-at-once", "chunks", "chunk-longer-than-context"],
)
def test_ring_matches_window_reference(attention, inputs, sizes):
    ref = window_reference(attention, inputs)
    got = run_chunks(attention, inputs, sizes, new_cache())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_fixed_shape_steps_match_window_reference(attention, inputs):
    ref = window_reference(attention, inputs)
    cache, outs = new_cache(), []
    for t in range(STEPS):
        pos = mx.array(t, dtype=mx.int32)
        full = cache.offset + 1 >= CONTEXT
        mask = None if full else mx.arange(CONTEXT) <= pos
        outs.append(np.array(attention.step(inputs[:, t : t + 1], cache, pos, mask))[0, 0])
        cache.offset += 1
    np.testing.assert_allclose(np.stack(outs), ref, rtol=1e-4, atol=1e-5)


def test_reset_forgets_everything(attention, inputs):
    cache = new_cache()
    run_chunks(attention, inputs, [5, 8], cache)
    cache.reset()
    assert cache.offset == 0
    fresh = run_chunks(attention, inputs, [2, 11], new_cache())
    again = run_chunks(attention, inputs, [2, 11], cache)
    np.testing.assert_array_equal(again, fresh)
