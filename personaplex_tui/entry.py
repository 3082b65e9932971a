"""The `ppx-tui` console script: a stop signal while the command line's modules load stops it too.

`personaplex_tui.cli` imports every command's modules (numpy, MLX, the model); that takes about
half a second, longer on a cold disk. The signal policy (`stop_signals`) is installed before
them: a Ctrl+C, SIGTERM or SIGHUP in that window is recorded only (a KeyboardInterrupt raised
inside a C extension's initialisation broke it: sentencepiece's import failed with an
ImportError traceback, MLX's nanobind aborted the process), the imports finish, and it ends
here as it does later: "ppx-tui: interrupted." or "stopped by SIGTERM.", exit 128 + the
signal's number, no traceback (SIGTERM and SIGHUP there killed the process, with no word).
Before `main` runs, a signal is Python's (a traceback, exit 1):
docs/threads-and-data-flow.md §A stop signal before any of ours runs. A chat whose conversation
did not stop in time ends the process here without waiting for its stuck threads
(`stuck_exit`), which only this console script does. Progress lines and error sentences on
stderr are best-effort: one that cannot be written stops no work.
"""

from __future__ import annotations

import os
import sys

# (the standard library only: the policy is installed before the slow imports, see `main`)
from personaplex_tui.extension_imports import hold_signals_in_extension_imports
from personaplex_tui.stop_signals import POLICY, Stopped, stopped_sentence

TYPE_CHECKING = False  # (`typing` is not imported: it is in the window before the policy)
if TYPE_CHECKING:
    from typing import Any, TextIO


def reopen_closed_std_streams() -> None:
    """A standard stream the caller closed (`>&-`, `2>&-`) becomes /dev/null. Otherwise
    Python's sys.stdout is None (every print a traceback), and the next file opened takes its
    number: an input opened as fd 2 was read while the libraries' messages there were
    filtered, and said to be corrupt."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


class BestEffortStream:
    """`sys.stderr` whose writes raise no OSError but a closed pipe's. Where stderr cannot be
    written (`2>/dev/full`, a terminal closed while stdout goes to a file), a progress line
    raised OSError mid-command: the reply, the soak, the transcript were lost, exit 1 with a
    traceback nobody could read. A failure points the stream's descriptor at /dev/null and the
    work goes on; a closed pipe (`2>&1 | head -1`) still ends the command, quietly, as on
    stdout (`cli.main`)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._discard()
            if isinstance(exc, BrokenPipeError):
                raise
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._discard()
            if isinstance(exc, BrokenPipeError):
                raise

    def _discard(self) -> None:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
            self._stream.flush()  # what was buffered goes to /dev/null, not to the next failure
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main() -> int:
    """Load the command line and run it."""
    reopen_closed_std_streams()
    if not isinstance(sys.stderr, BestEffortStream):
        sys.stderr = BestEffortStream(sys.stderr)  # type: ignore[assignment]
    POLICY.install()
    hold_signals_in_extension_imports()  # those that commands import later, lazily
    try:
        with POLICY.deferred():  # recorded only: see the module's docstring
            from personaplex_tui.cli import main as run
        POLICY.check()
        code = run()
    except Stopped as stop:  # it came while the modules loaded (or between two lines here)
        print(f"ppx-tui: {stopped_sentence(stop.signum)}", file=sys.stderr)
        code = stop.exit_code
    POLICY.ignore_rest()  # the work is done: a late signal must not change the exit code
    from personaplex_tui.stuck_exit import exit_if_asked

    exit_if_asked(code)  # a chat whose threads did not stop ends here, not waiting for them
    return code
