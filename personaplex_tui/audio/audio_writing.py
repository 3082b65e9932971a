"""Write mono float32 audio as 16-bit PCM WAV or FLAC files, whole (`write_wav`) or block by
block (`AudioWriter`); a failure is the system's reason in one sentence, and a file cut short by
it is removed. A file appears whole or not at all: it is written under a hidden name beside it
and renamed when complete, so an older file of that name stays until then."""

from __future__ import annotations

import io
import os
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from personaplex_tui.audio.errors import AudioFileError
from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.stream_parts import ClosesOnExit
from personaplex_tui.audio.wav_writer import _header as wav_header
from personaplex_tui.stop_signals import POLICY

WRITTEN_FORMATS = {".wav": "WAV", ".flac": "FLAC"}  # what `write_wav` writes, by the name's suffix


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float32 audio as 16-bit PCM: a WAV file, or FLAC for a .flac name; returns the
    path. `AudioWriter` in one block: a failure is the system's own reason (a full disk, a
    read-only one) in one sentence, and a file cut short by it is removed."""
    samples = np.asarray(pcm, np.float32).reshape(-1)
    with AudioWriter(path, len(samples), sample_rate) as out:
        out.write(samples)
    return out.path


class AudioWriter(ClosesOnExit):
    """Writes `samples` samples of mono float32 audio block by block as 16-bit PCM: a WAV file,
    or FLAC for a .flac name.

    A failure is the system's own reason (a full disk, a read-only one) in
    one sentence, and the file cut short by it is removed; `with` also removes it when the
    block fails (the audio is not all there). It is written under a hidden name beside `path`
    (`.NAME.` then 8 random hex digits then `.part`; through a symbolic link, beside its target)
    and renamed to `path` when complete, so
    a failure, Ctrl+C or a kill leaves any older file of that name as it was. The WAV's length is
    known from the start, so it is written front to back, never seeking back; FLAC goes through
    libsndfile.
    """

    def __init__(self, path: str | Path, samples: int, sample_rate: int = SAMPLE_RATE) -> None:
        self.path = p = Path(path).expanduser()  # as check_output_file checked it
        kind = WRITTEN_FORMATS.get(p.suffix.lower())
        if kind is None:
            raise AudioFileError(
                f"Cannot write the audio file {p}: give it a .wav or .flac name (its format)."
            )
        self.samples, self.written, self.sample_rate = samples, 0, sample_rate
        self._files = ExitStack()  # the file, and libsndfile's handle on it (closed first)
        self._flac: sf.SoundFile | None = None
        self._sink: _Sink | None = None
        self._done = False
        self._target = p.resolve() if p.is_symlink() else p  # (as open() writes through it)
        self._part: Path | None = self._target.with_name(
            f".{self._target.name}.{uuid.uuid4().hex[:8]}.part"
        )
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._file = self._files.enter_context(open(self._part, "wb"))  # noqa: SIM115
            except PermissionError:  # a folder we may not add to, a file we may write: in place
                if not os.access(self._target, os.W_OK):
                    raise
                self._part = None
                self._file = self._files.enter_context(open(self._target, "wb"))  # noqa: SIM115
        except OSError as e:  # nothing of ours to remove
            raise AudioFileError(
                f"Could not write the audio file {p}: {e.strerror or e}."
            ) from None
        try:
            with POLICY.held():  # a stop signal in libsndfile's callbacks: raised after its call
                try:
                    if kind == "WAV":
                        self._file.write(wav_header(sample_rate, 1, 2 * samples))
                    else:
                        self._sink = _Sink(self._file)
                        self._flac = self._files.enter_context(
                            sf.SoundFile(self._sink, "w", sample_rate, 1, "PCM_16", format=kind)
                        )
                        self._sink.check()
                except OSError as e:
                    raise self._failed(e) from None
        except BaseException:
            self.abort()  # (no `with` will: the writer was not made)
            raise

    def write(self, pcm: np.ndarray) -> None:
        """Append samples (float32 [n]), clipped to [-1, 1]."""
        clipped = np.clip(np.asarray(pcm, np.float32).reshape(-1), -1, 1)
        if self.written + len(clipped) > self.samples:
            raise ValueError(f"{self.path}: more than the {self.samples} samples promised")
        with POLICY.held():  # what libsndfile's callbacks write is never cut by a stop signal
            try:
                if self._flac is None:  # converted by libsndfile, as `write_wav`'s samples are
                    raw = io.BytesIO()
                    sf.write(
                        raw, clipped, self.sample_rate, "PCM_16", format="RAW", endian="LITTLE"
                    )
                    self._file.write(raw.getbuffer())
                else:
                    self._flac.write(clipped)
                    self._sink.check()  # type: ignore[union-attr]
            except OSError as e:
                raise self._failed(e) from None
            self.written += len(clipped)

    def close(self) -> None:
        """Finish the file: all `samples` must have been written (else it is removed)."""
        if self._done:
            return
        if self.written != self.samples:
            self.abort()
            raise ValueError(f"{self.path}: {self.written} of {self.samples} samples written")
        with POLICY.held():  # a stop signal meanwhile: the file is finished, then it is raised
            try:
                self._files.close()  # libsndfile finishes the FLAC; Python's buffer is written
                if self._sink is not None:
                    self._sink.check()
                if self._part is not None:
                    if self._target.exists():  # the older file's permissions, not the umask's
                        os.chmod(self._part, self._target.stat().st_mode & 0o7777)
                    os.replace(self._part, self._target)
            except OSError as e:
                raise self._failed(e) from None
            self._done = True

    def abort(self) -> None:
        """Close and remove the file (it does not hold all the audio)."""
        if self._done:
            return
        self._done = True
        try:
            self._files.close()
        except Exception:  # a failed close is the reason already given, or none: removed anyway
            pass
        unfinished = self._target if self._part is None else self._part
        try:
            if unfinished.is_file() and not unfinished.is_symlink():
                unfinished.unlink()
        except OSError:
            pass

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _failed(self, error: OSError) -> AudioFileError:
        self.abort()
        return AudioFileError(
            f"Could not write the audio file {self.path}: {error.strerror or error}."
        )


class _Sink:
    """A file for libsndfile to write through. An OSError is kept for `check()` to raise instead
    of being raised inside libsndfile's callback (where it would be lost: libsndfile says only
    "System error."); the writes after it are dropped (the file is removed anyway)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: OSError | None = None

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                self._f.write(data)
            except OSError as e:
                self.error = e
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.error is None:
            try:
                return self._f.seek(offset, whence)
            except OSError as e:
                self.error = e
        return 0

    def tell(self) -> int:
        if self.error is None:
            try:
                return self._f.tell()
            except OSError as e:
                self.error = e
        return 0
