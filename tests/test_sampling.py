"""Sampling on the device: greedy = argmax, top-k and temperature respected, seeded reproducibility."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from model.sampling import (
    GREEDY,
    SamplingParams,
    gumbel_noise,
    sample_token,
    sample_with_noise,
    split_key,
)


def test_greedy_is_argmax():
    logits = mx.random.normal((6, 300), key=mx.random.key(1))
    expected = np.argmax(np.array(logits), axis=-1)
    assert np.array(sample_token(logits, GREEDY, None)).tolist() == expected.tolist()
    greedy_with_top_k = SamplingParams(temperature=0.0, top_k=25)
    assert np.array(sample_token(logits, greedy_with_top_k, None)).tolist() == expected.tolist()
    assert sample_token(logits, GREEDY, None).dtype == mx.int32


def test_top_k_is_respected():
    logits = mx.random.normal((500,), key=mx.random.key(2))
    top5 = set(np.argsort(np.array(logits))[-5:].tolist())
    draws = [
        int(sample_token(logits, SamplingParams(2.0, 5), k))
        for k in split_key(mx.random.key(3), 200)
    ]
    assert set(draws) <= top5
    assert len(set(draws)) >= 3  # a real draw, not a constant
    top1 = [
        int(sample_token(logits, SamplingParams(5.0, 1), k))
        for k in split_key(mx.random.key(4), 20)
    ]
    assert set(top1) == {int(np.argmax(np.array(logits)))}


def _frequencies(probs: list[float], params: SamplingParams, n: int = 6000) -> np.ndarray:
    logits = mx.broadcast_to(mx.log(mx.array(probs)), (n, len(probs)))
    draws = np.array(sample_token(logits, params, mx.random.key(5)))
    return np.bincount(draws, minlength=len(probs)) / n


def test_distribution_is_softmax_over_the_top_k():
    probs = [0.5, 0.2, 0.15, 0.1, 0.05]
    freq = _frequencies(probs, SamplingParams(1.0, 3))
    expected = np.array([0.5, 0.2, 0.15, 0, 0]) / 0.85
    assert np.abs(freq - expected).max() < 0.03
    hot = _frequencies(probs, SamplingParams(2.0, 0))  # temperature 2: p ** (1/2), renormalised
    expected = np.sqrt(probs) / np.sqrt(probs).sum()
    assert np.abs(hot - expected).max() < 0.03


def test_same_key_same_tokens():
    logits = mx.random.normal((4, 2048), key=mx.random.key(6))
    params = SamplingParams(0.8, 250)
    first = np.array(sample_token(logits, params, mx.random.key(7)))
    again = np.array(sample_token(logits, params, mx.random.key(7)))
    other = np.array(sample_token(logits, params, mx.random.key(8)))
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()


def test_a_draw_does_not_depend_on_the_order_of_the_candidates():
    # Permuting the vocabulary (logits and noise together) permutes the token: the top-k cut is
    # a threshold and the noise belongs to a token id, not to a partition's output slot.
    rng = np.random.default_rng(8)
    params = SamplingParams(0.8, 25)
    for seed in range(20):
        logits = mx.array(rng.standard_normal(300).astype(np.float32))
        noise = gumbel_noise(mx.random.key(seed), (300,))
        perm = rng.permutation(300)
        token = int(sample_with_noise(logits, params, noise))
        permuted = int(sample_with_noise(logits[mx.array(perm)], params, noise[mx.array(perm)]))
        assert perm[permuted] == token
        top = set(np.argsort(np.array(logits))[-25:].tolist())
        assert token in top


def test_batched_noise_draws_like_one_key_per_row():
    # The depformer draws the noise of all its steps at once: each row is an independent draw.
    logits = mx.broadcast_to(mx.log(mx.array([0.5, 0.3, 0.2])), (3000, 3))
    params = SamplingParams(1.0, 0)
    draws = np.array(sample_with_noise(logits, params, gumbel_noise(mx.random.key(2), (3000, 3))))
    freq = np.bincount(draws, minlength=3) / 3000
    assert np.abs(freq - [0.5, 0.3, 0.2]).max() < 0.03


def test_bfloat16_logits_sample_within_the_top_k():
    logits = mx.random.normal((2048,), key=mx.random.key(11)).astype(mx.bfloat16)
    top = set(np.argsort(np.array(logits.astype(mx.float32)))[-250:].tolist())
    draws = {
        int(sample_token(logits, SamplingParams(0.8, 250), k))
        for k in split_key(mx.random.key(12), 50)
    }
    assert draws <= top and len(draws) > 10


def test_split_key_gives_the_split_rows_without_a_gather(tmp_path):
    """`split_key` is `mx.random.split`'s rows, taken by slicing: indexing a row is a gather,
    which MLX's CUDA backend JIT-compiles (seconds on a fresh GPU)."""
    key = mx.random.key(7)
    keys = split_key(key, 3)
    rows = mx.random.split(key, 3)
    dot = tmp_path / "graph.dot"
    mx.export_to_dot(str(dot), *keys)  # before any evaluation: the graph is still there
    assert "Split" in dot.read_text() and "Gather" not in dot.read_text()
    mx.export_to_dot(str(dot), rows[1])  # what the check would catch
    assert "Gather" in dot.read_text()
    assert [k.shape for k in keys] == [key.shape] * 3
    for i, k in enumerate(keys):
        assert mx.array_equal(k, rows[i])
