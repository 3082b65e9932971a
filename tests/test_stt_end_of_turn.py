"""The end-of-turn decision on synthetic head outputs shaped like the real head's (about 1 in
silence, about 0 while someone speaks, in between during a pause)."""

from __future__ import annotations

import numpy as np
import pytest

from model.stt.end_of_turn import EndOfTurnConfig, EndOfTurnDetector

SILENCE_RULE_FRAMES = round(1.0 * 12.5)  # the fixed rule: one second of silence


def heads(p: float) -> list[float]:
    """Four heads; only head 2 matters by default, the others are decoys."""
    return [1 - p, 0.5, p, 0.0]


def run(track: list[float], detector: EndOfTurnDetector | None = None) -> list[int]:
    detector = detector or EndOfTurnDetector()
    return [i for i, p in enumerate(track) if detector.feed(heads(p))]


def ramp(start: float, end: float, frames: int) -> list[float]:
    return list(np.linspace(start, end, frames))


def test_silence_before_speech_never_ends_a_turn() -> None:
    assert run([0.98] * 100) == []


def test_end_of_speech_ends_the_turn_once_and_sooner_than_the_silence_rule() -> None:
    speech_end = 10 + 30
    track = [0.97] * 10 + [0.02] * 30 + ramp(0.1, 0.95, 5) + [0.95] * 40
    fired = run(track)
    # the 3-frame mean first reaches 0.5 on the ramp's 4th frame: (0.3125 + 0.525 + 0.7375) / 3
    assert fired == [speech_end + 3]
    latency = fired[0] - speech_end + 1  # 80 ms steps after the last speech frame
    assert latency == 4 and latency < SILENCE_RULE_FRAMES


def test_pauses_mid_sentence_do_not_end_the_turn() -> None:
    track = [0.02] * 20 + [0.35] * 8 + [0.02] * 15 + [0.4] * 6 + [0.02] * 10 + [0.9] * 20
    fired = run(track)
    assert fired == [len(track) - 20 + 1]  # only the real end (after 2 frames of smoothing)


def test_a_short_backchannel_alone_does_not_end_a_turn() -> None:
    track = [0.95] * 10 + [0.05] * 2 + [0.95] * 30  # "mm" of 160 ms
    assert run(track) == []


def test_backchannels_seconds_apart_do_not_add_up_to_a_turn() -> None:
    mm = [0.95] * 10 + [0.05] * 4  # 2 frames of the 4 count as speech once smoothed
    track = mm * 4 + [0.95] * 30
    assert run(track) == []  # without the head's "over" between them, 4 of them would arm it


def test_a_backchannel_before_a_sentence_leaves_the_sentences_end_alone() -> None:
    sentence = [0.95] * 25 + [0.03] * 20
    track = [0.95] * 5 + [0.05] * 3 + sentence + [0.95] * 20
    alone = [0.95] * 8 + sentence + [0.95] * 20
    assert run(track) == run(alone) == [len(track) - 20 + 1]


def test_one_noisy_frame_is_smoothed_away() -> None:
    track = [0.02] * 20 + [0.9] + [0.02] * 20
    assert run(track) == []


def test_a_vad_verdict_counts_as_speech() -> None:
    detector = EndOfTurnDetector()
    for _ in range(5):  # the head still says "no one" (it lags), a VAD hears speech
        assert not detector.feed(heads(0.6), speech=True)
    assert detector.armed
    assert detector.feed(heads(0.9))


def test_turns_follow_each_other_and_reset_forgets() -> None:
    track = ([0.02] * 10 + [0.95] * 10) * 3
    assert len(run(track)) == 3
    detector = EndOfTurnDetector()
    for p in [0.02] * 10:
        detector.feed(heads(p))
    detector.reset()
    assert not detector.armed and not detector.feed(heads(0.95))


def test_other_head_and_bad_configs() -> None:
    detector = EndOfTurnDetector(EndOfTurnConfig(head=0))
    fired = [i for i, p in enumerate([0.02] * 10 + [0.95] * 5) if detector.feed([p, 0, 0, 0])]
    assert fired
    with pytest.raises(ValueError):
        EndOfTurnDetector().feed([0.5, 0.5])  # a model with 2 heads has no head 2
    with pytest.raises(ValueError):
        EndOfTurnConfig(threshold=0.2, speech_below=0.3)
