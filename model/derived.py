"""Arrays derived from a model's weights, kept while those weights are the model's own.

Where a fast path precomputes arrays from weights (a norm weight in the activation dtype,
per-step row blocks, stacked tables, a kernel's stacked projections), the result is a `Derived`
tagged with the arrays it was made from; it is fresh while every one of them is still the same
array (identity, not value), so replacing a weight makes it stale. This is the one place that
freshness is decided (`same_arrays`, `current`, `refreshed`; the step graphs use it too).
`stack_into` makes the stacks: one array, the modules keeping views of their rows
(docs/cuda-kernels.md §Stacked weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn


class Derived:
    """Arrays computed from `sources` (the module's weights at the time); stale once one is replaced."""

    __slots__ = ("sources", "value")

    def __init__(self, sources: tuple[mx.array, ...], value: Any):
        self.sources = sources
        self.value = value

    def fresh(self, sources: tuple[mx.array, ...]) -> bool:
        return same_arrays(sources, self.sources)


def same_arrays(a: Sequence[mx.array], b: Sequence[mx.array]) -> bool:
    """`a` and `b` are the same arrays (identity, not value), in the same order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def derive(sources: tuple[mx.array, ...], build: Callable[[], Any]) -> Derived:
    """`build()` evaluated now (views of evaluated arrays cost no memory), tagged with its sources."""
    value = build()
    mx.eval(value)
    return Derived(sources, value)


def current(derived: Derived | None, sources: tuple[mx.array, ...]) -> Any | None:
    """The value of `derived` while it is fresh for `sources` (None: missing or stale)."""
    return derived.value if derived is not None and derived.fresh(sources) else None


def is_fresh(derived: Derived | None, sources: tuple[mx.array, ...]) -> bool:
    """`derived` exists and was made from exactly `sources`."""
    return derived is not None and derived.fresh(sources)


def refreshed(
    derived: Derived | None, sources: tuple[mx.array, ...], build: Callable[[], Any]
) -> Derived:
    """`derived` while fresh for `sources`, else `derive(sources, build)`."""
    return derived if is_fresh(derived, sources) else derive(sources, build)


def stack_into(
    modules: list[nn.Module], part: str, extra: list[mx.array] | None = None
) -> mx.array:
    """Concatenate `part` of every module (and `extra` rows); the modules get views back."""
    arrays = [module[part] for module in modules]
    stacked = mx.concatenate([*arrays, *(extra or [])], axis=0)
    mx.eval(stacked)
    start = 0
    for module, array in zip(modules, arrays, strict=True):
        rows = array.shape[0]
        setattr(module, part, stacked[start : start + rows])
        start += rows
    return stacked
