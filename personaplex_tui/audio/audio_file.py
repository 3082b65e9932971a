"""Read audio files (WAV, FLAC, anything libsndfile reads) as 24 kHz mono float32; write WAVs."""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from personaplex_tui.audio.errors import AudioFileError
from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.resample import resample

SILENCE_PEAK = 10 ** (-60 / 20)  # a file whose peak stays under -60 dBFS is "silent"
MIN_RATE, MAX_RATE = 1000, 768_000  # sample rates worth resampling (Hz)
MAX_CHANNELS = 64
MAX_SECONDS = 3 * 3600  # 3 h of 24 kHz float32 is about 1 GB in memory
MAX_PIPE_BYTES = 512 << 20  # what a pipe may hand over (read into memory to be decoded)
_PIPE_CHUNK = 1 << 20


@dataclass(frozen=True)
class AudioClip:
    """Audio read from a file, converted to the model's format."""

    pcm: np.ndarray = field(repr=False)  # float32 [n], 24 kHz mono
    source_rate: int
    source_channels: int
    source_format: str  # e.g. "WAV PCM_16", "FLAC PCM_24"
    silent: bool  # nothing above -60 dBFS: valid, but worth a warning
    path: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / SAMPLE_RATE

    @property
    def warning(self) -> str | None:
        """A sentence for the user when the file is valid but useless, else None."""
        if self.silent:
            return f"The audio file {self.path} contains only silence."
        return None


def read_audio(path: str | Path) -> AudioClip:
    """Read a WAV or FLAC file and return it as 24 kHz mono float32.

    Raises AudioFileError with one sentence when the file is missing, unreadable, empty, not
    audio, corrupt or truncated. A file of silence is returned with `silent=True`. A pipe (a
    FIFO, `<(...)` in the shell, or `-` for the standard input) is read to its end first.
    """
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
    with handle:
        try:
            source, size = _source(handle)
        except OSError as e:
            raise AudioFileError(
                f"The audio file {p} could not be read: {e.strerror or e}."
            ) from None
        if size == 0:
            raise AudioFileError(
                f"The audio file {p} is empty (0 bytes)."
                if source is handle
                else f"{p} gave no data (a {_kind(handle)} that ended without any audio)."
            )
        return _decode(p, source, size)


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
            source = _sized_copy(source, size, *unsized)
            info = sf.info(source)
    try:
        source.seek(0)
        data = sf.read(source, dtype="float32", always_2d=True)[0]
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFileError(
            f"The audio file {p} is corrupt or truncated ({_reason(e)})."
        ) from None
    if info.frames > 0 and len(data) < info.frames:
        raise AudioFileError(
            f"The audio file {p} is truncated: it holds {len(data) / info.samplerate:.2f} s "
            f"of the {info.frames / info.samplerate:.2f} s its header promises."
        )
    if len(data) == 0:
        raise AudioFileError(f"The audio file {p} contains no audio samples.")
    if not np.isfinite(data).all():
        raise AudioFileError(f"The audio file {p} is corrupt: it contains NaN or infinite samples.")
    peak = float(np.max(np.abs(data)))
    if peak > MAX_FLOAT_PEAK:  # float samples run from -1 to 1; a little over is a loud take
        raise AudioFileError(
            f"The audio file {p} is corrupt or not scaled as audio: its samples reach "
            f"{peak:.3g}, where full scale is 1 ({20 * np.log10(peak):.0f} dB over)."
        )
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    pcm = resample(mono, info.samplerate, SAMPLE_RATE)
    return AudioClip(
        pcm=pcm,
        source_rate=info.samplerate,
        source_channels=info.channels,
        source_format=f"{info.format} {info.subtype}",
        silent=bool(np.max(np.abs(mono)) < SILENCE_PEAK),
        path=str(p),
    )


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


def _sized_copy(f: BinaryIO, size: int, at: int, block: int) -> BinaryIO:
    """The WAV's bytes in memory with the data chunk's size (at byte `at`) and the RIFF size
    counting every whole sample to the end of the file."""
    f.seek(0)
    data = bytearray(f.read(size))
    whole = (size - at - 4) - (size - at - 4) % block
    data[at : at + 4] = struct.pack("<I", min(whole, 0xFFFFFFFF))
    data[4:8] = struct.pack("<I", min(size - 8, 0xFFFFFFFF))
    return io.BytesIO(bytes(data))


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
