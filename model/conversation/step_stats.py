"""Per-step figures for tuning a session (`Session(collect_stats=True)`): computed in the step's graph."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class StepStats:
    """Per-step figures for tuning (`Session(collect_stats=True)`)."""

    hidden_norm: float
    text_entropy: float
    top_tokens: list[int]
    top_probs: list[float]

    @classmethod
    def read(cls, stats: tuple[mx.array, ...]) -> StepStats:
        """From the (evaluated) arrays `step_stats` returned."""
        return cls(
            hidden_norm=float(stats[0].item()),
            text_entropy=float(stats[1].item()),
            top_tokens=[int(t) for t in np.array(stats[2])],
            top_probs=[float(p) for p in np.array(stats[3])],
        )


def step_stats(logits: mx.array, h: mx.array) -> tuple[mx.array, ...]:
    """Lazy (|h|, text entropy, top-5 text tokens, their probabilities) of one step."""
    flat = logits.reshape(-1).astype(mx.float32)
    logp = flat - mx.logsumexp(flat)
    p = mx.exp(logp)
    entropy = -(p * logp).sum()
    top = mx.argsort(-logp)[:5]
    return mx.sqrt((h.astype(mx.float32) ** 2).sum()), entropy, top, p[top]
