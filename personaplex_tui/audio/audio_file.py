"""Read audio files (WAV, FLAC, anything libsndfile reads) as 24 kHz mono float32, whole or in
blocks (writing them: `audio_writing`; what is checked of a file's bytes: `file_checks`)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from personaplex_tui.audio.decoder_noise import DecoderNoise, damaged_note
from personaplex_tui.audio.echo_metrics import clipped_per_channel, clipped_per_frame
from personaplex_tui.audio.errors import AudioFileError
from personaplex_tui.audio.file_checks import (
    SizedView,
    check_wav_complete,
    cut_short_note,
    ogg_cut_short,
)
from personaplex_tui.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from personaplex_tui.audio.resample import resample, resample_blocks, resampled_length
from personaplex_tui.audio.stream_parts import ClosesOnExit
from personaplex_tui.stop_signals import POLICY

SILENCE_PEAK = 10 ** (-60 / 20)  # a file whose peak stays under -60 dBFS is "silent"
MIN_RATE, MAX_RATE = 1000, 768_000  # sample rates worth resampling (Hz)
MAX_CHANNELS = 64
MAX_SECONDS = 3 * 3600  # 3 h of 24 kHz float32 is about 1 GB in memory
MAX_PIPE_BYTES = 512 << 20  # what a pipe may hand over (read into memory to be decoded)
_PIPE_CHUNK = 1 << 20
READ_FRAMES = 1 << 16  # frames `AudioStream` decodes at a time (2.7 s at 24 kHz)


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
    damaged: bool = False  # an MP3 whose decoder skipped damaged frames: usable, with gaps
    # samples at full scale (every channel, at the file's own rate) in each 80 ms frame of `pcm`
    clipped_by_frame: np.ndarray | None = field(default=None, repr=False)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / SAMPLE_RATE

    @property
    def file_warning(self) -> str | None:
        """The sentence for a file whose bytes are incomplete or damaged (an Ogg stream cut
        short, an MP3 with damaged frames) but still used, else None."""
        return _file_warning(self.path, self.duration_s, self.cut_short, self.damaged)

    @property
    def warning(self) -> str | None:
        """A sentence (or two) for the user when the file is valid but useless or incomplete,
        else None."""
        said = [self.file_warning] if self.file_warning else []
        if self.silent:
            said.append(f"The audio file {self.path} contains only silence.")
        return " ".join(said) or None


def _file_warning(path: str, duration_s: float, cut_short: bool, damaged: bool) -> str | None:
    if cut_short:
        return cut_short_note(path, duration_s)
    return damaged_note(path) if damaged else None


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
    noise = DecoderNoise()  # libmpg123's messages: not on the terminal, a sentence instead
    source, info = _checked_info(p, source, size, noise)
    try:
        source.seek(0)
        with _sndfile_call(noise):
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
        cut_short=ogg_cut_short(source, size, info),
        damaged=info.format == "MP3" and noise.frames_lost,
        clipped_by_frame=clipped_per_frame(data, info.samplerate, -(-len(pcm) // FRAME_SAMPLES)),
    )


def _checked_info(
    p: Path, source: BinaryIO, size: int, noise: DecoderNoise
) -> tuple[BinaryIO, sf._SoundFileInfo]:
    """What libsndfile says of the file, once its rate, channels, length and (for a WAV) its
    completeness are checked; and the source to decode (a WAV whose header has no length: a
    view of it with the length filled in). What the MP3 decoder prints goes to `noise`."""
    try:
        with _sndfile_call(noise):
            info = sf.info(source)
        noise.active = info.format == "MP3"  # only libmpg123 talks: leave fd 2 be for others
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
        unsized = check_wav_complete(p, source, size, info.samplerate)
        if unsized is not None:  # a header without the data's length: read to the file's end
            source = SizedView(source, size, *unsized)
            with _sndfile_call(noise):
                info = sf.info(source)
    return source, info


@contextlib.contextmanager
def _sndfile_call(noise: DecoderNoise) -> Iterator[None]:
    """Around one libsndfile call on a Python file object: its decoder's noise kept off the
    terminal, and a stop signal raised once the call returns, not in its read callback."""
    with POLICY.held(), noise.quiet():
        yield


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
    are the clip's `pcm`; `clipped_by_channel` counts each channel's samples at full scale. A
    pipe is read into memory first, as `read_audio` does.
    """

    def __init__(self, path: str | Path) -> None:
        p, handle = _open(path)
        try:
            source, size = _readable(p, handle)
            noise = DecoderNoise()
            source, info = _checked_info(p, source, size, noise)
            frames, finite, peak, mono_peak = 0, True, 0.0, 0.0
            clipped = np.zeros(info.channels, np.int64)
            for data in _decoded(p, source, noise):
                frames += len(data)
                finite = finite and bool(np.isfinite(data).all())
                peak = max(peak, float(np.max(np.abs(data))))
                mono_peak = max(mono_peak, float(np.max(np.abs(_mono(data)))))
                clipped += clipped_per_channel(data)
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
        # samples at full scale in each channel at the file's own rate, before the mix to mono
        self.clipped_by_channel = tuple(int(count) for count in clipped)
        self.samples = resampled_length(frames, info.samplerate, SAMPLE_RATE)
        self.cut_short = ogg_cut_short(source, size, info)
        self.damaged = info.format == "MP3" and noise.frames_lost

    @property
    def cut_short_note(self) -> str | None:
        """`AudioClip.warning`'s sentence for an Ogg file cut short, else None."""
        return cut_short_note(self.path, self.duration_s) if self.cut_short else None

    @property
    def file_warning(self) -> str | None:
        """`AudioClip.file_warning`: an Ogg file cut short, an MP3 with damaged frames."""
        return _file_warning(self.path, self.duration_s, self.cut_short, self.damaged)

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


def _decoded(p: Path, source: BinaryIO, noise: DecoderNoise | None = None) -> Iterator[np.ndarray]:
    """The file's frames from its start, float32 [n, channels], `READ_FRAMES` at a time; what
    the MP3 decoder prints goes to `noise` (fd 2 is held for one call at a time, never
    while the caller has a block)."""
    noise = DecoderNoise() if noise is None else noise
    try:
        source.seek(0)
        with _sndfile_call(noise):
            f = sf.SoundFile(source)
        with f:
            while True:
                with _sndfile_call(noise):
                    data = f.read(READ_FRAMES, dtype="float32", always_2d=True)
                if not len(data):
                    return
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
