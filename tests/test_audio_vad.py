"""Voice activity: the three utterances of conversation.wav, nothing in silence or a click."""

from pathlib import Path

import numpy as np
import pytest

from personaplex_tui.audio import (
    SileroVad,
    UtteranceEnded,
    UtteranceSegmenter,
    UtteranceStarted,
    read_audio,
)

AUDIO = Path(__file__).parent / "data" / "audio"
SR = 24000
TOLERANCE_S = 0.150


def speech_bounds(pcm: np.ndarray) -> tuple[float, float]:
    """Where the voice starts and stops inside a component file (-50 dBFS), in seconds.

    The espeak files carry their own lead-in and 0.23-0.35 s of trailing silence, so the
    speech boundaries are the files' lengths minus that, measured here, not hard-coded.
    """
    loud = np.nonzero(np.abs(pcm) > 10 ** (-50 / 20))[0]
    return loud[0] / SR, (loud[-1] + 1) / SR


def expected_utterances() -> list[tuple[float, float]]:
    """conversation.wav = 0.5 s silence, greeting, 3 s, shipping, 3 s, weather, 3 s."""
    t = 0.5
    bounds = []
    for name in ("greeting", "shipping", "weather"):
        pcm = read_audio(AUDIO / f"{name}.wav").pcm
        a, b = speech_bounds(pcm)
        bounds.append((t + a, t + b))
        t += len(pcm) / SR + 3.0
    return bounds


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def run(segmenter: UtteranceSegmenter, pcm: np.ndarray, frame: int = 1920):
    events = []
    for i in range(0, len(pcm), frame):
        for e in segmenter.feed(pcm[i : i + frame]):
            events.append((i / SR, e))
    return events


def test_conversation_has_three_utterances_at_the_known_boundaries(vad):
    conv = read_audio(AUDIO / "conversation.wav").pcm
    expected = expected_utterances()
    assert abs(len(conv) / SR - (expected[-1][1] + 3.0)) < 0.5  # the layout is as documented
    seg = UtteranceSegmenter(vad)
    events = run(seg, conv)
    ends = [e for _, e in events if isinstance(e, UtteranceEnded)]
    starts = [e for _, e in events if isinstance(e, UtteranceStarted)]
    assert len(ends) == 3 and len(starts) == 3
    for (start, end), got, began in zip(expected, ends, starts, strict=True):
        assert abs(got.start_s - start) <= TOLERANCE_S, (got.start_s, start)
        assert abs(got.end_s - end) <= TOLERANCE_S, (got.end_s, end)
        assert began.start_s == got.start_s
        # The audio spans the speech plus the rolls, and it is the conversation's audio.
        a = round((got.start_s - seg.pre_roll_s) * SR)
        np.testing.assert_array_equal(got.audio, conv[a : a + len(got.audio)])
        assert abs(len(got.audio) / SR - (got.duration_s + seg.pre_roll_s + seg.post_roll_s)) < 0.01
    # Ends are announced about 1 s of silence after the speech, not sooner.
    for when, e in events:
        if isinstance(e, UtteranceEnded):
            assert e.end_s + seg.end_silence_s - 0.05 <= when + 0.08 <= e.end_s + 1.3
    assert not seg.in_utterance and seg.finish() == []


def test_silence_and_noise_floor_give_nothing(vad):
    rng = np.random.default_rng(1)
    quiet = (10 ** (-60 / 20) * rng.standard_normal(SR * 5)).astype(np.float32)
    assert run(UtteranceSegmenter(vad), np.zeros(SR * 3, np.float32)) == []
    assert run(UtteranceSegmenter(vad), quiet) == []


def test_too_short_speech_is_ignored(vad):
    greeting = read_audio(AUDIO / "greeting.wav").pcm
    a, _ = speech_bounds(greeting)
    burst = greeting[int(a * SR) : int(a * SR) + int(0.2 * SR)]  # 200 ms of voice
    pcm = np.concatenate([np.zeros(SR, np.float32), burst, np.zeros(2 * SR, np.float32)])
    assert run(UtteranceSegmenter(vad, min_speech_s=0.5), pcm) == []
    # The same burst passes when the minimum is lower: the detector did hear it.
    events = run(UtteranceSegmenter(vad, min_speech_s=0.05), pcm)
    assert [type(e) for _, e in events] == [UtteranceStarted, UtteranceEnded]


def test_finish_ends_an_utterance_in_progress(vad):
    shipping = read_audio(AUDIO / "shipping.wav").pcm
    seg = UtteranceSegmenter(vad)
    pcm = np.concatenate([np.zeros(SR // 2, np.float32), shipping[: 2 * SR]])
    events = run(seg, pcm)
    assert [type(e) for _, e in events] == [UtteranceStarted]
    assert seg.in_utterance
    (ended,) = seg.finish()
    assert isinstance(ended, UtteranceEnded) and ended.end_s > 2.0
    assert not seg.in_utterance


def test_max_utterance_forces_an_end_and_reset_restarts_time(vad):
    conv = read_audio(AUDIO / "conversation.wav").pcm
    seg = UtteranceSegmenter(vad, max_utterance_s=1.0)
    ends = [e for _, e in run(seg, conv[: 5 * SR]) if isinstance(e, UtteranceEnded)]
    assert ends and ends[0].duration_s <= 1.05
    seg.reset()
    assert seg.time_s == 0.0 and not seg.in_utterance


def test_any_frame_size_gives_the_same_boundaries(vad):
    conv = read_audio(AUDIO / "conversation.wav").pcm[: 6 * SR]
    a = [e for _, e in run(UtteranceSegmenter(vad), conv, 1920) if isinstance(e, UtteranceEnded)]
    b = [e for _, e in run(UtteranceSegmenter(vad), conv, 700) if isinstance(e, UtteranceEnded)]
    assert len(a) == len(b) == 1
    assert abs(a[0].start_s - b[0].start_s) < 0.04 and abs(a[0].end_s - b[0].end_s) < 0.04
