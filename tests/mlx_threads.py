"""Test helper: which threads call into MLX.

nanobind's functions (all of `mlx.core`) raise no `c_call` profiling events, so a profile hook
alone would see nothing of them. `MlxCallWatch` therefore records three kinds of calls:
- every `mlx.core` function (and those of `mx.random`, `mx.fast`, `mx.linalg`, `mx.fft`),
  replaced for the duration by a recording wrapper (calls through `mx.<name>`);
- through `sys.setprofile` / `threading.setprofile`, every Python function of a module that
  uses MLX: `mlx.*` (e.g. `mlx.nn`) and the modules of `model` and `personaplex_tui` whose
  globals hold `mx` = `mlx.core` (all of the model's computation);
- `c_call` events of C functions whose `__module__` starts with "mlx".
Not seen: methods and operators of `mx.array` objects, and `mx.array(...)` itself.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import Counter, defaultdict
from types import FrameType
from typing import Any

import mlx.core as mx

SUBMODULES = ("random", "fast", "linalg", "fft")
APP_PACKAGES = ("model", "personaplex_tui")  # their modules that use `mx` are watched


class MlxCallWatch:
    """`with MlxCallWatch() as watch:` ... then `watch.calls[thread_id]` counts what each thread
    called (by name)."""

    def __init__(self) -> None:
        self.calls: defaultdict[int, Counter[str]] = defaultdict(Counter)
        self._lock = threading.Lock()
        self._patched: list[tuple[Any, str, Any]] = []

    def threads(self) -> set[int]:
        return set(self.calls)

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.calls.values())

    def _seen(self, name: str) -> None:
        with self._lock:
            self.calls[threading.get_ident()][name] += 1

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            g = frame.f_globals
            module = g.get("__name__") or ""
            root = module.partition(".")[0]
            uses_mlx = root == "mlx" or (root in APP_PACKAGES and g.get("mx") is mx)
            if uses_mlx and frame.f_code.co_name != "<module>":
                self._seen(f"{module}.{frame.f_code.co_name}")
        elif event == "c_call":
            module = getattr(arg, "__module__", None) or ""
            if module.startswith("mlx"):
                self._seen(f"{module}.{getattr(arg, '__name__', '?')}")

    def _wrap(self, owner: Any, name: str, fn: Any) -> None:
        label = f"{owner.__name__}.{name}"

        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self._seen(label)
            return fn(*args, **kwargs)

        self._patched.append((owner, name, fn))
        setattr(owner, name, recorded)

    def __enter__(self) -> MlxCallWatch:
        for owner in (mx, *(getattr(mx, s) for s in SUBMODULES)):
            for name, value in list(vars(owner).items()):
                if callable(value) and not isinstance(value, type) and not name.startswith("_"):
                    self._wrap(owner, name, value)
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *_exc: object) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        for owner, name, fn in reversed(self._patched):
            setattr(owner, name, fn)
        self._patched.clear()

    def report(self, allowed: int | None) -> str:
        """What threads other than `allowed` called (for an assertion message)."""
        names = {t.ident: t.name for t in threading.enumerate()}
        lines = []
        for ident, counter in self.calls.items():
            if ident != allowed:
                lines.append(f"{names.get(ident, ident)}: {counter.most_common(8)}")
        return "\n".join(lines)
