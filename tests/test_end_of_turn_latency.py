"""benchmarks/end_of_turn_latency.py on the test clips: the true ends of speech, the synthetic head
traces, and the turn ends that the app's own segmenter and TurnEnder give from them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.end_of_turn_latency import (
    SCENARIOS,
    HeadModel,
    evaluate,
    head_trace,
    padded,
    table,
    true_turns,
)
from personaplex_tui.audio.audio_file import read_audio

AUDIO = Path(__file__).parent / "data" / "audio"
MODELS = {m.name: m for m in SCENARIOS}


def test_the_true_ends_of_speech_follow_the_conversations_layout() -> None:
    # conversation.wav: 0.5 s silence, greeting, 3 s, shipping, 3 s, weather, 3 s (README)
    parts = [read_audio(AUDIO / f"{n}.wav").pcm for n in ("greeting", "shipping", "weather")]
    expected, t = [], 0.5
    for pcm in parts:
        ((start, end),) = true_turns(pcm)
        expected.append(t + end)
        t += len(pcm) / 24000 + 3.0
    got = [end for _, end in true_turns(read_audio(AUDIO / "conversation.wav").pcm)]
    assert got == pytest.approx(expected, abs=0.03)
    # greeting's 0.39 s between its two sentences is a pause, not a turn
    assert len(true_turns(padded(parts[0]))) == 1


def test_the_trace_follows_its_stated_model() -> None:
    model = replace(HeadModel("plain"), noise=0.0)
    speech = np.array([0] * 5 + [1] * 10 + [0] * 4 + [1] * 10 + [0] * 40, bool)
    p = head_trace(speech, model, np.random.default_rng(0))
    assert np.all(p[:6] == model.idle)  # no one yet (the onset lags one frame)
    assert np.all(p[6:17] == model.speech)  # speech, then `lag` frames of silence
    assert p[17] == pytest.approx(model.speech + (model.pause - model.speech) / model.rise)
    assert p[30] == model.speech  # the second stretch of speech
    assert np.all(p[29 + model.lag + model.rise :] == pytest.approx(model.end))
    assert p[6:29].max() < 0.5  # the 4-frame pause only bumps to `pause`
    noisy = head_trace(speech, MODELS["semantic"], np.random.default_rng(0))
    assert 0 < np.abs(noisy - p).max() < 0.25 and noisy.min() > 0 and noisy.max() < 1


def test_the_head_ends_every_turn_sooner_than_the_silence_rule_and_cuts_no_one_off() -> None:
    rows = evaluate(AUDIO, MODELS["semantic"], seed=0)
    by = {(r.clip, r.turn): r for r in rows}
    turns = [r for r in rows if r.turn and r.clip != "shipping + 1.3 s pause"]
    assert len(turns) == 8  # 3 in the conversation, 4 single clips, the 0.7 s pause
    for r in turns:
        assert r.decided_by_head and not r.head_early and not r.silence_early
        assert 0.08 <= r.head_latency_s < 0.8 < 1.0 <= r.silence_latency_s < 1.3
    # a 1.3 s pause is cut off by the VAD's second of silence, which stays as the fallback
    long_pause = by[("shipping + 1.3 s pause", 1)]
    assert long_pause.silence_early == ("silence",) and long_pause.head_early == ("silence",)
    # a 0.2 s "mm" starts no turn and ends none
    mm = by[("backchannel 0.2 s", 0)]
    assert mm.head_end_s is None and mm.silence_end_s is None
    assert mm.head_early == mm.silence_early == ()
    printed = "\n".join(table(rows, step_ms=40.0))
    assert "| backchannel 0.2 s | none |" in printed and "+40 ms/step" in printed


def test_a_head_that_cannot_tell_a_pause_from_an_end_cuts_the_user_off() -> None:
    rows = evaluate(AUDIO, MODELS["acoustic"], seed=0)
    pause = next(r for r in rows if r.clip == "shipping + 0.7 s pause")
    assert pause.head_early == ("end-of-turn head",) and pause.silence_early == ()
