"""`--timing-log FILE.jsonl`: every step's timings appended as one JSON line."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from model.errors import PersonaPlexError

FLUSH_EVERY_S = 1.0
PHASES = ("encode_ms", "temporal_ms", "depformer_ms", "decode_ms")


class TimingLogError(PersonaPlexError):
    """The timing log could not be opened or written."""


class TimingLog:
    """Appends one line per step: `{"time", "step", "mode", "phase", "total_ms", "encode_ms",
    "temporal_ms", "depformer_ms", "decode_ms"}`, the phases null on steps where they were not
    measured; flushed at least once a second. Thread-safe.
    A write that fails (a full disk) closes the log and is reported once through `on_error`."""

    def __init__(
        self, path: str | Path, on_error: Callable[[str], None] = lambda message: None
    ) -> None:
        self.path = Path(path).expanduser()
        self._on_error = on_error
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise TimingLogError(
                f"Could not open the timing log {self.path}: {e.strerror or e}."
            ) from None
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self.lines = 0

    def write(self, step: int, timings: Any, mode: str, phase: str) -> None:
        """Log one step (`timings` is a model.types.StepTimings); never raises."""
        phases = [float(getattr(timings, name)) for name in PHASES]
        measured = any(ms > 0 for ms in phases)  # the engine times the phases on some steps
        record = {
            "time": round(time.time(), 4),
            "step": step,
            "mode": mode,
            "phase": phase,
            "total_ms": round(float(timings.total_ms), 3),
            **{
                name: round(ms, 3) if measured else None
                for name, ms in zip(PHASES, phases, strict=True)
            },
        }
        line = json.dumps(record) + "\n"
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.write(line)
                self.lines += 1
                now = time.monotonic()
                if now - self._last_flush >= FLUSH_EVERY_S:
                    self._file.flush()
                    self._last_flush = now
            except OSError as e:  # a full disk must not stop the conversation: say it once
                failure = e
            else:
                return
            try:
                self._file.close()
            except OSError:
                pass
        self._on_error(
            f"Writing the timing log {self.path} failed ({failure.strerror or failure}); "
            "it stops here."
        )

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        with self._lock:
            if not self._file.closed:
                try:
                    self._file.close()
                except OSError:
                    pass
