"""Read audio files (WAV, FLAC, anything libsndfile reads) as 24 kHz mono float32, whole or in
blocks; write WAVs, whole or in blocks."""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from personaplex_tui.audio.errors import AudioFileError
from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.resample import resample, resample_blocks, resampled_length
from personaplex_tui.audio.stream_parts import ClosesOnExit
from personaplex_tui.audio.wav_writer import _header as wav_header

SILENCE_PEAK = 10 ** (-60 / 20)  # a file whose peak stays under -60 dBFS is "silent"
MIN_RATE, MAX_RATE = 1000, 768_000  # sample rates worth resampling (Hz)
MAX_CHANNELS = 64
MAX_SECONDS = 3 * 3600  # 3 h of 24 kHz float32 is about 1 GB in memory
MAX_PIPE_BYTES = 512 << 20  # what a pipe may hand over (read into memory to be decoded)
_PIPE_CHUNK = 1 << 20
READ_FRAMES = 1 << 16  # frames `AudioStream` decodes at a time (2.7 s at 24 kHz)
OGG_TAIL = 1 << 17  # bytes read from an Ogg file's end to find its last page (at most 65,307)


@dataclass(frozen=True)
class AudioClip:
    """Audio read from a file, converted to the model's format."""

    pcm: np.ndarray = field(repr=False)  # float32 [n], 24 kHz mono
    source_rate: int
    source_channels: int
    source_format: str  # e.g. "WAV PCM_16", "FLAC PCM_24"
    silent: bool  # nothing above -60 dBFS: valid, but worth a warning
    path: str = ""
    cut_short: bool = False  # an Ogg stream without its end: usable, but worth a warning

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / SAMPLE_RATE

    @property
    def warning(self) -> str | None:
        """A sentence (or two) for the user when the file is valid but useless or incomplete,
        else None."""
        said = [_cut_short_note(self.path, self.duration_s)] if self.cut_short else []
        if self.silent:
            said.append(f"The audio file {self.path} contains only silence.")
        return " ".join(said) or None


def read_audio(path: str | Path) -> AudioClip:
    """Read a WAV or FLAC file and return it as 24 kHz mono float32.

    Raises AudioFileError with one sentence when the file is missing, unreadable, empty, not
    audio, corrupt or truncated. A file of silence is returned with `silent=True`. A pipe (a
    FIFO, `<(...)` in the shell, or `-` for the standard input) is read to its end first.
    """
    p, handle = _open(path)
    with handle:
        source, size = _readable(p, handle)
        return _decode(p, source, size)


def _open(path: str | Path) -> tuple[Path, BinaryIO]:
    """The file's path as the user named it (`-`: the standard input) and the file, opened."""
    if str(path) == "":
        raise AudioFileError("No audio file was given (the file name is empty).")
    p = Path("/dev/stdin") if str(path) == "-" else Path(path)
    try:
        handle = open(p, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise AudioFileError(f"The audio file {p} does not exist.") from None
    except IsADirectoryError:
        raise AudioFileError(f"{p} is a folder, not an audio file.") from None
    except PermissionError:
        raise AudioFileError(
            f"The audio file {p} cannot be read: you have no permission to read it."
        ) from None
    except OSError as e:
        raise AudioFileError(f"The audio file {p} could not be read: {e.strerror or e}.") from None
    return p, handle


def _readable(p: Path, handle: BinaryIO) -> tuple[BinaryIO, int]:
    """`_source`, its failures and an empty file said in one sentence."""
    try:
        source, size = _source(handle)
    except OSError as e:
        raise AudioFileError(f"The audio file {p} could not be read: {e.strerror or e}.") from None
    if size == 0:
        raise AudioFileError(
            f"The audio file {p} is empty (0 bytes)."
            if source is handle
            else f"{p} gave no data (a {_kind(handle)} that ended without any audio)."
        )
    return source, size


def _source(handle: BinaryIO) -> tuple[BinaryIO, int]:
    """A seekable stream of the file's bytes and its size: the file itself, or a pipe's bytes
    read into memory (libsndfile needs to seek)."""
    st = os.fstat(handle.fileno())
    if stat.S_ISREG(st.st_mode):
        return handle, st.st_size
    if handle.isatty():
        raise OSError(0, "it is a terminal; pipe the audio in (`< question.wav`)")
    data, total = io.BytesIO(), 0  # in chunks: an endless device (/dev/zero) stops at the cap
    while chunk := handle.read(_PIPE_CHUNK):
        total += len(chunk)
        if total > MAX_PIPE_BYTES:
            raise OSError(
                0, f"more than {MAX_PIPE_BYTES >> 20} MB came through the {_kind(handle)}"
            )
        data.write(chunk)
    data.seek(0)
    return data, total


def _kind(handle: BinaryIO) -> str:
    """ "pipe" or "device": what a file that is not a regular one is, in the user's words."""
    try:
        return "device" if stat.S_ISCHR(os.fstat(handle.fileno()).st_mode) else "pipe"
    except OSError:
        return "pipe"


def _decode(p: Path, source: BinaryIO, size: int) -> AudioClip:
    source, info = _checked_info(p, source, size)
    try:
        source.seek(0)
        data = sf.read(source, dtype="float32", always_2d=True)[0]
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFileError(_corrupt(p, e)) from None
    peak = float(np.max(np.abs(data))) if len(data) else 0.0
    _check_samples(p, info, len(data), bool(np.isfinite(data).all()), peak)
    mono = _mono(data)
    pcm = resample(mono, info.samplerate, SAMPLE_RATE)
    return AudioClip(
        pcm=pcm,
        source_rate=info.samplerate,
        source_channels=info.channels,
        source_format=f"{info.format} {info.subtype}",
        silent=bool(np.max(np.abs(mono)) < SILENCE_PEAK),
        path=str(p),
        cut_short=_ogg_cut_short(source, size, info),
    )


def _checked_info(p: Path, source: BinaryIO, size: int) -> tuple[BinaryIO, sf._SoundFileInfo]:
    """What libsndfile says of the file, once its rate, channels, length and (for a WAV) its
    completeness are checked; and the source to decode (a WAV whose header has no length: a
    view of it with the length filled in)."""
    try:
        info = sf.info(source)
    except sf.LibsndfileError as e:
        raise AudioFileError(_unreadable(p, source, e)) from None
    except (OSError, RuntimeError) as e:
        raise AudioFileError(f"The audio file {p} could not be read: {_reason(e)}.") from None
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise AudioFileError(
            f"The audio file {p} has a sample rate of {info.samplerate} Hz; "
            f"{MIN_RATE} to {MAX_RATE} Hz can be used (is the file corrupt?)."
        )
    if info.channels > MAX_CHANNELS:
        raise AudioFileError(
            f"The audio file {p} has {info.channels} channels, more than the {MAX_CHANNELS} "
            "that can be mixed down (is the file corrupt?)."
        )
    if info.frames > MAX_SECONDS * info.samplerate:
        raise AudioFileError(
            f"The audio file {p} is {info.frames / info.samplerate / 3600:.1f} h long; "
            f"at most {MAX_SECONDS // 3600} h can be read (is the file corrupt?)."
        )
    if info.format in ("WAV", "WAVEX"):
        unsized = _check_wav_complete(p, source, size, info.samplerate)
        if unsized is not None:  # a header without the data's length: read to the file's end
            source = _SizedView(source, size, *unsized)
            info = sf.info(source)
    return source, info


def _corrupt(p: Path, e: Exception) -> str:
    return f"The audio file {p} is corrupt or truncated ({_reason(e)})."


def _check_samples(
    p: Path, info: sf._SoundFileInfo, frames: int, finite: bool, peak: float
) -> None:
    """Refuse, in one sentence, a file of which `frames` frames were decoded, `finite` or not,
    reaching `peak`: cut short of its header's length, empty, or not audio samples."""
    if info.frames > 0 and frames < info.frames:
        raise AudioFileError(
            f"The audio file {p} is truncated: it holds {frames / info.samplerate:.2f} s "
            f"of the {info.frames / info.samplerate:.2f} s its header promises."
        )
    if frames == 0:
        raise AudioFileError(f"The audio file {p} contains no audio samples.")
    if not finite:
        raise AudioFileError(f"The audio file {p} is corrupt: it contains NaN or infinite samples.")
    if peak > MAX_FLOAT_PEAK:  # float samples run from -1 to 1; a little over is a loud take
        raise AudioFileError(
            f"The audio file {p} is corrupt or not scaled as audio: its samples reach "
            f"{peak:.3g}, where full scale is 1 ({20 * np.log10(peak):.0f} dB over)."
        )


def _mono(data: np.ndarray) -> np.ndarray:
    """Frames [n, channels] mixed down to mono float32 [n]."""
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


class AudioStream(ClosesOnExit):
    """An audio file read in blocks as 24 kHz mono float32, for recordings too long to hold
    whole (`read_audio` holds a file as float32, several times over while converting it).

    Opening it reads the file through once, a block at a time, and refuses it with the very
    sentences of `read_audio`; then `blocks()` reads it again from its start, as often as asked.
    What it says of the file (`source_rate`, `source_channels`, `source_format`, `silent`, and
    `samples`, its length at 24 kHz) is what `read_audio`'s clip says, and the blocks, joined,
    are the clip's `pcm`. A pipe is read into memory first, as `read_audio` does.
    """

    def __init__(self, path: str | Path) -> None:
        p, handle = _open(path)
        try:
            source, size = _readable(p, handle)
            source, info = _checked_info(p, source, size)
            frames, finite, peak, mono_peak = 0, True, 0.0, 0.0
            for data in _decoded(p, source):
                frames += len(data)
                finite = finite and bool(np.isfinite(data).all())
                peak = max(peak, float(np.max(np.abs(data))))
                mono_peak = max(mono_peak, float(np.max(np.abs(_mono(data)))))
            _check_samples(p, info, frames, finite, peak)
        except BaseException:
            handle.close()
            raise
        self._handle, self._source = handle, source
        self.path = str(p)
        self.source_rate = info.samplerate
        self.source_channels = info.channels
        self.source_format = f"{info.format} {info.subtype}"
        self.silent = mono_peak < SILENCE_PEAK
        self.samples = resampled_length(frames, info.samplerate, SAMPLE_RATE)
        self.cut_short = _ogg_cut_short(source, size, info)

    @property
    def cut_short_note(self) -> str | None:
        """`AudioClip.warning`'s sentence for an Ogg file cut short, else None."""
        return _cut_short_note(self.path, self.duration_s) if self.cut_short else None

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE

    def blocks(self, size: int, total: int | None = None) -> Iterator[np.ndarray]:
        """The audio from its start in blocks of `size` samples (float32 [size], the last one
        shorter): `total` samples in all (by default `samples`), padded with silence or cut.
        One iteration at a time (they share the file)."""
        mono = (_mono(data) for data in _decoded(Path(self.path), self._source))
        pcm = resample_blocks(mono, self.source_rate, SAMPLE_RATE)
        return _fixed_blocks(pcm, size, self.samples if total is None else total)

    def close(self) -> None:
        self._handle.close()


def _decoded(p: Path, source: BinaryIO) -> Iterator[np.ndarray]:
    """The file's frames from its start, float32 [n, channels], `READ_FRAMES` at a time."""
    try:
        source.seek(0)
        with sf.SoundFile(source) as f:
            while len(data := f.read(READ_FRAMES, dtype="float32", always_2d=True)):
                yield data
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFileError(_corrupt(p, e)) from None


def _fixed_blocks(pieces: Iterable[np.ndarray], size: int, total: int) -> Iterator[np.ndarray]:
    """`total` samples of `pieces` (blocks of any sizes) in blocks of `size`, the last shorter;
    padded with silence past the pieces' end, cut where they go on."""
    held = np.zeros(0, np.float32)
    sent = 0
    for piece in pieces:
        held = np.concatenate([held, piece]) if len(held) else piece
        while sent < total and len(held) >= min(size, total - sent):
            n = min(size, total - sent)
            yield held[:n]
            held, sent = held[n:], sent + n
        if sent >= total:
            return
    while sent < total:
        n = min(size, total - sent)
        block = np.zeros(n, np.float32)
        block[: min(n, len(held))] = held[:n]
        yield block
        held, sent = held[n:], sent + n


# The largest sample taken (60 dB over full scale): float files may pass 1 a little (a mix that
# was not normalised), not by 1e30 (a reply was computed on it, sound-check reported 653 dB ERLE)
MAX_FLOAT_PEAK = 1000.0

WRITTEN_FORMATS = {".wav": "WAV", ".flac": "FLAC"}  # what `write_wav` writes, by the name's suffix


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float32 audio as 16-bit PCM in one go: a WAV file, or FLAC for a .flac name;
    returns the path. Encoded in memory first, so a failure is the system's own reason (a full
    disk, a read-only one) in one sentence, and a file cut short by it is removed."""
    p = Path(path)
    kind = WRITTEN_FORMATS.get(p.suffix.lower())
    if kind is None:
        raise AudioFileError(
            f"Cannot write the audio file {p}: give it a .wav or .flac name (its format)."
        )
    encoded = io.BytesIO()
    clipped = np.clip(np.asarray(pcm, np.float32), -1, 1)
    sf.write(encoded, clipped, sample_rate, "PCM_16", format=kind)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.write(encoded.getbuffer())
    except OSError as e:
        if p.is_file() and not p.is_symlink():  # cut short: not an audio file to leave
            try:
                p.unlink()
            except OSError:
                pass
        raise AudioFileError(f"Could not write the audio file {p}: {e.strerror or e}.") from None
    return p


class AudioWriter(ClosesOnExit):
    """Writes `samples` samples of mono float32 audio block by block as 16-bit PCM: a WAV file,
    or FLAC for a .flac name; for audio too long to encode in memory as `write_wav` does.

    As with `write_wav`, a failure is the system's own reason (a full disk, a read-only one) in
    one sentence, and the file cut short by it is removed; `with` also removes it when the
    block fails (the audio is not all there). The WAV's length is known from the start, so it
    is written front to back, never seeking back; FLAC goes through libsndfile.
    """

    def __init__(self, path: str | Path, samples: int, sample_rate: int = SAMPLE_RATE) -> None:
        self.path = p = Path(path)
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
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._files.enter_context(open(p, "wb"))  # noqa: SIM115
        except OSError as e:  # nothing of ours to remove
            raise AudioFileError(
                f"Could not write the audio file {p}: {e.strerror or e}."
            ) from None
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

    def write(self, pcm: np.ndarray) -> None:
        """Append samples (float32 [n]), clipped to [-1, 1]."""
        clipped = np.clip(np.asarray(pcm, np.float32).reshape(-1), -1, 1)
        if self.written + len(clipped) > self.samples:
            raise ValueError(f"{self.path}: more than the {self.samples} samples promised")
        try:
            if self._flac is None:  # converted by libsndfile, as `write_wav`'s samples are
                raw = io.BytesIO()
                sf.write(raw, clipped, self.sample_rate, "PCM_16", format="RAW", endian="LITTLE")
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
        try:
            self._files.close()  # libsndfile finishes the FLAC; Python's buffer is written out
            if self._sink is not None:
                self._sink.check()
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
        try:
            if self.path.is_file() and not self.path.is_symlink():
                self.path.unlink()
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


def _reason(e: Exception) -> str:
    text = (getattr(e, "error_string", "") or str(e)).strip().replace("\n", " ")
    for prefix in ("Error : ", "Error: "):
        text = text.removeprefix(prefix)
    return text.rstrip(".").replace(". ", "; ") or type(e).__name__


def _unreadable(p: Path, source: BinaryIO, e: sf.LibsndfileError) -> str:
    reason = _reason(e)
    source.seek(0)
    head = source.read(12)
    if head[:4] in (b"RIFF", b"RF64", b"fLaC", b"FORM") or head[8:12] == b"WAVE":
        return f"The audio file {p} is corrupt ({reason})."
    return f"{p} is not a WAV or FLAC audio file (its format was not recognised)."


class _SizedView(io.RawIOBase):
    """The WAV file `f` read with the data chunk's size (at byte `at`) and the RIFF size counting
    every whole sample to the end of the file: those 8 bytes are replaced as they are read, so a
    long recording is not copied into memory."""

    def __init__(self, f: BinaryIO, size: int, at: int, block: int) -> None:
        super().__init__()
        whole = (size - at - 4) - (size - at - 4) % block
        self._f, self._size, self._pos = f, size, 0
        self._patches = (
            (4, struct.pack("<I", min(size - 8, 0xFFFFFFFF))),
            (at, struct.pack("<I", min(whole, 0xFFFFFFFF))),
        )

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        self._f.seek(self._pos)
        got = self._f.readinto(view) or 0  # type: ignore[attr-defined]
        for at, patch in self._patches:
            lo, hi = max(at, self._pos), min(at + len(patch), self._pos + got)
            if lo < hi:
                view[lo - self._pos : hi - self._pos] = patch[lo - at : hi - at]
        self._pos += got
        return got


def _ogg_cut_short(source: BinaryIO, size: int, info: sf._SoundFileInfo) -> bool:
    """libsndfile quietly reads an Ogg file (Vorbis, Opus) cut short, up to the cut: its last
    page should be whole and carry the end-of-stream flag (header type bit 0x04). Only the
    file's last `OGG_TAIL` bytes are read; a tail with no page header in it is not judged."""
    if info.format != "OGG":
        return False
    start = max(0, size - OGG_TAIL)
    source.seek(start)
    tail = source.read(size - start)
    at = len(tail)
    while (at := tail.rfind(b"OggS", 0, at)) >= 0:
        if at + 4 < len(tail) and tail[at + 4] != 0:  # not a page: version 0 only
            continue
        if at + 27 > len(tail):  # the cut fell in the page's header
            return True
        segments = tail[at + 27 : at + 27 + tail[at + 26]]
        if len(segments) < tail[at + 26] or at + 27 + len(segments) + sum(segments) > len(tail):
            return True  # the cut fell in the page
        return not tail[at + 5] & 0x04
    return False


def _cut_short_note(path: str, duration_s: float) -> str:
    return (
        f"The audio file {path} seems cut short (its Ogg stream stops without its end, as after "
        f"an interrupted download or copy); its {duration_s:.2f} s are used as far as they go."
    )


def _check_wav_complete(p: Path, f: BinaryIO, size: int, rate: int) -> tuple[int, int] | None:
    """libsndfile quietly reads a cut-off WAV; compare the data chunk's size with the file's.
    A data size of 0 with samples after it (a streaming writer that never went back to fill it
    in) is read to the end of the file: returns (where that size is, the sample's bytes)."""
    block = 1
    f.seek(0)
    head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt " and csize >= 14:
            fmt = f.read(csize)
            block = max(1, struct.unpack("<H", fmt[12:14])[0])
            if csize & 1:
                f.seek(1, 1)
            continue
        if cid == b"data":
            have = size - f.tell()
            if csize == 0 and have >= block:  # length unknown (libsndfile reads 0 frames)
                return f.tell() - 4, block
            if csize not in (0, 0xFFFFFFFF) and have < csize:  # 0 / ~0: length unknown
                raise AudioFileError(
                    f"The audio file {p} is truncated: it holds {have / block / rate:.2f} s "
                    f"of the {csize / block / rate:.2f} s its header promises."
                )
            return None
        f.seek(csize + (csize & 1), 1)
