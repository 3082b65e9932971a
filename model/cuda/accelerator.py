"""The CUDA kernels' state for one language model: their stacked weights and which were checked."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from model.cuda.depformer import KERNEL as DEPFORMER
from model.cuda.depformer import TextDraw
from model.cuda.matvec import KERNEL as MATVEC
from model.cuda.persistent import PersistentKernel, StackedWeights
from model.cuda.temporal import KERNEL as TEMPORAL
from model.derived import Derived, current
from model.sampling import SamplingParams

PERSISTENT: tuple[PersistentKernel, ...] = (TEMPORAL, DEPFORMER)


class Accelerator:
    """What the CUDA kernels keep for one LM (the LM owns it; nothing is set on the LM).

    The persistent kernels' stacks are fresh while the arrays they were stacked from are the
    model's (`model.derived`); each stack is checked once (`check`). On Metal and the CPU every
    kernel is off, so nothing is stacked and `temporal_step` / `depformer_column` return None.
    """

    def __init__(self, kernels: tuple[PersistentKernel, ...] = PERSISTENT) -> None:
        self._kernels = kernels  # the persistent kernels this model may run (the STT: temporal)
        self._stacks: dict[PersistentKernel, Derived] = {}
        self._checked: dict[PersistentKernel, StackedWeights] = {}

    def stack_weights(self, lm: Any) -> None:
        """Stack the weights of each kernel that is on and supports `lm`, unless still fresh
        (before the modules derive their per-step views: stacking replaces their weights)."""
        for kernel in self._kernels:
            if kernel.enabled() and kernel.supports(lm) is None and self.stack(kernel, lm) is None:
                self.adopt(kernel, lm, kernel.stack(lm))

    def adopt(self, kernel: PersistentKernel, lm: Any, weights: StackedWeights) -> None:
        """Keep `weights` (made by `kernel.stack(lm)`) as `kernel`'s stack for `lm`."""
        self._stacks[kernel] = Derived(kernel.stack_sources(lm), weights)

    def stack(self, kernel: PersistentKernel, lm: Any) -> Any | None:
        """`kernel`'s stacked weights for `lm`, while fresh (None: none, or stale)."""
        return current(self._stacks.get(kernel), kernel.stack_sources(lm))

    def check_matvec(self, dtype: mx.Dtype, kinds: set[tuple[int, int]]) -> None:
        """Check the fused mat-vec on each kind (bits, group size) of quantized weight."""
        for bits, group_size in sorted(kinds):
            MATVEC.check(dtype, bits, group_size)  # on CUDA: our kernel, or MLX's if it fails

    def check(self, lm: Any) -> None:
        """`verify` each persistent kernel on its stack for `lm`, once per stack, outside
        compiled graphs; a failure turns that kernel off for the process."""
        for kernel in self._kernels:
            weights = self.stack(kernel, lm)
            if not kernel.enabled() or weights is None:
                continue
            if self._checked.get(kernel) is weights:
                continue
            self._checked[kernel] = weights
            kernel.try_check(lambda k=kernel, w=weights: k.verify(lm, w))

    def temporal_step(
        self, lm: Any, x: mx.array, pos: mx.array, states: list[list[mx.array]]
    ) -> mx.array | None:
        """The temporal transformer's output for one row x by the kernel, which writes the ring
        `states` in place (None: the kernel does not run it)."""
        one_row = x.shape[0] == 1 and x.shape[1] == 1  # what the kernel takes
        wanted = one_row and TEMPORAL in self._kernels and TEMPORAL.enabled()
        stack = self.stack(TEMPORAL, lm) if wanted else None
        if stack is None:
            return None
        out, _ = TEMPORAL.run(lm, stack, x, pos, states)
        return out

    def depformer_column(
        self,
        lm: Any,
        h: mx.array,
        dep_in: Any,
        text_token: mx.array,
        n_steps: int,
        params: SamplingParams,
        noise: mx.array | None,
        forced: mx.array | None,
        provided: mx.array | None,
    ) -> mx.array | None:
        """One column's tokens by the kernel (None: the kernel does not run it). `dep_in()`
        gives the column's `depformer_in` projections when it does."""
        stack = self._depformer_stack(lm, h)
        if stack is None:
            return None
        tokens, _, _ = DEPFORMER.run(
            lm, stack, dep_in(), text_token, n_steps, params, noise, forced, provided
        )
        return tokens

    def depformer_column_drawing_text(
        self,
        lm: Any,
        h: mx.array,
        dep_in: Any,
        text: TextDraw,
        n_steps: int,
        params: SamplingParams,
        noise: mx.array | None,
    ) -> tuple[mx.array, mx.array] | None:
        """The text token drawn from `text` and the column's tokens after it, both by the
        kernel (None: the kernel does not run it)."""
        stack = self._depformer_stack(lm, h)
        if stack is None or lm.config.text_card % 8:  # the kernel reads 16 bytes at a time
            return None
        text_token, tokens, _ = DEPFORMER.run_drawing_text(
            lm, stack, dep_in(), text, n_steps, params, noise
        )
        return text_token, tokens

    def _depformer_stack(self, lm: Any, h: mx.array) -> Any | None:
        """The depformer kernel's stack where it runs the column of `h` (None: it does not)."""
        one_row = h.shape[0] == 1  # what the kernel takes
        return self.stack(DEPFORMER, lm) if one_row and DEPFORMER.enabled() else None
