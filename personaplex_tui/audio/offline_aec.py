"""The echo canceller on two recordings (far end and microphone), with no sound card: what
`ppx-tui sound-check --far FAR.wav --mic MIC.wav --output CLEAN.wav` runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personaplex_tui.audio.aec import BLOCK_SAMPLES, EchoCanceller, ProcessingOptions
from personaplex_tui.audio.audio_file import AudioClip, read_audio, write_wav
from personaplex_tui.audio.echo_metrics import (
    ENVELOPE_SAMPLES,
    echo_active,
    erle_db,
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
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _describe(clip: AudioClip, label: str) -> list[str]:
    notes = []
    if clip.source_channels > 1:
        notes.append(f"{label} has {clip.source_channels} channels; they were mixed down to mono.")
    if clip.source_rate != SAMPLE_RATE:
        notes.append(f"{label} was resampled from {clip.source_rate} Hz to {SAMPLE_RATE} Hz.")
    if clip.silent:
        notes.append(f"{label} contains only silence.")
    return notes


def _level_dbfs(pcm: np.ndarray, mask: np.ndarray) -> float | None:
    n = min(len(pcm) // ENVELOPE_SAMPLES, len(mask))
    if not mask[:n].any():
        return None
    blocks = pcm[: n * ENVELOPE_SAMPLES].reshape(n, ENVELOPE_SAMPLES)[mask[:n]]
    return float(10 * np.log10(np.mean(blocks.astype(np.float64) ** 2) + 1e-20))


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
    far_clip = read_audio(far_path)
    mic_clip = read_audio(mic_path)
    notes = _describe(far_clip, f"The far end {far_path}") + _describe(
        mic_clip, f"The microphone {mic_path}"
    )
    far, mic = far_clip.pcm, mic_clip.pcm
    if len(far) != len(mic):
        shorter, name = ("far end", far_path) if len(far) < len(mic) else ("microphone", mic_path)
        gap = abs(len(far) - len(mic)) / SAMPLE_RATE
        notes.append(f"The {shorter} {name} is {gap:.2f} s shorter; it was padded with silence.")
    n = -(-max(len(far), len(mic)) // BLOCK_SAMPLES) * BLOCK_SAMPLES
    far = np.pad(far, (0, n - len(far)))
    mic = np.pad(mic, (0, n - len(mic)))

    window = DELAY_WINDOW_S * SAMPLE_RATE  # the delay is found in the first minutes: a long
    # recording's whole-length cross-correlation took ~150 MB of memory per minute of audio
    delay_s, confidence = estimate_delay(far[:window], mic[:window], SEARCH_S)
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
            f"The echo comes {delay_s * 1000:.0f} ms after the far end, beyond the canceller's "
            f"own reach of {CANCELLER_REACH_S * 1000:.0f} ms; the far end was shifted by "
            f"{shift * 1000 / SAMPLE_RATE:.0f} ms to bring it within reach."
        )
    aligned = np.concatenate([np.zeros(shift, np.float32), far])[:n]
    clean = EchoCanceller(options).process(mic, aligned)
    write_wav(output_path, clean)

    erle = before = after = None
    if found:
        active = echo_active(far, delay_s)
        settle = int(SETTLE_S * SAMPLE_RATE) // ENVELOPE_SAMPLES
        if active[settle:].sum() >= 10:  # else the file is too short to skip the first 2 s
            active[:settle] = False
        erle = erle_db(mic, clean, active)
        before = _level_dbfs(mic, active)
        after = _level_dbfs(clean, active)
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
        echo_before_dbfs=None if before is None else round(before, 1),
        echo_after_dbfs=None if after is None else round(after, 1),
        notes=notes,
    )
