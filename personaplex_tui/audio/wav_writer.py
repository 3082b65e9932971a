"""A WAV writer for long recordings whose header stays valid as it grows (crash-safe to ~1 s)."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy as np

from personaplex_tui.audio.errors import AudioFileError
from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.stream_parts import ClosesOnExit

_HEADER_BYTES = 44


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

    Every `flush_every_s` seconds of audio (and on `flush`/`close`) the sizes in the header are
    rewritten and the file is flushed to the OS, so if the process dies the file is a valid
    WAV holding everything up to the last flush. Thread-safe; `fsync=True` also survives a
    power cut at the cost of a disk sync per flush.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = SAMPLE_RATE,
        channels: int = 1,
        flush_every_s: float = 1.0,
        fsync: bool = False,
    ) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self._flush_every = max(1, int(flush_every_s * sample_rate))
        self._fsync = fsync
        self._lock = threading.Lock()
        self._frames = 0  # sample frames written (one per channel set)
        self._unflushed = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
            self._file.write(_header(sample_rate, channels, 0))
            self._file.flush()
        except OSError as e:
            raise AudioFileError(
                f"Could not create the audio file {self.path}: {_reason(e, self.path)}."
            ) from None

    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def duration_s(self) -> float:
        return self._frames / self.sample_rate

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, pcm: np.ndarray) -> None:
        """Append samples: shape [n] for mono, [n, channels] otherwise; clipped to [-1, 1]."""
        data = np.asarray(pcm, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if data.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got {data.shape[1]}")
        ints = np.clip(np.rint(data * 32767.0), -32768, 32767).astype("<i2")
        with self._lock:
            if self._file.closed:
                return
            self._file.write(ints.tobytes())
            self._frames += len(ints)
            self._unflushed += len(ints)
            if self._unflushed >= self._flush_every:
                self._flush_locked()

    def flush(self) -> None:
        """Make everything written so far a valid file on disk."""
        with self._lock:
            if not self._file.closed:
                self._flush_locked()

    def close(self) -> None:
        """Flush and close; safe to call twice. The file is closed even when the last flush
        fails (a full disk): it then holds everything up to the previous flush."""
        with self._lock:
            if not self._file.closed:
                try:
                    self._flush_locked()
                finally:
                    try:
                        self._file.close()
                    except OSError:
                        pass  # its buffer could not be written either

    def _flush_locked(self) -> None:
        data_bytes = self._frames * 2 * self.channels
        f = self._file
        f.seek(0)
        f.write(_header(self.sample_rate, self.channels, data_bytes))
        f.seek(_HEADER_BYTES + data_bytes)
        f.flush()
        if self._fsync:
            os.fsync(f.fileno())
        self._unflushed = 0
