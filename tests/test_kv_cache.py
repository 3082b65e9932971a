"""The ring KV cache past its context: attention sees exactly the last `context` positions."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.lm.kv_cache import RingKVCache, Window, window_lengths
from model.lm.layers import Attention
from model.lm.ring_mask import BOOL, ENV_VAR, FAR_KEYS, MODES

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


def fixed_shape_steps(attn: Attention, x: mx.array, smallest: int) -> list[np.ndarray]:
    """`Attention.step` one position at a time, through the windows the cache picks."""
    cache = RingKVCache(HEADS, DIM // HEADS, CONTEXT, mx.float32, smallest_window=smallest)
    outs = []
    for t in range(STEPS):
        pos = mx.array(t, dtype=mx.int32)
        window = cache.step_window()
        slot = mx.full((1, HEADS, 1, DIM // HEADS), t % CONTEXT, dtype=mx.int32)
        written = mx.arange(window.length) <= pos if window.masked else None
        out = attn.step(x[:, t : t + 1], cache.state, pos, slot, window, written)
        outs.append(np.array(out)[0, 0])
        cache.offset += 1
    return outs


@pytest.mark.parametrize("smallest", [1, 2, 4], ids=["windows-1-2-4", "windows-2-4", "window-4"])
@pytest.mark.parametrize("hide", MODES)
def test_fixed_shape_steps_match_window_reference(attention, inputs, hide, smallest, monkeypatch):
    monkeypatch.setenv(ENV_VAR, hide)
    ref = window_reference(attention, inputs)
    got = np.stack(fixed_shape_steps(attention, inputs, smallest))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_far_keys_equal_the_boolean_mask_exactly(attention, inputs, monkeypatch):
    # Stale slots hold garbage (as after a reset): neither way may let it through.
    cache_a = new_cache()
    run_chunks(
        attention, mx.random.normal((1, STEPS, DIM), key=mx.random.key(9)) * 50, [STEPS], cache_a
    )
    outs = {}
    for hide in MODES:
        monkeypatch.setenv(ENV_VAR, hide)
        cache = new_cache()
        cache.state = [a + 0 for a in cache_a.state]  # same stale contents for both
        outs[hide] = []
        for t in range(STEPS):
            window = cache.step_window()
            pos = mx.array(t, dtype=mx.int32)
            slot = mx.full((1, HEADS, 1, DIM // HEADS), t % CONTEXT, dtype=mx.int32)
            written = mx.arange(window.length) <= pos if window.masked else None
            outs[hide].append(
                np.array(
                    attention.step(inputs[:, t : t + 1], cache.state, pos, slot, window, written)
                )
            )
            cache.offset += 1
    np.testing.assert_array_equal(np.stack(outs[BOOL]), np.stack(outs[FAR_KEYS]))
    np.testing.assert_allclose(
        np.stack(outs[BOOL])[:, 0, 0], window_reference(attention, inputs), rtol=1e-4, atol=1e-5
    )


def test_windows_grow_in_buckets_then_cover_the_full_ring():
    cache = RingKVCache(HEADS, DIM // HEADS, 10, mx.float32, smallest_window=2)
    assert cache.windows == (2, 4, 8, 10)
    seen = []
    for _ in range(13):
        seen.append(cache.step_window())
        cache.offset += 1
    lengths = [w.length for w in seen]
    assert lengths == [2, 2, 4, 4, 8, 8, 8, 8, 10, 10, 10, 10, 10]
    assert [w.masked for w in seen] == [True] * 9 + [False] * 4  # position 9 fills the ring
    assert all(w.length >= min(i + 1, 10) for i, w in enumerate(seen))
    assert window_lengths(3000) == (512, 1024, 2048, 3000)
    assert window_lengths(3000, 256) == (256, 512, 1024, 2048, 3000)
    assert window_lengths(512) == (512,)
    assert [cache.window_at(p) for p in (0, 1, 2, 7, 8, 9, 50)] == [
        Window(2, True),
        Window(2, True),
        Window(4, True),
        Window(8, True),
        Window(10, True),
        Window(10, False),
        Window(10, False),
    ]


def test_step_writes_only_its_slot_in_place_across_the_wrap():
    cache = RingKVCache(1, 2, 3, mx.float32)
    full = Window(3, False)
    for t in range(7):  # positions 0..6 into slots 0,1,2,0,1,2,0
        k = mx.full((1, 1, 1, 2), float(t + 1))
        index = mx.full((1, 1, 1, 2), t % 3, dtype=mx.int32)
        keys, values = cache.step_update(k, -k, index, full)
        mx.eval(keys, values)
        cache.offset += 1
    assert np.array(cache.keys)[0, 0, :, 0].tolist() == [7.0, 5.0, 6.0]
    assert np.array(cache.values)[0, 0, :, 0].tolist() == [-7.0, -5.0, -6.0]


def test_reset_forgets_everything(attention, inputs):
    cache = new_cache()
    run_chunks(attention, inputs, [5, 8], cache)
    cache.reset()
    assert cache.offset == 0
    fresh = run_chunks(attention, inputs, [2, 11], new_cache())
    again = run_chunks(attention, inputs, [2, 11], cache)
    np.testing.assert_array_equal(again, fresh)


def test_a_slot_mask_writes_the_same_slot_as_the_scatter():
    """`step_write` with a bool mask of the slot (a select over the ring) leaves the ring
    exactly as the scatter does, across the wrap."""
    by_scatter = RingKVCache(1, 2, 3, mx.float32)
    by_select = RingKVCache(1, 2, 3, mx.float32)
    full = Window(3, False)
    for t in range(7):
        k = mx.full((1, 1, 1, 2), float(t + 1))
        index = mx.full((1, 1, 1, 2), t % 3, dtype=mx.int32)
        mask = mx.array(np.arange(3) == t % 3).reshape(1, 1, -1, 1)
        a = by_scatter.step_update(k, -k, index, full)
        b = by_select.step_update(k, -k, mask, full)
        mx.eval(a, b)
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(np.array(x), np.array(y))
    assert np.array(by_select.keys)[0, 0, :, 0].tolist() == [7.0, 5.0, 6.0]


def test_a_transformer_step_with_a_slot_mask_is_the_same_step_without_a_scatter():
    """`Transformer.step(..., slot_mask)` (the kernels' load-time reference) computes the
    same output and rings as the step graphs' scatter, and its graph has no scatter (which a
    fresh CUDA machine JIT-compiles for seconds)."""
    from benchmarks.kernel_count import breakdown
    from model.checkpoints.random_weights import random_lm
    from tests.lm_helpers import small_config

    lm = random_lm(small_config(d_model=64, num_heads=4, context=6), dtype=mx.float32, seed=0)
    cfg = lm.transformer.config
    outs = {}
    for how in ("scatter", "select"):
        caches = lm.make_cache()
        for p in range(9):  # past the wrap of a 6-slot ring
            x = mx.random.normal((1, 1, cfg.d_model), key=mx.random.key(p))
            states = [list(c.state) for c in caches]
            mask = mx.array(np.arange(cfg.context) == p % cfg.context).reshape(1, 1, -1, 1)
            pos = mx.array(p, dtype=mx.int32)
            y = lm.transformer.step(
                x, states, pos, caches[0].window_at(p), mask if how == "select" else None
            )
            kinds = breakdown([y, states])
            assert ("ScatterAxis" in kinds) == (how == "scatter"), kinds
            mx.eval(y, states)
            for c, s in zip(caches, states, strict=True):
                c.state = s
                c.offset += 1
            outs.setdefault(how, []).append((np.array(y), [np.array(a) for s in states for a in s]))
    for (ya, ra), (yb, rb) in zip(outs["scatter"], outs["select"], strict=True):
        assert np.array_equal(ya, yb)
        assert all(np.array_equal(a, b) for a, b in zip(ra, rb, strict=True))
