"""The echo delay search (GCC-PHAT): exact delays; searched in parts, the whole-length result."""

from __future__ import annotations

import numpy as np
import pytest

from personaplex_tui.audio import SAMPLE_RATE
from personaplex_tui.audio.echo_metrics import estimate_delay
from personaplex_tui.audio.gcc_phat import gcc_phat_lags, phat_parts
from tests.echo_paths import far_talk


def _whole_length(far: np.ndarray, mic: np.ndarray, back: int, reach: int) -> np.ndarray:
    """GCC-PHAT at lags -back .. reach the way it was done: whole-length float64 FFTs."""
    n = min(len(far), len(mic))
    size = 1 << int(np.ceil(np.log2(2 * n)))
    cross = np.fft.rfft(mic[:n].astype(np.float64), size)
    cross *= np.conj(np.fft.rfft(far[:n].astype(np.float64), size))
    cross /= np.abs(cross) + 1e-12 * np.max(np.abs(cross))
    corr = np.fft.irfft(cross, size)
    return np.concatenate([corr[size - back :], corr[: reach + 1]])


def _delayed(far: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """`far` `shift` samples later at half its level, plus white noise 30 dB under it."""
    mic = 0.5 * np.concatenate([np.zeros(shift, np.float32), far])[: len(far)]
    level = np.sqrt(np.mean(far.astype(np.float64) ** 2)) * 10 ** (-30 / 20)
    return (mic + level * rng.standard_normal(len(far))).astype(np.float32)


@pytest.mark.parametrize("seconds", [8.0, 70.0])  # the whole-length FFT, then searched in parts
@pytest.mark.parametrize("kind", ["noise", "speech"])
def test_a_known_delay_is_found_to_the_sample(seconds, kind):
    rng = np.random.default_rng(1234)
    n = int(seconds * SAMPLE_RATE)
    far = (
        (0.1 * rng.standard_normal(n)).astype(np.float32) if kind == "noise" else far_talk(seconds)
    )
    delay, confidence = estimate_delay(far, _delayed(far, 1234, rng), 2.0)
    assert round(delay * SAMPLE_RATE) == 1234 and confidence > 8
    delay, _ = estimate_delay(far, _delayed(far, 1234, rng), 1.0, -0.5)  # a window both ways
    assert round(delay * SAMPLE_RATE) == 1234


@pytest.mark.parametrize(
    "seconds, back, reach",
    [(23.0, 0, 48000), (61.3, 12000, 24000), (40.0, 0, 140000), (50.0, 5, 0)],
)
def test_the_search_in_parts_gives_the_whole_length_correlation(seconds, back, reach):
    """The same lags as the whole-length FFT, to rounding (relative 1e-9), the same peak."""
    rng = np.random.default_rng(7)
    n = int(seconds * SAMPLE_RATE)
    far = far_talk(seconds)[:n]
    mic = _delayed(far, 4321, rng)[: n - 1000]  # of different lengths
    m = min(len(far), len(mic))
    size = 1 << int(np.ceil(np.log2(2 * m)))
    inner = phat_parts(size, back + reach + 1)
    assert inner  # long enough to be searched in parts
    got = gcc_phat_lags(far, mic, m, size, back, reach, inner)
    want = _whole_length(far, mic, back, reach)
    assert np.max(np.abs(got - want)) < 1e-9 * np.max(np.abs(want))
    assert np.argmax(got) == np.argmax(want)


def test_short_recordings_keep_the_whole_length_fft():
    assert phat_parts(1 << 19, 48001) == 0  # 10 s: one FFT of both, as before
    assert phat_parts(1 << 23, 48001) == 1 << 17  # 2 minutes: in parts
    assert phat_parts(1 << 23, 200000) == 1 << 18  # more lags: longer parts
