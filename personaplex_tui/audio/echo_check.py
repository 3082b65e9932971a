"""The live sound check's test signal, its measurements and its verdict in plain words."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from personaplex_tui.audio.echo_metrics import (
    ENVELOPE_SAMPLES,
    clipped_samples,
    clipping_note,
    echo_active,
    erle_db,
    estimate_delay,
)
from personaplex_tui.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from personaplex_tui.audio.offline_aec import CANCELLER_REACH_S, CONFIDENT

QUIET_S = 1.0  # silence first: the noise floor
SIGNAL_S = 8.0  # then bursts of noise, speech-like in rhythm
TAIL_S = 1.0  # then silence again, for the echo's tail
SETTLE_S = 4.0  # the app aligns the far end and the canceller converges meanwhile
GOOD_ERLE_DB = 20.0
SOME_ERLE_DB = 10.0
NOISY_DBFS = -45.0
SILENT_DBFS = -90.0  # a mic's peak under this for the whole check: digital silence, no mic


def check_signal(seed: int = 7) -> np.ndarray:
    """Quiet, then 8 s of 250 ms noise bursts (pink-ish, -18 dBFS RMS) with 100 ms gaps, then
    quiet; float32 at 24 kHz, whole 80 ms frames."""
    rng = np.random.default_rng(seed)
    quiet = np.zeros(int(QUIET_S * SAMPLE_RATE), np.float32)
    bursts = []
    on, off = int(0.25 * SAMPLE_RATE), int(0.1 * SAMPLE_RATE)
    while sum(map(len, bursts)) < SIGNAL_S * SAMPLE_RATE:
        white = rng.standard_normal(on)
        pink = np.cumsum(white) * 0.02 + white  # more low end, like a voice
        pink -= np.convolve(pink, np.ones(64) / 64, mode="same")  # no DC drift
        ramp = np.minimum(1.0, np.minimum(np.arange(on), np.arange(on)[::-1]) / 240)
        burst = pink * ramp
        burst *= 10 ** (-18 / 20) / np.sqrt(np.mean(burst**2))
        bursts += [burst.astype(np.float32), np.zeros(off, np.float32)]
    signal = np.concatenate([quiet, *bursts, np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)])
    frames = len(signal) // FRAME_SAMPLES
    return signal[: frames * FRAME_SAMPLES]


@dataclass
class LiveReport:
    """What the live check measured, and what it advises."""

    input_device: str
    output_device: str
    round_trip_ms: float | None  # from the app handing audio to the player to reading the mic
    residual_ms: float | None  # what was left for the canceller once the app had aligned
    echo_before_dbfs: float | None
    echo_after_dbfs: float | None
    erle_db: float | None
    noise_floor_dbfs: float
    mic_peak_dbfs: float
    clipped_samples: int
    works: bool
    verdict: list[str] = field(default_factory=list)
    settings: str = ""
    canceller: str = ""  # which build of AEC3 ran (EchoCanceller.name)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _db(power: float) -> float:
    return float(10 * np.log10(power + 1e-20))


def analyse(
    played: np.ndarray,
    far: np.ndarray,
    raw: np.ndarray,
    clean: np.ndarray,
    input_device: str = "",
    output_device: str = "",
    clipped: int | None = None,
) -> LiveReport:
    """Measure one run: `played` as handed to the player, `far` as the app aligned it for the
    canceller, `raw` and `clean` the microphone before and after; all frame by frame.
    `clipped`: the mic's samples at full scale as its device gave them (`MicStream`), before
    they were resampled to `raw`'s 24 kHz; None: counted in `raw`."""
    n = min(len(played), len(far), len(raw), len(clean))
    played, far, raw, clean = played[:n], far[:n], raw[:n], clean[:n]
    quiet = raw[int(0.2 * SAMPLE_RATE) : int(QUIET_S * SAMPLE_RATE)]
    noise = _db(float(np.mean(quiet.astype(np.float64) ** 2))) if len(quiet) else -100.0
    peak = float(np.max(np.abs(raw))) if n else 0.0
    clipped = clipped_samples(raw) if clipped is None else clipped

    trip, trip_conf = estimate_delay(played, raw, 2.0)
    settled = int((QUIET_S + SETTLE_S) * SAMPLE_RATE)
    residual, residual_conf = estimate_delay(far[settled:], raw[settled:], 1.0, -0.5)
    heard = trip_conf >= CONFIDENT
    erle = before = after = None
    if heard:
        active = echo_active(played, trip)
        start = int((QUIET_S + SETTLE_S) * SAMPLE_RATE) // ENVELOPE_SAMPLES
        active[:start] = False
        if active.any():
            erle = erle_db(raw, clean, active)
            blocks = n // ENVELOPE_SAMPLES
            r = raw[: blocks * ENVELOPE_SAMPLES].reshape(blocks, -1).astype(np.float64)
            c = clean[: blocks * ENVELOPE_SAMPLES].reshape(blocks, -1).astype(np.float64)
            before = _db(float(np.mean(r[active[:blocks]] ** 2)))
            after = _db(float(np.mean(c[active[:blocks]] ** 2)))
    report = LiveReport(
        input_device=input_device,
        output_device=output_device,
        round_trip_ms=round(trip * 1000, 1) if heard else None,
        residual_ms=round(residual * 1000, 1) if heard and residual_conf >= CONFIDENT else None,
        echo_before_dbfs=None if before is None else round(before, 1),
        echo_after_dbfs=None if after is None else round(after, 1),
        erle_db=None if erle is None else round(erle, 1),
        noise_floor_dbfs=round(noise, 1),
        mic_peak_dbfs=round(_db(peak**2), 1),
        clipped_samples=clipped,
        works=False,
    )
    _advise(report, heard)
    return report


def _advise(r: LiveReport, heard: bool) -> None:
    words = r.verdict
    if r.clipped_samples:
        words.append(clipping_note(r.clipped_samples, when=" while the speaker played"))
    if r.noise_floor_dbfs > NOISY_DBFS:
        words.append(
            f"The room or the microphone is noisy ({r.noise_floor_dbfs:.0f} dBFS with nothing "
            "playing): keep noise suppression on."
        )
    if r.mic_peak_dbfs < SILENT_DBFS:  # (it "did not hear the test signal" either)
        words.append(
            f"The microphone delivered only silence (peak {r.mic_peak_dbfs:.0f} dBFS): it is "
            "muted, unplugged or not a microphone; choose another input device (`ppx-tui "
            "devices` lists them) and run the check again."
        )
        r.settings = "ppx-tui sound-check --input-device NAME (another microphone)"
        return
    if not heard:
        r.works = not r.clipped_samples
        words.append(
            "The microphone did not hear the test signal: no echo to cancel (the speaker may be "
            "muted or far away, or these are headphones). Duplex will work as it is."
        )
        r.settings = "ppx-tui --mode duplex"
        return
    if (r.erle_db is not None and r.erle_db < 0) or (
        r.echo_before_dbfs is not None and r.echo_before_dbfs < SILENT_DBFS
    ):  # heard at the start, then gone: not a measurement of this echo path
        words.append(
            "The echo was heard at first but not through the whole check (a device, a volume "
            "or the sound server's routing changed while it ran): run the check again."
        )
        r.settings = "ppx-tui sound-check (again, with nothing changed while it runs)"
        return
    if r.residual_ms is None or not 0 <= r.residual_ms / 1000 <= CANCELLER_REACH_S:
        words.append(
            f"The echo comes {r.round_trip_ms:.0f} ms after the app plays a sound, longer "
            "than the canceller can reach after the app's alignment: use headphones, or an "
            "output device with less latency."
        )
        r.settings = (
            "headphones, or ppx-tui --mode duplex --no-echo-cancellation --echo-suppression"
        )
        return
    erle = r.erle_db or 0.0
    if erle >= GOOD_ERLE_DB and r.clipped_samples:  # (the volume's advice is above)
        words.append(
            f"The echo canceller removed {erle:.0f} dB of the echo that did not clip (round trip "
            f"{r.round_trip_ms:.0f} ms): with the volume lower, run the check again; duplex "
            "without headphones should then work here."
        )
        r.settings = "ppx-tui sound-check again, with the speaker or input volume lower"
    elif erle >= GOOD_ERLE_DB:
        r.works = True
        words.append(
            f"The echo canceller removed {erle:.0f} dB of the speaker's echo (round trip "
            f"{r.round_trip_ms:.0f} ms): duplex without headphones will work here."
        )
        r.settings = (
            "ppx-tui --mode duplex (echo cancellation and noise suppression on: the defaults)"
        )
    elif erle >= SOME_ERLE_DB:
        words.append(
            f"The echo canceller removed only {erle:.0f} dB of the echo: the model may still "
            "hear itself. Lower the speaker volume or move the microphone away from it, or use "
            "headphones."
        )
        r.settings = "ppx-tui --mode duplex, with the speaker quieter; headphones are safer"
    else:
        words.append(
            f"The echo canceller removed only {erle:.0f} dB of the echo: duplex without "
            "headphones will not work well here. Use headphones, or mute the mic while the "
            "agent speaks."
        )
        r.settings = (
            "headphones, or ppx-tui --mode duplex --no-echo-cancellation --echo-suppression"
        )
