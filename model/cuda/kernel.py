"""What every CUDA kernel of model/cuda/ is: one switch, a load-time check, a reason when off.

A kernel runs only through MLX's CUDA backend and while its environment variable is not `mlx`
(`PPX_MATVEC`, `PPX_TEMPORAL`, `PPX_DEPFORMER`). Its `check` compares it with MLX's ops at load;
a failure turns it off for the process, with the reason in `disabled_reason`, and MLX's ops run
instead (docs/cuda-kernels.md §Switched on, checked, turned off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model.backend import on_cuda
from model.cuda import precompiled
from model.cuda.env_switch import says


def switched_on(env_var: str) -> bool:
    """`env_var` does not say `mlx` (the one switch for turning a kernel off by hand)."""
    return not says(env_var, "mlx")


class Kernel:
    """One CUDA kernel: where it can run, whether it is on, and why not."""

    env_var: str  # set to `mlx` to turn the kernel off
    what: str  # the kernel in words, for the reason it is off ("the temporal kernel")
    path: str  # its module's file, for reports ("model/cuda/temporal.py")

    def __init__(self) -> None:
        self.disabled_reason: str | None = None  # why `check` turned it off (None: it did not)

    def available(self) -> bool:
        """It can run here: CUDA, and its environment variable is not `mlx`."""
        return on_cuda() and switched_on(self.env_var)

    def enabled(self) -> bool:
        """It may run: `available`, and no check failed."""
        return self.available() and self.disabled_reason is None

    def supports(self, lm: Any) -> str | None:
        """Why it cannot run `lm` (None: it can)."""
        return None

    def why_off(self, lm: Any = None) -> str | None:
        """Why MLX's ops run instead: `lm` not supported, a failed check, its switch (None: no
        reason known)."""
        why = (self.supports(lm) if lm is not None else None) or self.disabled_reason
        if why is None and not switched_on(self.env_var):
            why = f"{self.env_var}=mlx"
        return why

    def try_check(self, verify: Callable[[], object]) -> bool:
        """Run `verify` (which raises where the kernel differs from MLX's ops); any failure turns
        the kernel off for the process. Returns whether it is on. With stand-ins for kernels
        (`precompiled.use_stand_ins`: a process whose results are never used) nothing is
        checked."""
        if precompiled.stand_ins():
            return self.enabled()
        try:
            verify()
        except Exception as err:  # any failure: MLX's ops run instead
            self.disabled_reason = (
                f"{self.what} failed its check ({err}); using MLX's kernels instead"
            )
        return self.enabled()
