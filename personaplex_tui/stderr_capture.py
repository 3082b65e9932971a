"""Keep C libraries' stderr (PortAudio, ALSA, MLX) off the screen the TUI draws on.

File descriptor 2 is pointed at the log file for the TUI's lifetime, while Python's
`sys.stderr` / `sys.__stderr__` (where Textual draws) get a copy of the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def stderr_to_file(path: Path) -> Iterator[None]:
    """Send what is written to fd 2 into `path` (appended); Python's stderr stays on the terminal.

    Build the Textual app inside the block: it remembers `sys.__stderr__` when it is made.
    Does nothing when fd 2 or the file cannot be opened.
    """
    original = sys.__stderr__
    try:
        original_fd = original.fileno() if original is not None else -1
        if original_fd != 2:
            raise OSError("stderr is not file descriptor 2")
        sys.stderr.flush()
        saved = os.dup(2)
        log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except (OSError, ValueError, AttributeError):
        yield
        return
    encoding = getattr(original, "encoding", None) or "utf-8"
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=encoding, errors="replace")
    previous = sys.stderr
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.__stderr__ = sys.stderr = terminal
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            terminal.flush()
        sys.__stderr__, sys.stderr = original, previous
        os.dup2(saved, 2)
        os.close(saved)
        with contextlib.suppress(OSError):
            terminal.close()
