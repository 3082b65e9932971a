"""Keep C libraries' stderr (PortAudio, ALSA, MLX, libmpg123) off the TUI's or a command's terminal.

File descriptor 2 is pointed at the log file for the TUI's lifetime, while Python's
`sys.stderr` / `sys.__stderr__` (where Textual draws) get a copy of the terminal; a command holds
fd 2 for the length of one library call (`fd2_filtered`) to drop that library's known messages.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

_to_log = False  # fd 2 goes to the TUI's log file (`stderr_to_file`)
# That file (the very one fd 2 writes, whatever the log rotation renames), open for reading (a
# one-item list: the TUI's own, told from a later one's); None outside the TUI or where it could
# not be opened. Read and closed under `_reader_lock`.
_log_reader: list[int] | None = None
_reader_lock = threading.Lock()
_READ_CHUNK = 1 << 20


@contextlib.contextmanager
def stderr_to_file(path: Path) -> Iterator[None]:
    """Send what is written to fd 2 into `path` (appended); Python's stderr stays on the terminal.

    Build the Textual app inside the block: it remembers `sys.__stderr__` when it is made.
    Does nothing when fd 2 or the file cannot be opened.
    """
    global _to_log, _log_reader
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
    fd = _reader_of(path, log_fd)
    reader = None if fd is None else [fd]
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.__stderr__ = sys.stderr = terminal
    with _reader_lock:
        _to_log, _log_reader = True, reader
    try:
        yield
    finally:
        with _reader_lock:
            _to_log, _log_reader = False, None
            if fd is not None:
                os.close(fd)
        with contextlib.suppress(OSError, ValueError):
            terminal.flush()
        sys.__stderr__, sys.stderr = original, previous
        os.dup2(saved, 2)
        os.close(saved)
        with contextlib.suppress(OSError):
            terminal.close()


def _reader_of(path: Path, log_fd: int) -> int | None:
    """`path` opened for reading, if it is the file `log_fd` writes (else None)."""
    try:
        reader = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if os.path.samestat(os.fstat(reader), os.fstat(log_fd)):
            return reader
    except OSError:
        pass
    os.close(reader)
    return None


@contextlib.contextmanager
def fd2_filtered(drop: Callable[[str], bool], dropped: list[str]) -> Iterator[None]:
    """Hold what is written to fd 2 during the block (a C library's messages) in a temporary
    file; when the block ends, exceptions included, fd 2 is restored, the lines `drop` accepts
    are appended to `dropped` and the others are written on to fd 2.

    Pointing fd 2 elsewhere is process-wide, so it is done only on the main thread, for one
    library call at a time, and not while `stderr_to_file` sends fd 2 to the TUI's log (there
    worker threads' C libraries write real errors, and the log is where such noise belongs):
    anywhere else the block runs with fd 2 untouched. Text another thread writes meanwhile is
    not lost but comes out when the block ends (a crash inside it would lose that text).

    Under the TUI's log (on any thread) fd 2 is left alone and everything stays in the log, but
    the lines `drop` accepts among those the log got during the block are still appended to
    `dropped` (read back from the file; a line of the same kind another thread wrote there
    meanwhile would be taken too).
    """
    if _to_log:
        with _log_read_back(drop, dropped):
            yield
        return
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        if sys.stderr is not None:
            sys.stderr.flush()  # Python's own text so far goes before, not into, the file
        held = tempfile.TemporaryFile()
    except (OSError, ValueError):
        yield
        return
    with held:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 to hold (a daemon started without one)
            yield
            return
        try:
            os.dup2(held.fileno(), 2)
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = []
            for line in held.read().decode("utf-8", "replace").splitlines(keepends=True):
                if drop(line):
                    dropped.append(line.rstrip("\r\n"))
                else:
                    kept.append(line)
            _write_fd2("".join(kept).encode("utf-8", "replace"))


@contextlib.contextmanager
def _log_read_back(drop: Callable[[str], bool], found: list[str]) -> Iterator[None]:
    """`fd2_filtered` under the TUI's log: the lines `drop` accepts among those appended to the
    log during the block go to `found`; nothing is taken out of the log."""
    with _reader_lock:
        reader = _log_reader
        try:
            start = os.fstat(reader[0]).st_size if reader is not None else -1
        except OSError:
            start = -1
    try:
        yield
    finally:
        if start >= 0:
            with _reader_lock:  # (the TUI may have ended meanwhile: its reader is closed then)
                if reader is not None and _log_reader is reader:
                    found.extend(s for s in _lines_from(reader[0], start) if drop(s))


def _lines_from(reader: int, start: int) -> Iterator[str]:
    """The lines of the file `reader` from byte `start` to its end (none when it is unreadable
    or shorter: a log emptied meanwhile)."""
    held = b""
    with contextlib.suppress(OSError):
        end = os.fstat(reader).st_size
        while start < end:
            chunk = os.pread(reader, min(_READ_CHUNK, end - start), start)
            if not chunk:
                break
            start += len(chunk)
            *lines, held = (held + chunk).split(b"\n")
            yield from (line.decode("utf-8", "replace").rstrip("\r") for line in lines)
    if held:
        yield held.decode("utf-8", "replace").rstrip("\r")


def _write_fd2(data: bytes) -> None:
    """`data` on fd 2, whole; nothing when fd 2 is gone (a closed terminal)."""
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(2, data) :]
