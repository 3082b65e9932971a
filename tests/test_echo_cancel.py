"""The echo canceller on synthetic echo paths (shared speech, 20-250 ms, decaying room, gain
0.3-1.0, -50 dBFS noise): far end alone, double talk and a 60 ms delay jump.

ERLE is measured over the 20 ms blocks after the first 2 s in which the far end (shifted by
the echo delay) is within 30 dB of its loudest block. Double talk: correlations of 20 ms
log-RMS envelopes (dBFS, floored at -60) after 2 s, and the cleaned track's energy over the
near end's, summed over the 20 ms blocks after 2 s where the near end talks (within 30 dB of its
loudest block); the benchmark also splits that into the blocks with and without echo.
`python benchmarks/echo_cancel.py` prints every figure as a table.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest

from personaplex_tui.audio.aec import BACKENDS, BLOCK_SAMPLES, EchoCanceller, ProcessingOptions
from personaplex_tui.audio.apm_calls import DirectCalls, PublicCalls, open_calls
from personaplex_tui.audio.echo_metrics import estimate_delay
from tests.echo_paths import CASES, echo, far_talk, impulse_response, measure_case, noise

IDS = [f"{round(d * 1000)}ms-gain{g}" for d, g in CASES]
# Both builds of AEC3 (personaplex_tui/audio/aec.py): "webrtc" is the one the app uses where it
# is built (`./dev test` builds it, so it must be here), "livekit" the fallback.
PATHS = [
    pytest.param(d, g, b, id=f"{b}-{i}")
    for b in BACKENDS
    for (d, g), i in zip(CASES, IDS, strict=True)
]


@cache
def figures(delay_s: float, gain: float, backend: str) -> dict[str, float]:
    return measure_case(delay_s, gain, canceller=lambda: EchoCanceller(backend=backend))


@pytest.mark.parametrize(("delay_s", "gain", "backend"), PATHS)
def test_far_end_alone_is_cancelled_by_25_db(delay_s: float, gain: float, backend: str) -> None:
    assert figures(delay_s, gain, backend)["erle_alone_db"] >= 25.0


@pytest.mark.parametrize(("delay_s", "gain", "backend"), PATHS)
def test_double_talk_keeps_the_near_end_and_drops_the_echo(
    delay_s: float, gain: float, backend: str
) -> None:
    f = figures(delay_s, gain, backend)
    assert f["corr_clean_near"] >= 0.7  # the cleaned track follows the talker
    assert f["corr_mic_echo"] >= 0.4  # before cancelling, the microphone followed the echo
    assert f["corr_clean_echo"] <= 0.15  # after, it no longer does
    assert f["corr_clean_echo"] <= f["corr_near_echo"] + 0.1


LEVEL_PATHS = [
    pytest.param(
        d,
        g,
        b,
        id=f"{b}-{i}",
        marks=pytest.mark.xfail(
            strict=True,
            # Measured -3.9 dB: -5.8 dB in the blocks with echo, -1.1 dB in those without.
            # livekit exposes no AEC3 tuning; the library built here is tuned for this
            # (ppx_apm.cc) and measures -2.7 dB. AGC lifts livekit's to +0.8 dB only by gain
            # and costs ERLE (20-31 dB). docs/echo-cancellation.md has every figure.
            reason="livekit's AEC3: echo as loud as the talker dips the near end ~3.9 dB",
        ),
    )
    if b == "livekit" and g >= 1.0
    else pytest.param(d, g, b, id=f"{b}-{i}")
    for b in BACKENDS
    for (d, g), i in zip(CASES, IDS, strict=True)
]


@pytest.mark.parametrize(("delay_s", "gain", "backend"), LEVEL_PATHS)
def test_double_talk_keeps_the_near_end_level_within_3_db(
    delay_s: float, gain: float, backend: str
) -> None:
    assert abs(figures(delay_s, gain, backend)["level_vs_near_db"]) <= 3.0


@pytest.mark.parametrize(("delay_s", "gain", "backend"), PATHS)
def test_a_60_ms_delay_jump_is_cancelled_again_within_2_s(
    delay_s: float, gain: float, backend: str
) -> None:
    f = figures(delay_s, gain, backend)
    assert f["erle_jump_1_2s_db"] >= 20.0
    assert f["erle_jump_2_4s_db"] >= 20.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_a_far_end_the_canceller_passes_speech_through(backend: str) -> None:
    speech = far_talk(6.0)
    clean = EchoCanceller(ProcessingOptions(noise_suppression=False), backend=backend).process(
        speech, np.zeros_like(speech)
    )
    late = slice(len(speech) // 3, None)  # past the high-pass filter's and the AEC's start
    ratio = np.sum(clean[late].astype(np.float64) ** 2) / np.sum(
        speech[late].astype(np.float64) ** 2
    )
    assert abs(10 * np.log10(ratio)) < 1.5


def test_process_refuses_blocks_that_are_not_whole_10_ms() -> None:
    aec = EchoCanceller()
    with pytest.raises(ValueError):
        aec.process(
            np.zeros(BLOCK_SAMPLES + 1, np.float32), np.zeros(BLOCK_SAMPLES + 1, np.float32)
        )


def test_delay_estimate_finds_the_echo_delay() -> None:
    far = far_talk(6.0)
    shift = int(0.173 * 24000)
    mic = 0.4 * np.concatenate([np.zeros(shift, np.float32), far])[: len(far)]
    delay, confidence = estimate_delay(far, mic)
    assert abs(delay - 0.173) < 0.002 and confidence > 8


def test_direct_calls_give_the_documented_apis_output_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    far = far_talk(6.0)
    mic = echo(far, 0.05, 0.6, impulse_response(rng)) + noise(len(far), rng)
    mic[3 * 24000 :] += far_talk(9.0)[6 * 24000 :][: len(mic) - 3 * 24000] * 0.5  # double talk
    direct = EchoCanceller(stream_delay_ms=40, backend="livekit")
    public = EchoCanceller(stream_delay_ms=40, direct_calls=False)
    assert direct.direct_calls and not public.direct_calls  # livekit 1.x: the fast path is on
    frames = [slice(i, i + 1920) for i in range(0, len(far) - 1919, 1920)]
    a = np.concatenate([direct.process(mic[s], far[s]) for s in frames])
    b = np.concatenate([public.process(mic[s], far[s]) for s in frames])
    assert np.array_equal(a, b)
    assert np.sum(a**2) < 0.5 * np.sum(mic[: len(a)] ** 2)  # and it did cancel something


def test_a_refused_direct_call_raises_livekits_reason() -> None:
    from livekit import rtc

    apm = rtc.AudioProcessingModule(echo_cancellation=True)
    calls = DirectCalls(apm, 24000, BLOCK_SAMPLES)
    misaligned = np.frombuffer(bytearray(2 * BLOCK_SAMPLES + 2), np.int16, BLOCK_SAMPLES, 1)
    calls._fwd, calls._fwd_ok = calls._serialize("apm_process_stream", misaligned, 24000)
    with pytest.raises(RuntimeError, match="aligned"):
        calls.forward()


def test_another_livekit_major_version_takes_the_documented_api() -> None:
    from livekit import rtc

    apm = rtc.AudioProcessingModule()
    other = SimpleNamespace(__version__="2.0.0", AudioFrame=rtc.AudioFrame)
    assert isinstance(open_calls(other, apm, 24000, BLOCK_SAMPLES), PublicCalls)
    assert isinstance(open_calls(rtc, apm, 24000, BLOCK_SAMPLES), DirectCalls)
