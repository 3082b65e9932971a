"""C extensions initialise with stop signals held: a Ctrl+C then stops the command once they have.

A C extension's initialisation may call back into Python (NumPy's imports `datetime` and its own
modules, soxr's nanobind `atexit`); a stop signal's `Stopped` raised in such a call is an error
inside the extension's init. NumPy said its install was broken ("PyCapsule_Import could not
import module "datetime""), nanobind swallowed it (the import went on and the Ctrl+C stopped
nothing until the next check), and MLX's nanobind aborted the process. The console script's
modules load with signals deferred (`entry`), but commands import some extensions later, lazily
(soxr with the resampler, NumPy's random number generator, cffi). With this in place, a stop
signal during any extension's initialisation is recorded, and `Stopped` raised once it returns
(`POLICY.held`: on the main thread, outside `deferred` and `abrupt`; elsewhere nothing changes).
"""

from __future__ import annotations

import functools
import importlib.machinery
from collections.abc import Callable

from personaplex_tui.stop_signals import POLICY

TYPE_CHECKING = False  # (not `typing`: imported before the stop policy, see `entry`)
if TYPE_CHECKING:
    from typing import Any

_HELD = "_ppx_signals_held"


def held_during(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run inside `POLICY.held()`."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with POLICY.held():
            return fn(*args, **kwargs)

    setattr(run, _HELD, True)
    return run


def hold_signals_in_extension_imports() -> None:
    """From now on, for the whole process, every C extension module is created and run
    (`ExtensionFileLoader.create_module` / `exec_module`) with stop signals held."""
    loader = importlib.machinery.ExtensionFileLoader
    for name in ("create_module", "exec_module"):
        method = getattr(loader, name)
        if not getattr(method, _HELD, False):
            setattr(loader, name, held_during(method))
