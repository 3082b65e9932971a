"""The echo canceller on two recordings (far end and microphone), with no sound card: what
`ppx-tui sound-check --far FAR.wav --mic MIC.wav --output CLEAN.wav` runs.

The recordings are read, cancelled and written a second at a time, and of the audio only each
20 ms block's power is kept for the report: the memory does not grow with the recordings (about
130 MB resident, 70 MB of it the imports and the canceller's library and 25 MB the two windows
of `DELAY_WINDOW_S` the delay is searched in, for 2 minutes as for an hour, where it grew by
~50 MB a minute; tests/test_sound_check_offline.py, tests/test_sound_check_memory.py).
"""

from __future__ import annotations

import filecmp
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personaplex_tui.audio.aec import BLOCK_SAMPLES, EchoCanceller, ProcessingOptions
from personaplex_tui.audio.audio_file import AudioStream
from personaplex_tui.audio.audio_writing import AudioWriter
from personaplex_tui.audio.echo_metrics import (
    ENVELOPE_SAMPLES,
    active_blocks,
    block_power,
    clipped_channels_words,
    clipping_note,
    erle_from_power,
    estimate_delay,
)
from personaplex_tui.audio.frames import SAMPLE_RATE

# AEC3 finds delays up to about 0.5 s by itself (measured: 0.4 s cancelled, 0.6 s not); a longer
# echo delay is brought within reach by shifting the far end, up to SEARCH_S.
CANCELLER_REACH_S = 0.4
SEARCH_S = 2.0
DELAY_WINDOW_S = 120  # seconds of each recording the echo delay is searched in
SHIFT_MARGIN_S = 0.05  # what is left for AEC3 to find after the shift
CONFIDENT = 8.0  # GCC-PHAT peak over its spread above which a delay is trusted
SETTLE_S = 2.0  # ERLE counts from here (the canceller converges first) when the file allows
CHUNK = SAMPLE_RATE  # samples read, cancelled and written at a time: whole 10 ms and 20 ms blocks


@dataclass
class OfflineReport:
    """What the offline run measured (all levels in dBFS over the blocks where the echo is)."""

    far: str
    mic: str
    output: str
    seconds: float
    delay_ms: float | None  # None: no echo of the far end was found in the microphone
    delay_confidence: float
    far_shift_ms: float  # how far the far end was shifted before the canceller saw it
    erle_db: float | None
    echo_before_dbfs: float | None
    echo_after_dbfs: float | None
    # the microphone's samples at full scale, as the live check counts them: in each channel of
    # the file as read (a stereo file's mix to mono halved a clip on one channel), summed
    clipped_samples: int = 0
    clipped_by_channel: list[int] = field(default_factory=list)  # the same, channel by channel
    notes: list[str] = field(default_factory=list)
    canceller: str = ""  # which build of AEC3 ran (EchoCanceller.name)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _describe(clip: AudioStream, label: str) -> list[str]:
    notes = []
    if clip.source_channels > 1:
        notes.append(f"{label} has {clip.source_channels} channels; they were mixed down to mono.")
    if clip.source_rate != SAMPLE_RATE:
        notes.append(f"{label} was resampled from {clip.source_rate} Hz to {SAMPLE_RATE} Hz.")
    if clip.silent:
        notes.append(f"{label} contains only silence.")
    if clip.file_warning:  # an Ogg stream cut short, an MP3 with damaged frames
        notes.append(clip.file_warning)
    return notes


def _same_recording(far: str | Path, mic: str | Path) -> bool:
    """Whether `far` and `mic` are one file (by two names too) or two files of the same bytes;
    the standard input and pipes are not compared (they are read once)."""
    if {str(far), str(mic)} & {"-", "/dev/stdin"}:
        return False
    try:
        if not (os.path.isfile(far) and os.path.isfile(mic)):
            return False
        return os.path.samefile(far, mic) or filecmp.cmp(far, mic, shallow=False)
    except OSError:  # gone or unreadable: reading it says so in its own sentence
        return False


def _level_dbfs(power: np.ndarray, mask: np.ndarray) -> float | None:
    """The level of the blocks marked in `mask`, from each block's power (`block_power`)."""
    n = min(len(power), len(mask))
    if not mask[:n].any():
        return None
    return float(10 * np.log10(np.mean(power[:n][mask[:n]]) + 1e-20))


class _Delay:
    """A signal delayed by `shift` samples (silence first), block by block."""

    def __init__(self, shift: int) -> None:
        self._held = np.zeros(shift, np.float32)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if not len(self._held):
            return block
        joined = np.concatenate([self._held, block])
        self._held = joined[len(block) :].copy()
        return joined[: len(block)]


def cancel_recordings(
    far_path: str | Path,
    mic_path: str | Path,
    output_path: str | Path,
    options: ProcessingOptions | None = None,
) -> OfflineReport:
    """Cancel `far_path`'s echo in `mic_path`, write the result to `output_path` (24 kHz WAV).

    Files of other rates or channel counts are converted, a shorter one is padded with
    silence, and each of these is said in `notes`. Raises AudioFileError (one sentence) for
    an unreadable file and CancellerUnavailableError when the canceller cannot load.
    """
    with AudioStream(far_path) as far_in, AudioStream(mic_path) as mic_in:
        notes = _describe(far_in, f"The far end {far_path}") + _describe(
            mic_in, f"The microphone {mic_path}"
        )
        if _same_recording(far_path, mic_path):
            notes.insert(
                0,
                f"The far end {far_path} and the microphone {mic_path} are the same recording: "
                "the echo found in it is the far end itself, so its delay and the echo removed "
                "mean nothing; give the microphone's own recording as --mic.",
            )
        if far_in.samples != mic_in.samples:
            shorter, name = (
                ("far end", far_path)
                if far_in.samples < mic_in.samples
                else ("microphone", mic_path)
            )
            gap = abs(far_in.samples - mic_in.samples) / SAMPLE_RATE
            said = f"{gap:.2f} s" if gap >= 0.01 else f"{gap * 1000:.2f} ms"  # (not "0.00 s")
            notes.append(f"The {shorter} {name} is {said} shorter; it was padded with silence.")
        n = -(-max(far_in.samples, mic_in.samples) // BLOCK_SAMPLES) * BLOCK_SAMPLES

        # The delay is found in the first minutes, a few rows of their spectrum at a time
        # (audio/gcc_phat.py): their whole-length FFTs took ~150 MB per minute of audio.
        window = min(DELAY_WINDOW_S * SAMPLE_RATE, n)
        delay_s, confidence = estimate_delay(
            next(far_in.blocks(window, window)), next(mic_in.blocks(window, window)), SEARCH_S
        )
        found = confidence >= CONFIDENT
        shift = 0
        if not found:
            notes.append(
                f"No echo of the far end was found in the microphone within {SEARCH_S:.0f} s; "
                "the canceller ran anyway."
            )
        elif delay_s > CANCELLER_REACH_S:
            shift = int((delay_s - SHIFT_MARGIN_S) * SAMPLE_RATE)
            notes.append(
                f"The echo comes {delay_s * 1000:.0f} ms after the far end, beyond the "
                f"canceller's own reach of {CANCELLER_REACH_S * 1000:.0f} ms; the far end was "
                f"shifted by {shift * 1000 / SAMPLE_RATE:.0f} ms to bring it within reach."
            )

        canceller = EchoCanceller(options)
        aligned, echoed = _Delay(shift), _Delay(int(round(delay_s * SAMPLE_RATE)))
        # What the report needs of the audio: each 20 ms block's power (the far end's as its echo
        # reaches the microphone), 1.2 kB a second.
        far_power, mic_power, clean_power = np.zeros((3, n // ENVELOPE_SAMPLES if found else 0))
        at = 0
        with AudioWriter(output_path, n) as out:
            for far, mic in zip(far_in.blocks(CHUNK, n), mic_in.blocks(CHUNK, n), strict=True):
                clean = canceller.process(mic, aligned(far))
                out.write(clean)
                if found:
                    got = len(far) // ENVELOPE_SAMPLES
                    far_power[at : at + got] = block_power(echoed(far))
                    mic_power[at : at + got] = block_power(mic)
                    clean_power[at : at + got] = block_power(clean)
                    at += got

    per_channel = list(mic_in.clipped_by_channel)
    clipped = sum(per_channel)
    if clipped:
        where = clipped_channels_words(per_channel)
        notes.append(clipping_note(clipped, f"The microphone {mic_path}", where))
    erle = before = after = None
    if found:
        active = active_blocks(far_power)
        settle = int(SETTLE_S * SAMPLE_RATE) // ENVELOPE_SAMPLES
        if active[settle:].sum() >= 10:  # else the file is too short to skip the first 2 s
            active[:settle] = False
        erle = erle_from_power(mic_power, clean_power, active)
        before = _level_dbfs(mic_power, active)
        after = _level_dbfs(clean_power, active)
        if erle != erle:  # NaN: the far end is silent
            erle = None
    return OfflineReport(
        far=str(far_path),
        mic=str(mic_path),
        output=str(output_path),
        seconds=round(n / SAMPLE_RATE, 3),
        delay_ms=round(delay_s * 1000, 1) if found else None,
        delay_confidence=round(confidence, 1),
        far_shift_ms=round(shift * 1000 / SAMPLE_RATE, 1),
        erle_db=None if erle is None else round(erle, 1),
        canceller=canceller.name,
        echo_before_dbfs=None if before is None else round(before, 1),
        echo_after_dbfs=None if after is None else round(after, 1),
        clipped_samples=clipped,
        clipped_by_channel=per_channel,
        notes=notes,
    )
