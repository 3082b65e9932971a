"""Temperature + top-k sampling on the device, seeded by explicit `mx.random` keys (no host sync).

A draw is the Gumbel-max trick over the logits that survive the top-k cut:
`argmax(where(logits >= kth largest, logits / temperature, -inf) + gumbel)`, which is exactly
the reference's distribution (softmax of logits / temperature restricted to the k largest).
The cut is a threshold, so the result never depends on the order in which a partition returns
its candidates (it may differ across backends); the noise is indexed by token id, so a key
gives the same token on every backend for the same logits. Noise for several draws can be
drawn at once (`gumbel_noise`) and handed to `sample_with_noise`: one random kernel per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class SamplingParams:
    """Temperature and top-k of one stream; temperature 0 means argmax, top_k 0 means no cut."""

    temperature: float
    top_k: int

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


GREEDY = SamplingParams(0.0, 0)


def gumbel_noise(key: mx.array, shape: tuple[int, ...]) -> mx.array:
    """Standard Gumbel noise (float32) for draws over the last axis of `shape`."""
    return mx.random.gumbel(shape, key=key)


def sample_with_noise(logits: mx.array, params: SamplingParams, noise: mx.array | None) -> mx.array:
    """One id from each row of `logits` [..., V] given Gumbel `noise` [..., V]; int32 [...].

    `noise` may be None when `params` is greedy (argmax).
    """
    return draw(logits, params, noise).astype(mx.int32)


def draw(logits: mx.array, params: SamplingParams, noise: mx.array | None) -> mx.array:
    """`sample_with_noise` as the argmax gives it: uint32 (an index as good as any, one kernel
    fewer than converting it)."""
    if params.greedy or noise is None:
        if not params.greedy:
            raise ValueError("sampling with a temperature needs noise (or a key)")
        return mx.argmax(logits, axis=-1)
    vocab = logits.shape[-1]
    scores = logits.astype(mx.float32) * (1.0 / params.temperature)
    if 0 < params.top_k < vocab:
        # Scaling by a positive constant keeps the order: cut on the raw logits.
        cut = vocab - params.top_k
        kth = mx.partition(logits, cut, axis=-1)[..., cut : cut + 1]
        scores = mx.where(logits >= kth, scores, -mx.inf)
    return mx.argmax(scores + noise, axis=-1)


def sample_token(logits: mx.array, params: SamplingParams, key: mx.array | None) -> mx.array:
    """Sample one id from each row of `logits` [..., V]; returns int32 [...].

    Draws from softmax(logits / temperature) restricted to the `top_k` largest logits (the
    reference's distribution); argmax when the temperature is 0 (`key` may then be None).
    """
    if params.greedy:
        return sample_with_noise(logits, params, None)
    if key is None:
        raise ValueError("sampling with a temperature needs a key")
    return sample_with_noise(logits, params, gumbel_noise(key, logits.shape))


def split_key(key: mx.array, num: int = 2) -> list[mx.array]:
    """`num` independent keys derived from `key` (lazy, on the device): the rows of
    `mx.random.split(key, num)`, taken by slicing. Indexing a row (`keys[i]`, or unpacking the
    array) is a gather, which MLX's CUDA backend JIT-compiles at its first use (seconds on a
    fresh GPU, inside the load: docs/cuda-kernels.md §Kernels on a fresh machine)."""
    keys = mx.random.split(key, num)
    return [row.reshape(key.shape) for row in mx.split(keys, num, axis=0)]
