"""Synthetic echo paths for the canceller's tests: shared speech as far and near ends, a delay,
a decaying impulse response, a gain and -50 dBFS noise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from personaplex_tui.audio import SAMPLE_RATE, read_audio

AUDIO = Path(__file__).parent / "data" / "audio"
NOISE_DBFS = -50.0


def clip(name: str) -> np.ndarray:
    return read_audio(AUDIO / name).pcm


def talk(names: list[str], gap_s: float, seconds: float) -> np.ndarray:
    """The clips one after another with `gap_s` of silence between them, repeated to `seconds`."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    total = 0
    while total < seconds * SAMPLE_RATE:
        for name in names:
            parts += [clip(name), gap]
            total += len(parts[-2]) + len(gap)
    out = np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]
    return out[: len(out) // 240 * 240]


def impulse_response(
    rng: np.random.Generator, tail_s: float = 0.12, decay_s: float = 0.03
) -> np.ndarray:
    """A room: a direct path then exponentially decaying random reflections, unit energy."""
    t = np.arange(int(tail_s * SAMPLE_RATE)) / SAMPLE_RATE
    h = rng.standard_normal(len(t)) * np.exp(-t / decay_s)
    h[0] += 3.0
    return h / np.sqrt(np.sum(h**2))


def echo(far: np.ndarray, delay_s: float, gain: float, ir: np.ndarray) -> np.ndarray:
    """`far` through the room `ir`, `delay_s` later, times `gain` (same length as `far`)."""
    wet = np.convolve(far, ir)[: len(far)]
    shift = int(round(delay_s * SAMPLE_RATE))
    return (np.concatenate([np.zeros(shift), wet])[: len(far)] * gain).astype(np.float32)


def noise(n: int, rng: np.random.Generator, dbfs: float = NOISE_DBFS) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


# -- the three cases of the issue, measured the same way by the tests and the benchmark ---------
CASES = [(0.02, 1.0), (0.12, 0.6), (0.25, 0.3)]  # (echo delay s, echo gain)
SETTLE_S = 2.0  # the canceller converges over the first 2 s; measurements start after them
JUMP_AT_S = 10.0
JUMP_S = 0.06
ENV_FLOOR_DB = -60.0  # envelopes are floored here, so that silences count as equal


def far_talk(seconds: float = 20.0) -> np.ndarray:
    return talk(["greeting.wav", "shipping.wav", "weather.wav"], 0.4, seconds)


def near_talk(n: int) -> np.ndarray:
    """Another talker (other sentences in another order, longer pauses), starting at 4 s."""
    near = talk(["weather.wav", "greeting.wav", "shipping.wav"], 1.5, n / SAMPLE_RATE)
    return np.concatenate([np.zeros(4 * SAMPLE_RATE, np.float32), near])[:n]


def envelope_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 20 ms log-RMS envelopes (dBFS, floored at -60)."""
    from personaplex_tui.audio.echo_metrics import envelope_db

    ea = np.maximum(envelope_db(a), ENV_FLOOR_DB)
    eb = np.maximum(envelope_db(b), ENV_FLOOR_DB)
    n = min(len(ea), len(eb))
    return float(np.corrcoef(ea[:n], eb[:n])[0, 1])


def measure_case(
    delay_s: float,
    gain: float,
    options: object = None,
    canceller: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Every figure of one echo path: far end alone, double talk, and a 60 ms delay jump.

    Each run takes a fresh `canceller()` (by default `EchoCanceller(options)`): anything with
    `process(mic, far) -> clean` at 24 kHz."""
    from personaplex_tui.audio.aec import EchoCanceller
    from personaplex_tui.audio.echo_metrics import ENVELOPE_SAMPLES, echo_active, erle_db

    def make() -> Any:
        return canceller() if canceller is not None else EchoCanceller(options)  # type: ignore[arg-type]

    rng = np.random.default_rng(17)
    ir = impulse_response(rng)
    far = far_talk()
    n = len(far)
    settle = int(SETTLE_S * SAMPLE_RATE)
    blocks = settle // ENVELOPE_SAMPLES
    hiss = noise(n, rng)
    wet = echo(far, delay_s, gain, ir)
    out: dict[str, float] = {"delay_ms": delay_s * 1000, "gain": gain}

    mic = wet + hiss
    clean = make().process(mic, far)
    active = echo_active(far, delay_s)
    active[:blocks] = False
    out["erle_alone_db"] = erle_db(mic, clean, active)

    near = near_talk(n)
    mic = wet + hiss + near
    clean = make().process(mic, far)
    s = slice(settle, None)
    out["corr_clean_near"] = envelope_correlation(clean[s], near[s])
    out["corr_clean_echo"] = envelope_correlation(clean[s], wet[s])
    out["corr_mic_echo"] = envelope_correlation(mic[s], wet[s])
    out["corr_near_echo"] = envelope_correlation(near[s], wet[s])
    near_frames = near[s][: (n - settle) // ENVELOPE_SAMPLES * ENVELOPE_SAMPLES].reshape(
        -1, ENVELOPE_SAMPLES
    )
    clean_frames = clean[s][: len(near_frames) * ENVELOPE_SAMPLES].reshape(-1, ENVELOPE_SAMPLES)
    near_p = np.mean(near_frames.astype(np.float64) ** 2, axis=1)
    clean_p = np.mean(clean_frames.astype(np.float64) ** 2, axis=1)
    talking = 10 * np.log10(near_p + 1e-20) > 10 * np.log10(near_p.max()) - 30
    echoing = echo_active(far, delay_s)[blocks : blocks + len(near_p)]

    def level(frames: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(clean_p[frames]) / np.sum(near_p[frames])))

    out["level_vs_near_db"] = level(talking)  # the goal's figure: every block the near end talks
    out["level_double_talk_db"] = level(talking & echoing)  # of those, the ones with echo
    out["level_near_alone_db"] = level(talking & ~echoing)  # and the ones without

    jump = int(JUMP_AT_S * SAMPLE_RATE)
    later = echo(far, delay_s + JUMP_S, gain, ir)
    mic = np.concatenate([wet[:jump], later[jump:]]) + hiss
    clean = make().process(mic, far)
    active = echo_active(far, delay_s + JUMP_S)

    def window(t0: float, t1: float) -> float:
        a, b = int((JUMP_AT_S + t0) * SAMPLE_RATE), int((JUMP_AT_S + t1) * SAMPLE_RATE)
        return erle_db(mic[a:b], clean[a:b], active[a // ENVELOPE_SAMPLES : b // ENVELOPE_SAMPLES])

    out["erle_jump_0_1s_db"] = window(0.0, 1.0)
    out["erle_jump_1_2s_db"] = window(1.0, 2.0)
    out["erle_jump_2_4s_db"] = window(2.0, 4.0)
    return out
