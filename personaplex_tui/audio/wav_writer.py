"""A WAV writer for long recordings whose header always describes the samples on disk."""

from __future__ import annotations

import errno
import os
import struct
import threading
from pathlib import Path

import numpy as np

from personaplex_tui.audio.disk_sync import BackgroundSync
from personaplex_tui.audio.errors import AudioFileError
from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.stream_parts import ClosesOnExit

_HEADER_BYTES = 44
# The RIFF size (36 + data) is 32 bits: at most this many bytes of samples (24.9 h of 24 kHz
# mono 16-bit audio)
MAX_DATA_BYTES = 0xFFFFFFFF - 36


class WavWriteError(AudioFileError, OSError):
    """Writing a WAV failed (a full disk): the file keeps `kept_s` seconds, its header says so.

    An OSError too, so that callers which stop a recording on a disk error keep working."""

    def __init__(
        self, message: str, path: Path, reason: str, kept_s: float, deleted: bool = False
    ) -> None:
        super().__init__(message)
        self.path, self.kept_s = path, kept_s
        self.strerror = reason  # what went wrong, as an OSError says it
        self.deleted = deleted  # the file was deleted while written: nothing of it is kept

    def __str__(self) -> str:
        return str(self.args[0])


def _header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    block = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def _reason(error: OSError, path: Path) -> str:
    """Why a file could not be created; names a file that stands where a folder must be."""
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        for parent in path.parents:
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a folder"
    return str(error.strerror or error)


class WavWriter(ClosesOnExit):
    """Appends float32 audio to a 16-bit PCM WAV file.

    Samples go straight to the OS (no buffer of our own) and after every write the sizes in the
    header are rewritten to count exactly the whole samples in the file, so a process that dies
    leaves a valid WAV of everything it wrote. A write that fails (a full disk, a file-size
    limit, the WAV format's own limit of 4 GiB) cuts the file to its last whole sample, makes the
    header say so and raises `WavWriteError` naming the file and what it kept; later writes raise
    it again. A file deleted while it is written (checked every `flush_every_s` of audio and on
    `flush`) fails the same way, as `deleted`. Thread-safe.

    `sync_every_s` syncs the file to the disk every that many seconds on a background thread of
    its own, and once more on `close`, so that a power cut loses at most about that much
    while the writing thread never waits on the disk. A sync that fails (EIO, ENOSPC) fails the
    writer as a failed write does: the next `write` raises the same `WavWriteError`.
    """

    max_data_bytes = MAX_DATA_BYTES  # (tests lower it)

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = SAMPLE_RATE,
        channels: int = 1,
        flush_every_s: float = 1.0,
        sync_every_s: float | None = None,
    ) -> None:
        self.path = Path(path).expanduser()  # as check_output_file checked it
        self.sample_rate = sample_rate
        self.channels = channels
        self._block = 2 * channels
        self._check_every = max(1, int(flush_every_s * sample_rate))
        self._lock = threading.Lock()
        self._data_bytes = 0  # bytes of samples in the file
        self._unchecked = 0  # samples written since the file was last seen still there
        self._failure: WavWriteError | None = None
        self._syncer: BackgroundSync | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise AudioFileError(
                f"Could not create the audio file {self.path}: {_reason(e, self.path)}."
            ) from None
        try:
            self._write_all(_header(sample_rate, channels, 0))
        except OSError as e:
            self._file.close()
            _remove_headless(self.path)
            raise AudioFileError(
                f"Could not create the audio file {self.path}: {e.strerror or e}."
            ) from None
        if sync_every_s is not None:
            try:
                self._syncer = BackgroundSync(
                    [self._file.fileno()],
                    sync_every_s,
                    lambda: self._data_bytes,  # (an int read: no lock needed)
                    self._sync_failed,
                    "ppx-wav-sync",
                )
            except OSError:  # no file descriptor left for its own copy: no background sync
                self._syncer = None

    @property
    def frames_written(self) -> int:
        return self._data_bytes // self._block

    @property
    def duration_s(self) -> float:
        return self.frames_written / self.sample_rate

    @property
    def closed(self) -> bool:
        return self._file.closed

    @property
    def failure(self) -> WavWriteError | None:
        """Why writing stopped, if it did."""
        return self._failure

    def write(self, pcm: np.ndarray) -> None:
        """Append samples: shape [n] for mono, [n, channels] otherwise; clipped to [-1, 1]."""
        data = np.asarray(pcm, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if data.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got {data.shape[1]}")
        ints = np.clip(np.rint(data * 32767.0), -32768, 32767).astype("<i2")
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._file.closed:
                return
            raw = ints.tobytes()
            room = self.max_data_bytes - self._data_bytes
            try:
                if len(raw) > room:
                    self._write_all(raw[: room - room % self._block], count=True)
                    self._rewrite_header()
                    hours = self.max_data_bytes / (self._block * self.sample_rate * 3600)
                    raise OSError(
                        errno.EFBIG, f"a WAV file holds at most 4 GiB, {hours:.1f} h of this audio"
                    )
                self._write_all(raw, count=True)
                self._rewrite_header()
                self._unchecked += len(ints)
                if self._unchecked >= self._check_every:
                    self._check_still_there()
            except OSError as e:
                raise self._fail(e) from None

    def flush(self) -> None:
        """Check that the file is still there (the header is always up to date; the disk syncs are
        `sync_every_s`'s)."""
        with self._lock:
            if not self._file.closed and self._failure is None:
                try:
                    self._check_still_there()
                except OSError as e:
                    raise self._fail(e) from None

    def close(self, wait: bool = True) -> None:
        """Close the file; safe to call twice, never raises (the header is already right).

        With `sync_every_s`, the background thread syncs the file one last time; `wait=False`
        does not wait for that (a caller that must not block on the disk). A failed last sync
        is kept in `failure`."""
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.close()
            except OSError:
                pass
        if self._syncer is not None:
            self._syncer.stop(wait)

    def _sync_failed(self, error: OSError) -> None:
        """The background sync failed: the writer fails as on a failed write (first failure
        only; its file may already be closed)."""
        with self._lock:
            if self._failure is None:
                self._fail(error)

    def _write_all(self, data: bytes, count: bool = False) -> None:
        view = memoryview(data)
        while view:
            n = self._file.write(view) or 0
            if count:
                self._data_bytes += n
            view = view[n:]

    def _rewrite_header(self) -> None:
        header = _header(self.sample_rate, self.channels, self._data_bytes)
        os.pwrite(self._file.fileno(), header, 0)

    def _check_still_there(self) -> None:
        if os.fstat(self._file.fileno()).st_nlink == 0:  # unlinked: its folder was deleted
            raise FileNotFoundError(errno.ENOENT, "the file was deleted")
        self._unchecked = 0

    def _fail(self, error: OSError) -> WavWriteError:
        """Cut a partly written sample off, make the header count what is left, remember why."""
        reason = str(error.strerror or error)
        if isinstance(error, FileNotFoundError):
            self._failure = WavWriteError(
                f"The audio file {self.path} was deleted while it was written; "
                f"nothing of its {self.duration_s:.2f} s is kept.",
                self.path,
                reason,
                0.0,
                deleted=True,
            )
            return self._failure
        whole = self._data_bytes - self._data_bytes % self._block
        kept = f"it keeps the first {self.duration_s:.2f} s, which its header describes"
        if not self._file.closed:  # (closed: a failed last sync; the header is already right)
            try:
                if whole != self._data_bytes:
                    os.ftruncate(self._file.fileno(), _HEADER_BYTES + whole)
                self._data_bytes = whole
                self._rewrite_header()
                kept = f"it keeps the first {self.duration_s:.2f} s, which its header describes"
            except OSError:  # the header itself cannot be written: say what is really there
                kept = (
                    f"its header could not be updated either ({self.duration_s:.2f} s were written)"
                )
        self._failure = WavWriteError(
            f"Writing the audio file {self.path} failed ({reason}); {kept}.",
            self.path,
            reason,
            self.duration_s,
        )
        return self._failure


def _remove_headless(path: Path) -> None:
    """Remove the file a failed header left (a full disk): empty or a partial header is not a
    WAV. Only a plain file is removed (never a device such as /dev/full, nor a link's target)."""
    try:
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 44:
            path.unlink()
    except OSError:
        pass
