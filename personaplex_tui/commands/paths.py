"""Checks, before any model loads, that a command's output files and folders can be written."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from personaplex_tui.commands.common import UsageError


def _blocking_file(p: Path) -> Path | None:
    """A file that stands where one of `p`'s folders must be, if any."""
    for parent in reversed(p.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _dangling_link(p: Path) -> Path | None:
    """The first of `p` and its folders that is a symbolic link to nothing, if any."""
    for q in (*reversed(p.parents), p):
        if q.is_symlink() and not q.exists():
            return q
    return None


def _make_parents(p: Path) -> list[Path]:
    """Create `p`'s missing folders; returns those it created, deepest first."""
    made = [parent for parent in p.parents if not parent.exists()]
    p.parent.mkdir(parents=True, exist_ok=True)
    return made


def _remove(made: list[Path]) -> None:
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            pass


def check_output_file(path: str | Path, what: str, flag: str, *, seekable: bool = False) -> Path:
    """Raise UsageError (one sentence) unless `path` can be written as `what` ("the timing
    log"...), without changing anything there: an existing file is opened for appending and
    given zero bytes (a full device refuses even that), a new one is created and removed.
    `flag` names the option in the sentence for an empty name.
    `seekable`: the writer rewrites a header, so a pipe will not do."""
    if str(path) == "":
        raise UsageError(f"{flag} is empty; give a file name for {what}.")
    if str(path) == "-":  # as an input it means the standard input, so it would surprise here
        raise UsageError(
            f"{flag} - would write {what} to a file named '-'; give a file name "
            "(the standard output is not supported here)."
        )
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"Cannot write {what} {p}: it is a folder; give a file name.")
    blocker = _blocking_file(p)
    if blocker is not None:
        raise UsageError(f"Cannot write {what} {p}: {blocker} is a file, not a folder.")
    if p.exists():
        mode = p.stat().st_mode
        if stat.S_ISFIFO(mode):
            if seekable:
                raise UsageError(
                    f"Cannot write {what} {p}: it is a pipe, and a WAV's header is rewritten "
                    "as the file grows; give a regular file."
                )
            return p  # opening a pipe for writing waits for its reader
        try:
            fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
            try:
                os.write(fd, b"")
            finally:
                os.close(fd)
        except OSError as e:
            raise UsageError(f"Cannot write {what} {p}: {e.strerror or e}.") from None
        return p
    made: list[Path] = []
    try:
        made = _make_parents(p)
        with open(p, "xb"):
            pass
        p.unlink()
    except OSError as e:
        raise UsageError(f"Cannot create {what} {p}: {e.strerror or e}.") from None
    finally:
        _remove(made)
    return p


def check_output_folder(path: str | Path, what: str, flag: str) -> Path:
    """Raise UsageError unless files can be created in the folder `path` (made if missing)."""
    if str(path) == "":
        raise UsageError(f"{flag} is empty; give a folder for {what}.")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"Cannot use {p} for {what}: it is a file; give a folder.")
    blocker = _blocking_file(p / "x")
    if blocker is not None:
        raise UsageError(f"Cannot use {p} for {what}: {blocker} is a file, not a folder.")
    dangling = _dangling_link(p)
    if dangling is not None:  # (mkdir said "File exists"; a drive not mounted, often)
        raise UsageError(
            f"Cannot use {p} for {what}: {'it' if dangling == p else dangling} is a link to "
            f"{os.readlink(dangling)}, which does not exist."
        )
    made: list[Path] = []
    try:
        made = _make_parents(p / "x")
        with tempfile.NamedTemporaryFile(dir=p, prefix=".ppx-tui-check-"):
            pass
    except OSError as e:
        raise UsageError(f"Cannot write {what} in {p}: {e.strerror or e}.") from None
    finally:
        _remove(made)
    return p


def check_text(value: str | None, flag: str) -> None:
    """Refuse text that is not valid UTF-8 (the shell passed bytes Python could not decode)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        try:
            byte = f"byte 0x{value[e.start].encode('utf-8', 'surrogateescape').hex()}"
        except UnicodeEncodeError:
            byte = "a broken character"
        raise UsageError(
            f"{flag} is not valid UTF-8 text ({byte} at character {e.start + 1})."
        ) from None


def _same_file(a: Path, b: Path) -> bool:
    """Whether two names are one file: the same inode where both exist, else the same path."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.abspath(a) == os.path.abspath(b)


def check_distinct(
    reads: dict[str, str | Path | None], writes: dict[str, str | Path | None]
) -> None:
    """Raise UsageError when an output (`writes`: flag -> path) is the same file as an input
    (`reads`) or as another output: writing it would destroy the recording, or each output
    would overwrite the other. Devices (/dev/null, /dev/stdout) may be named twice."""
    named = [(f, Path(p).expanduser(), False) for f, p in reads.items() if p not in (None, "")]
    named += [(f, Path(p).expanduser(), True) for f, p in writes.items() if p not in (None, "")]
    for i, (flag, path, written) in enumerate(named):
        for other, path2, written2 in named[:i]:
            if not (written or written2) or not _same_file(path, path2):
                continue
            if path.exists() and not path.is_file():
                continue  # a device or a pipe: writing it destroys nothing
            kind = "the input" if not written2 else "another output"
            raise UsageError(
                f"{flag} and {other} name the same file ({path}): writing {flag} would "
                f"overwrite {kind}; give {flag} another name."
            )
