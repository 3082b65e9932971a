"""Measuring echo: the delay between far end and microphone, echo return loss enhancement (ERLE),
20 ms log-RMS envelopes, and a live meter of both for the TUI."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from personaplex_tui.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from personaplex_tui.audio.gcc_phat import gcc_phat_lags, phat_parts

ENVELOPE_SAMPLES = SAMPLE_RATE // 50  # 20 ms
FLOOR_DB = -100.0
ACTIVE_BELOW_PEAK_DB = 30.0  # a far-end frame within 30 dB of the loudest one is "active"
CLIP = 0.99  # a microphone sample this loud or louder counts as clipped (the sound check's)
# A sample on its way out (to a speaker, at the rate it plays, or to a 16-bit file) this loud or
# louder is at full scale or past it: the conversion to the device's or the file's integers
# cuts what is past it (the values are exact here, where a mic's clipped samples read under 1).
FULL_SCALE = 1.0


def clipped_samples(pcm: np.ndarray, level: float = CLIP) -> int:
    """How many of `pcm`'s samples are at full scale (|sample| >= `level`: a mic's CLIP, or
    FULL_SCALE for what a speaker or a file is given)."""
    return int(np.count_nonzero(np.abs(pcm) >= level))


def frame_clipped(mic: object, raw: np.ndarray) -> int:
    """The samples at full scale behind the frame `raw` just read from `mic`: as its device or
    file gave them (its `last_clipped`: before resampling, which moves peaks, and before any
    processing), else counted in `raw` itself."""
    count = getattr(mic, "last_clipped", None)
    return clipped_samples(raw) if count is None else int(count)


def played_clipped(speaker: object) -> int | None:
    """The samples at full scale or past it that the frame `speaker` just took was turned into
    for its device or file (its `last_clipped`: after resampling, which moves peaks); None when
    it does not say, or did not take the frame (then the frame itself decides, see `LevelMeter`)."""
    count = getattr(speaker, "last_clipped", None)
    return None if count is None else int(count)


def clipped_per_channel(frames: np.ndarray) -> np.ndarray:
    """How many samples of each channel of `frames` (float [n, channels]) are at full scale:
    counted before any mix to mono, where one clipped channel and a quiet one average to half."""
    return np.count_nonzero(np.abs(frames) >= CLIP, axis=0)


def clipped_per_frame(frames: np.ndarray, rate: int, count: int) -> np.ndarray:
    """How many samples of `frames` (float [n, channels] at `rate` Hz, every channel) are at
    full scale in each 80 ms frame of its 24 kHz version (int64 [count]): the file's own samples
    decide, as a device's own blocks do (resampling moves peaks over full scale or under it)."""
    out = np.zeros(count, np.int64)
    step = 1 << 20  # frames at a time: the positions of a file clipped throughout stay small
    for start in range(0, len(frames) if count else 0, step):
        rows = np.nonzero(np.abs(frames[start : start + step]) >= CLIP)[0]
        if len(rows):
            at = (rows + start) * SAMPLE_RATE // (rate * FRAME_SAMPLES)
            out += np.bincount(np.minimum(at, count - 1), minlength=count)
    return out


def clipped_channels_words(counts: list[int] | tuple[int, ...]) -> str:
    """Where a recording of `len(counts)` channels clipped, for `clipping_note`'s `when`: empty
    for one channel, or when all of them did; else " in its left channel", " in channel 3 of 4"."""
    which = [k for k, count in enumerate(counts) if count]
    if len(counts) < 2 or len(which) in (0, len(counts)):
        return ""
    if len(counts) == 2:
        return f" in its {('left', 'right')[which[0]]} channel"
    numbers = [str(k + 1) for k in which]
    listed = numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} and {numbers[-1]}"
    return f" in channel{'s' if len(numbers) > 1 else ''} {listed} of {len(counts)}"


def clipping_note(count: int, mic: str = "The microphone", when: str = "") -> str:
    """The sound check's sentence for a microphone that clipped `count` samples (`mic` names
    it, `when` says during what), live and offline alike."""
    return (
        f"{mic} clipped ({count} samples at full scale){when}: lower the speaker or input "
        "volume; clipped echo cannot be removed."
    )


def envelope_db(pcm: np.ndarray, frame: int = ENVELOPE_SAMPLES) -> np.ndarray:
    """Log-RMS level (dBFS) of each whole `frame`-sample block of `pcm`, floored at -100."""
    pcm = np.asarray(pcm, dtype=np.float64).reshape(-1)
    n = len(pcm) // frame
    power = np.mean(pcm[: n * frame].reshape(n, frame) ** 2, axis=1)
    return np.maximum(10.0 * np.log10(power + 1e-20), FLOOR_DB)


def estimate_delay(
    far: np.ndarray, mic: np.ndarray, max_delay_s: float = 1.0, min_delay_s: float = 0.0
) -> tuple[float, float]:
    """How long after `far` its echo appears in `mic`, by generalized cross-correlation with
    phase transform (GCC-PHAT). Returns (delay in seconds, confidence): the confidence is how
    far the peak stands above the correlation's spread (above ~8 the delay is trustworthy).
    Only delays from `min_delay_s` (negative: the mic ahead of the far end) to `max_delay_s`
    are searched."""
    far, mic = np.asarray(far).reshape(-1), np.asarray(mic).reshape(-1)
    n = min(len(far), len(mic))
    if n < ENVELOPE_SAMPLES or not np.any(far[:n]) or not np.any(mic[:n]):
        return 0.0, 0.0
    size = 1 << int(np.ceil(np.log2(2 * n)))
    reach = min(int(max_delay_s * SAMPLE_RATE), n - 1)
    back = min(int(max(-min_delay_s, 0.0) * SAMPLE_RATE), n - 1)
    inner = phat_parts(size, back + reach + 1)
    if inner:  # a long recording: the same lags without the whole-length arrays
        lags = gcc_phat_lags(far, mic, n, size, back, reach, inner)
    else:
        cross = np.fft.rfft(np.asarray(mic[:n], np.float64), size)
        cross *= np.conj(np.fft.rfft(np.asarray(far[:n], np.float64), size))
        cross /= np.abs(cross) + 1e-12 * np.max(np.abs(cross))
        corr = np.fft.irfft(cross, size)
        lags = (
            np.concatenate([corr[size - back :], corr[: reach + 1]]) if back else corr[: reach + 1]
        )
    best = int(np.argmax(lags))
    spread = float(np.std(lags)) or 1e-12
    return (best - back) / SAMPLE_RATE, float((lags[best] - np.mean(lags)) / spread)


def echo_active(far: np.ndarray, delay_s: float, frame: int = ENVELOPE_SAMPLES) -> np.ndarray:
    """Per `frame` block of the microphone: True where the far end, shifted by the echo delay,
    is within 30 dB of its loudest block (its echo is then in the microphone)."""
    shift = int(round(delay_s * SAMPLE_RATE))
    far = np.asarray(far, dtype=np.float64).reshape(-1)
    shifted = np.concatenate([np.zeros(shift), far])[: len(far)]
    return active_blocks(block_power(shifted, frame))


def active_blocks(far_power: np.ndarray) -> np.ndarray:
    """`echo_active` from the shifted far end's power in each block (`block_power`)."""
    env = np.maximum(10.0 * np.log10(far_power + 1e-20), FLOOR_DB)
    return env > np.max(env) - ACTIVE_BELOW_PEAK_DB


def erle_db(
    mic: np.ndarray,
    cleaned: np.ndarray,
    active: np.ndarray,
    frame: int = ENVELOPE_SAMPLES,
) -> float:
    """Echo return loss enhancement: 10 log10 of the microphone's energy over the cleaned
    signal's, summed over the blocks marked `active` (far end audible, near end silent)."""
    return erle_from_power(block_power(mic, frame), block_power(cleaned, frame), active)


def erle_from_power(mic_env: np.ndarray, out_env: np.ndarray, active: np.ndarray) -> float:
    """`erle_db` from the microphone's and the cleaned signal's power in each block."""
    n = min(len(mic_env), len(out_env), len(active))
    mask = np.asarray(active[:n], dtype=bool)
    if not mask.any():
        return float("nan")
    return float(
        10.0 * np.log10((mic_env[:n][mask].sum() + 1e-20) / (out_env[:n][mask].sum() + 1e-20))
    )


def block_power(pcm: np.ndarray, frame: int = ENVELOPE_SAMPLES) -> np.ndarray:
    """Mean square of each whole `frame`-sample block of `pcm` (float64)."""
    pcm = np.asarray(pcm, dtype=np.float64).reshape(-1)
    n = len(pcm) // frame
    return np.mean(pcm[: n * frame].reshape(n, frame) ** 2, axis=1)


@dataclass(frozen=True)
class EchoReading:
    """What the live meter measured: the echo's delay and how much of it was removed."""

    delay_ms: float | None  # None until the far end and its echo were clear enough to measure
    erle_db: float | None  # None until the far end was audible for a while
    processing_ms: float  # mean cost of processing one 80 ms frame


class EchoMeter:
    """Measures the echo live from the processing thread; `reading()` from any thread.

    ERLE: the energy of the raw microphone over the cleaned one, in the last `window_s`
    seconds of frames where the far end was audible. Delay: GCC-PHAT of the last `window_s`
    seconds of far end (as handed to the speaker) against the raw microphone, every
    `delay_every_s` seconds, kept when confident; `base_delay_s` (the alignment already
    applied to the far end) is added.
    """

    def __init__(self, window_s: float = 2.0, delay_every_s: float = 0.5) -> None:
        self._frames = max(1, int(window_s * SAMPLE_RATE / FRAME_SAMPLES))
        self._far: deque[np.ndarray] = deque(maxlen=self._frames)
        self._mic: deque[np.ndarray] = deque(maxlen=self._frames)
        self._powers: deque[tuple[float, float, float]] = deque(maxlen=self._frames)
        self._every = max(1, int(delay_every_s * SAMPLE_RATE / FRAME_SAMPLES))
        self._count = 0
        self._lock = threading.Lock()
        self._delay_ms: float | None = None
        self.residual_s: float | None = None  # the last confident far-to-mic delay, unread
        self._cost_s = 0.0
        self._cost_n = 0
        self.base_delay_s = 0.0

    def update(self, far: np.ndarray, mic: np.ndarray, cleaned: np.ndarray, cost_s: float) -> None:
        """One frame: the aligned far end, the raw and the cleaned microphone, the time taken."""
        far_p = float(np.mean(np.square(far, dtype=np.float64)))
        self._far.append(np.asarray(far, np.float32))
        self._mic.append(np.asarray(mic, np.float32))
        powers = (
            far_p,
            float(np.mean(np.square(mic, dtype=np.float64))),
            float(np.mean(np.square(cleaned, dtype=np.float64))),
        )
        self._count += 1
        delay = None
        if self._count % self._every == 0 and len(self._far) == self._frames:
            d, confidence = estimate_delay(
                np.concatenate(self._far), np.concatenate(self._mic), 1.0, -0.5
            )
            if confidence >= 8.0:
                delay = d
                self.residual_s = d
        with self._lock:
            self._powers.append(powers)
            self._cost_s += cost_s
            self._cost_n += 1
            if delay is not None:
                self._delay_ms = 1000.0 * (delay + self.base_delay_s)

    def restart_delay(self) -> None:
        """The alignment changed: measure the delay afresh (the window holds the old one)."""
        self._far.clear()
        self._mic.clear()
        self.residual_s = None

    def reading(self) -> EchoReading:
        with self._lock:
            powers = np.array(self._powers) if self._powers else np.zeros((0, 3))
            delay = self._delay_ms
            cost = 1000.0 * self._cost_s / self._cost_n if self._cost_n else 0.0
        erle = None
        if len(powers):
            far_db = 10.0 * np.log10(powers[:, 0] + 1e-20)
            active = far_db > max(float(np.max(far_db)) - ACTIVE_BELOW_PEAK_DB, -60.0)
            if active.sum() >= 5:
                erle = float(
                    10.0
                    * np.log10(
                        (powers[active, 1].sum() + 1e-20) / (powers[active, 2].sum() + 1e-20)
                    )
                )
        return EchoReading(delay, erle, cost)
