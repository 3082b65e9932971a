"""An LM step's graph built but not launched, and how to tell whether it is still the one to launch.

`Session.step_codes` builds the next call's LM step while the GPU runs this one, on a user-codes
array that reads the page-locked buffer when it runs (docs/cuda-kernels.md §The next LM step
built while the GPU runs this one); the next call launches it only if nothing it read of the
session has changed since (`BuiltLMStep.built_on`), else builds its step anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx


@dataclass
class BuiltLMStep:
    """The lazy outputs of one LM step graph, and what it leaves the session."""

    user: mx.array  # the user's codes it runs on
    outputs: tuple  # (codes, text, agent, stats), lazy
    key: mx.array  # the session's next key
    states: list  # the rings' states after it
    back: Any = ()  # its write-back's token (page-locked I/O), where one was built with it
    # built ahead: (position, graph, the arrays it read), compared when it is taken; None once
    # taken (so the old rings are held by its graph only, and MLX writes them in place)
    basis: tuple | None = None

    def built_on(self, basis: tuple) -> bool:
        """Whether it was built on exactly `basis`: the same position, the same graph and the
        same arrays (by identity)."""
        mine = self.basis
        return (
            mine is not None
            and mine[0] == basis[0]
            and len(mine) == len(basis)
            and all(a is b for a, b in zip(mine[1:], basis[1:], strict=True))
        )
