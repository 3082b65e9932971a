"""Turn-based mode ends the turn on the STT's end-of-turn head (smoothed, only once speech was
heard), the VAD's second of silence as the fallback; the user's words appear while they speak;
the time from the end of speech to the reply is reported and shown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from personaplex_tui.conversation import ControllerConfig
from personaplex_tui.conversation.end_of_turn import BY_HEAD, BY_SILENCE, TurnEnder
from personaplex_tui.conversation.user_lane import UserLane
from personaplex_tui.events import StepTiming, TurnLatency, UserSaid, UserTextOut, UserTurn
from personaplex_tui.tui.widgets.timing_panel import TimingPanel
from tests.conversation_fakes import CONVERSATION, Events, FakeModel, Probe, run_until_ended
from tests.test_tui_app import build, ready, until

SPEECH, QUIET = 0.05, 0.9  # head 2's probability that no one speaks over the next 2 s


@dataclass(frozen=True)
class Heard:
    user_text_id: int
    user_text: str
    end_of_turn: tuple[float, ...]


class ScriptedHearing:
    """Head outputs from a script (or from the audio's loudness): synthetic, not a model."""

    def __init__(self, script=None, heads: int = 4) -> None:
        self.script = list(script) if script is not None else None
        self.heads = heads
        self.resets = 0
        self.i = 0

    def reset(self) -> None:
        self.resets += 1

    def hear(self, pcm: np.ndarray) -> Heard:
        if self.script is not None:
            p = self.script[self.i]
        else:  # loud frames are speech
            p = SPEECH if np.sqrt(np.mean(np.square(pcm))) > 0.01 else QUIET
        self.i += 1
        piece = " word" if p < 0.5 and self.i % 3 == 0 else ""
        return Heard(5 if piece else 3, piece, (p,) * self.heads)


class Listener:
    def __init__(self, hearing: ScriptedHearing) -> None:
        self._hearing = hearing

    def hearing(self, model: object) -> ScriptedHearing:
        return self._hearing


class Model:
    def __init__(self, hearing: ScriptedHearing) -> None:
        self.listener = Listener(hearing)


def ender_for(script, heads: int = 4) -> tuple[TurnEnder, list]:
    events: list = []
    ender = TurnEnder(
        lambda fn, *a: fn(*a),
        Model(ScriptedHearing(script, heads)),
        UserLane(events.append),
        events.append,
    )
    return ender, events


def feed(ender: TurnEnder, script, in_utterance=True) -> list[int]:
    """The frames at which the turn ends."""
    pcm = np.zeros(1920, np.float32)
    return [i for i in range(len(script)) if ender.frame(pcm, i * 0.08, in_utterance)]


def test_speech_then_silence_ends_the_turn_a_few_frames_after_speech() -> None:
    script = [QUIET] * 10 + [SPEECH] * 20 + [QUIET] * 20
    ender, events = ender_for(script)
    ends = feed(ender, script)
    # smoothed over 3 frames: the mean passes 0.5 on the 2nd quiet frame (0.05, 0.9, 0.9)
    assert ends == [31]
    assert [e.text for e in events if isinstance(e, UserTextOut)]  # the words came live


def test_pauses_mid_sentence_and_backchannels_do_not_end_the_turn() -> None:
    pause = [SPEECH] * 8 + [0.6] + [SPEECH] * 8  # one unsure frame mid-sentence: smoothed away
    ender, _ = ender_for(pause)
    assert feed(ender, pause) == []
    backchannel = [QUIET] * 5 + [SPEECH] * 2 + [QUIET] * 20  # "mm-hm": too short to arm
    ender, _ = ender_for(backchannel)
    assert feed(ender, backchannel) == []


def test_the_vad_must_be_inside_an_utterance_and_heads_must_exist() -> None:
    script = [SPEECH] * 10 + [QUIET] * 10
    ender, _ = ender_for(script)
    assert feed(ender, script, in_utterance=False) == []
    ender, _ = ender_for(script, heads=0)  # kyutai/stt-1b-en_fr: no end-of-turn heads
    assert feed(ender, script) == []
    assert ender.live  # the words still appear live


def test_without_a_listener_nothing_is_heard_but_replies_are_timed() -> None:
    events: list = []
    wall = iter([100.0, 100.25])  # decided at 100 s, the first reply frame out 250 ms later
    ender = TurnEnder(
        lambda fn, *a: fn(*a),
        object(),
        UserLane(events.append),
        events.append,
        clock=lambda: next(wall),
    )
    assert not ender.live and not ender.frame(np.ones(1920, np.float32), 0.0, True)
    ender.decided(5.0, BY_SILENCE)
    latency = ender.reply_started(speech_end_s=4.0)
    assert latency in events and latency.decided_by == BY_SILENCE
    assert latency.decision_s == pytest.approx(1.0)
    # 1 s of audio heard after the speech before the turn ended, then 0.25 s until the reply
    assert latency.end_of_speech_to_reply_s == pytest.approx(1.25)
    assert ender.reply_started(4.0) is None  # once per turn


def run_turns(hearing: ScriptedHearing | None, tmp_path) -> Events:
    config = ControllerConfig(
        mode="turn", input_file=CONVERSATION, output_file=tmp_path / "speaker.wav", max_steps=50
    )

    async def main():
        events, probe = Events(), Probe(FakeModel())
        if hearing is not None:
            probe.listener = Listener(hearing)
        await run_until_ended(config, probe, events)
        return events

    return asyncio.run(main())


def test_a_conversation_ends_turns_on_the_head_sooner_than_on_silence(tmp_path) -> None:
    hearing = ScriptedHearing()
    by_head = run_turns(hearing, tmp_path)
    by_vad = run_turns(None, tmp_path)
    head_turns, vad_turns = by_head.of(TurnLatency), by_vad.of(TurnLatency)
    assert head_turns and vad_turns
    assert all(t.decided_by == BY_HEAD for t in head_turns)
    assert all(t.decided_by == BY_SILENCE for t in vad_turns)
    assert max(t.decision_s for t in head_turns) < 0.6 <= min(t.decision_s for t in vad_turns)
    assert all(t.end_of_speech_to_reply_s >= t.decision_s for t in head_turns + vad_turns)
    assert len(by_head.of(UserTurn)) >= len(head_turns)
    # the words came while the user spoke (before their turn's reply), and each turn's line is final
    live = by_head.of(UserTextOut)
    assert live and all(e.index == -1 for e in live)
    assert by_head.of(UserSaid)
    assert hearing.resets >= len(head_turns)
    assert not by_vad.of(UserTextOut)


@pytest.mark.asyncio
async def test_the_timing_panel_shows_the_reply_latency() -> None:
    app, _, _ = build()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        panel = app.main.query_one(TimingPanel)
        for i in range(10):
            app.bridge(StepTiming(index=i, total_ms=20.0 + i))
        await until(pilot, lambda: panel.stats.summary() is not None)
        assert "after you stopped" not in panel.render().plain  # nothing before a turn
        app.bridge(TurnLatency(0.42, BY_HEAD, 0.24))
        await until(pilot, lambda: panel.turn_latency is not None)
        assert panel.turn_latency == TurnLatency(0.42, BY_HEAD, 0.24)
        assert "reply 0.42 s after you stopped · end-of-turn head" in panel.render().plain


def test_a_push_to_talk_turns_words_appear_while_the_user_speaks(tmp_path) -> None:
    """Frames captured between the two presses go through the STT as well: the words come live
    (they did not: the capture skipped the STT, and the reply's steps were told the turn had been
    heard live, so a push-to-talk turn had no words at all). Only the press ends the turn."""
    from personaplex_tui.conversation import create_conversation
    from tests.conversation_fakes import FakeDevices, is_state

    loud = (np.random.default_rng(0).standard_normal(24000 * 30) * 0.1).astype(np.float32)
    devices = FakeDevices(signal=loud, period_s=0.004)
    config = ControllerConfig(mode="turn", max_steps=10, record_dir=tmp_path)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        probe.listener = Listener(ScriptedHearing())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(is_state("listening"))
        await conv.toggle_talk()  # start capturing
        pressed = len(events.items)
        await asyncio.sleep(0.3)
        await conv.toggle_talk()  # send
        turn = await events.wait_for(lambda e: isinstance(e, UserTurn))
        during = events.items[pressed : events.items.index(turn)]
        await events.wait_for(lambda e: isinstance(e, TurnLatency))
        await conv.shutdown()
        return during, turn, events

    during, turn, events = asyncio.run(main())
    words = [e for e in during if isinstance(e, UserTextOut) and e.text.strip()]
    assert turn.frames >= 10 and len(words) >= 3
    assert [e.decided_by for e in events.of(TurnLatency)] == ["push-to-talk"]
