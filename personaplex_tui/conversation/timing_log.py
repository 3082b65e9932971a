"""`--timing-log FILE.jsonl`: every step's timings appended as one JSON line."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from model.errors import PersonaPlexError

PHASES = ("encode_ms", "temporal_ms", "depformer_ms", "decode_ms")


class TimingLogError(PersonaPlexError):
    """The timing log could not be opened or written."""


class TimingLog:
    """Appends one line per step: `{"time", "step", "mode", "phase", "total_ms", "encode_ms",
    "temporal_ms", "depformer_ms", "decode_ms"}`, the phases null on steps where they were not
    measured; each line goes to the OS as it is written. Thread-safe.
    A write that fails (a full disk) closes the log and is reported once through `on_error`."""

    def __init__(
        self, path: str | Path, on_error: Callable[[str], None] = lambda message: None
    ) -> None:
        self.path = Path(path).expanduser()
        self._on_error = on_error
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Written through (no buffer of ours): a killed process leaves every whole line.
            self._file: BinaryIO = open(self.path, "ab", buffering=0)  # noqa: SIM115
            self._size = os.fstat(self._file.fileno()).st_size
        except OSError as e:
            raise TimingLogError(
                f"Could not open the timing log {self.path}: {e.strerror or e}."
            ) from None
        self._lock = threading.Lock()
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
        line = (json.dumps(record) + "\n").encode()
        with self._lock:
            if self._file.closed:
                return
            try:
                view = memoryview(line)
                while view:
                    view = view[self._file.write(view) or 0 :]
            except OSError as e:  # a full disk must not stop the conversation: say it once
                failure = e
            else:
                self._size += len(line)
                self.lines += 1
                return
            try:  # a line cut short goes: the log keeps whole lines
                if self._file.seekable():
                    os.ftruncate(self._file.fileno(), self._size)
            except OSError:
                pass
            try:
                self._file.close()
            except OSError:
                pass
        self._on_error(
            f"Writing the timing log {self.path} failed ({failure.strerror or failure}); "
            f"it keeps the {self.lines} steps logged until then and stops here."
        )

    def close(self) -> None:
        """Close the file; safe to call twice."""
        with self._lock:
            if not self._file.closed:
                try:
                    self._file.close()
                except OSError:
                    pass
