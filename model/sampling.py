"""Temperature + top-k sampling on the device, seeded by explicit `mx.random` keys (no host sync)."""

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


def sample_token(logits: mx.array, params: SamplingParams, key: mx.array | None) -> mx.array:
    """Sample one id from each row of `logits` [..., V]; returns int32 [...].

    Draws from softmax(logits / temperature) restricted to the `top_k` largest logits (the
    reference's distribution); argmax when the temperature is 0 (`key` may then be None).
    """
    logits = logits.astype(mx.float32)
    if params.greedy:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    vocab = logits.shape[-1]
    scaled = logits * (1.0 / params.temperature)
    if 0 < params.top_k < vocab:
        top = mx.argpartition(scaled, kth=vocab - params.top_k, axis=-1)[
            ..., vocab - params.top_k :
        ]
        choice = mx.random.categorical(mx.take_along_axis(scaled, top, axis=-1), key=key)
        picked = mx.take_along_axis(top, mx.expand_dims(choice, -1), axis=-1)
        return mx.squeeze(picked, -1).astype(mx.int32)
    return mx.random.categorical(scaled, key=key).astype(mx.int32)


def split_key(key: mx.array, num: int) -> list[mx.array]:
    """`num` independent keys derived from `key` (lazy, on the device)."""
    keys = mx.random.split(key, num)
    return [keys[i] for i in range(num)]
