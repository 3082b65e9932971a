"""Turn-based end to end: Silero VAD finds the utterances of a WAV used as the microphone, each is
answered with `max_steps` frames in one continuing session; interrupting; push-to-talk."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from personaplex_tui.audio import UtteranceEnded, UtteranceSegmenter, read_audio, split_frames
from personaplex_tui.conversation import ControllerConfig, create_conversation
from personaplex_tui.events import FrameOut, Notice, StateChanged, StepTiming, UserTurn
from tests.conversation_fakes import (
    CONVERSATION,
    Events,
    FakeDevices,
    FakeModel,
    Probe,
    conversation_pcm,
    is_state,
    run_until_ended,
)
from tests.test_conversation_duplex import Q, only_folder

MAX_STEPS = 12


def vad_utterances(pcm: np.ndarray) -> list[UtteranceEnded]:
    segmenter = UtteranceSegmenter()
    found = []
    for frame in split_frames(pcm):
        found += [e for e in segmenter.feed(frame) if isinstance(e, UtteranceEnded)]
    return found


def test_three_utterances_get_three_replies_in_one_session(make_model, tmp_path):
    config = ControllerConfig(
        mode="turn",
        max_steps=MAX_STEPS,
        input_file=CONVERSATION,
        output_file=tmp_path / "speaker.wav",
        record_dir=tmp_path / "rec",
        timing_log=tmp_path / "timing.jsonl",
    )

    async def main():
        events, probe = Events(), Probe(make_model)
        conv = await run_until_ended(config, probe, events)
        return events, probe, conv

    events, probe, conv = asyncio.run(main())
    mic = split_frames(conversation_pcm())
    expected = vad_utterances(conversation_pcm())
    assert len(expected) == 3

    # three user turns at the VAD's times, on the recording's timeline (each reply adds its length)
    turns = events.of(UserTurn)
    assert len(turns) == 3
    for k, (turn, utt) in enumerate(zip(turns, expected, strict=True)):
        shift = k * MAX_STEPS * 0.08
        assert turn.start_s == pytest.approx(utt.start_s + shift, abs=0.05)
        assert turn.end_s == pytest.approx(utt.end_s + shift, abs=0.05)

    # one session for all turns: each utterance, then max_steps frames of digital silence
    assert len(probe.sessions) == 2 and probe.threads == {conv.engine.thread_ident}
    live = probe.sessions[-1]
    assert len(live.inputs) == sum(t.frames for t in turns) + 3 * MAX_STEPS
    pcm = conversation_pcm()
    at = 0
    for k, turn in enumerate(turns):
        fed = np.concatenate(live.inputs[at : at + turn.frames])
        # the utterance is the file's audio from 0.2 s before the speech to 0.2 s after it
        first = round((turn.start_s - k * MAX_STEPS * 0.08 - 0.2) * 24000)
        length = round((turn.end_s - turn.start_s + 0.4) * 24000)
        assert turn.frames == -(-length // 1920)
        assert any(
            np.array_equal(fed[:length], pcm[first + d : first + d + length]) for d in (-1, 0, 1)
        )
        assert not fed[length + 1 :].any()  # the last frame is padded with silence
        silence = np.stack(live.inputs[at + turn.frames : at + turn.frames + MAX_STEPS])
        assert not silence.any()
        at += turn.frames + MAX_STEPS

    # only reply frames are reported (and played); every step is timed
    assert len(events.of(FrameOut)) == 3 * MAX_STEPS
    assert len(events.of(StepTiming)) == len(live.inputs)
    states = [(e.state, e.detail) for e in events.of(StateChanged)]
    turn_states = [s for s, d in states if s in ("listening", "thinking", "speaking") and not d]
    assert turn_states == ["listening", "thinking", "speaking"] * 3 + ["listening"]
    assert states.count(("listening", "speech detected")) == 3

    # the recording: the whole file as heard plus the replies, on one timeline
    folder = only_folder(tmp_path / "rec")
    total = len(mic) + 3 * MAX_STEPS
    rec_mic = read_audio(folder / "mic.wav").pcm
    rec_agent = read_audio(folder / "agent.wav").pcm
    assert len(rec_mic) == len(rec_agent) == total * 1920
    # what the model said, as a 16-bit WAV holds it (random weights go beyond full scale)
    outputs = [np.clip(x, -1.0, 1.0) for x in live.outputs]
    replies = [outputs[i] for i in range(len(outputs)) if is_reply_step(i, turns)]
    lines = [json.loads(x) for x in (folder / "transcript.jsonl").read_text().splitlines()]
    starts = [round(x["start_s"] / 0.08) for x in lines if x["type"] == "reply"]
    assert [x["frames"] for x in lines if x["type"] == "reply"] == [MAX_STEPS] * 3
    said, heard = rec_agent.reshape(-1, 1920), rec_mic.reshape(-1, 1920)
    in_reply = np.zeros(total, bool)
    for start, turn in zip(starts, turns, strict=True):
        # each reply right after its utterance was detected (the VAD waits 1 s of silence)
        assert turn.end_s < start * 0.08 < turn.end_s + 1.5
        in_reply[start : start + MAX_STEPS] = True
    np.testing.assert_allclose(said[in_reply], np.stack(replies), atol=Q)
    assert not said[~in_reply].any()  # the agent is silent while the user has the floor
    assert not heard[in_reply].any()  # the mic is not listened to during a reply
    np.testing.assert_allclose(heard[~in_reply], mic, atol=Q)  # and nothing else is lost
    # the speaker (a file) played the three replies back to back
    np.testing.assert_allclose(
        read_audio(tmp_path / "speaker.wav").pcm, np.concatenate(replies), atol=Q
    )

    user = [x for x in lines if x["type"] == "user_turn"]
    # (the VAD's sample-exact times, written to the millisecond)
    expected = [(round(t.start_s, 3), round(t.end_s, 3)) for t in turns]
    assert [(x["start_s"], x["end_s"]) for x in user] == expected
    md = (folder / "transcript.md").read_text()
    assert md.count("**You**") == 3
    timing = [json.loads(x) for x in (tmp_path / "timing.jsonl").read_text().splitlines()]
    assert len(timing) == len(live.inputs)
    assert [x["phase"] for x in timing].count("reply") == 3 * MAX_STEPS


def is_reply_step(i: int, turns: list[UserTurn]) -> bool:
    at = 0
    for turn in turns:
        if at + turn.frames <= i < at + turn.frames + MAX_STEPS:
            return True
        at += turn.frames + MAX_STEPS
    return False


def test_space_interrupts_a_reply_within_one_step(tmp_path):
    devices = FakeDevices(pull=False)  # a speaker that never plays: the reply stays queued
    config = ControllerConfig(mode="turn", max_steps=300, input_file=CONVERSATION)

    async def main():
        events, probe = Events(), Probe(FakeModel(step_delay=0.002))
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        first = await events.wait_for(lambda e: isinstance(e, FrameOut))
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= first.index + 20)
        speaker = conv.runner.ctx.speaker
        assert speaker.stats().buffered_frames >= 20
        asked = time.perf_counter()
        await conv.toggle_talk()
        late = sum(t > asked for t in probe.sessions[-1].step_started)
        assert speaker.stats().buffered_frames == 0  # queued audio dropped at once
        mark = len(events.items)
        await events.wait_for(is_state("listening"), after=mark)
        await conv.shutdown()
        return events, late, conv

    events, late, conv = asyncio.run(main())
    assert late <= 1
    frames = events.of(FrameOut)
    assert 20 <= len(frames) < 300
    states = events.states()
    assert states[states.index("speaking") + 1 :][:1] == ["listening"]


def test_push_to_talk_captures_between_two_presses(tmp_path):
    silence = np.zeros(24000 * 30, np.float32)  # the VAD never fires on it
    devices = FakeDevices(signal=silence, period_s=0.004)
    config = ControllerConfig(mode="turn", max_steps=MAX_STEPS, record_dir=tmp_path)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(is_state("listening"))
        await asyncio.sleep(0.1)
        await conv.toggle_talk()  # start capturing
        assert conv.runner.phase == "capturing"
        await asyncio.sleep(0.2)
        await conv.toggle_talk()  # send
        turn = await events.wait_for(lambda e: isinstance(e, UserTurn))
        mark = len(events.items)
        await events.wait_for(is_state("listening"), after=mark)
        await conv.shutdown()
        return events, probe, turn

    events, probe, turn = asyncio.run(main())
    live = probe.sessions[-1]
    assert turn.frames >= 10 and turn.end_s - turn.start_s == pytest.approx(turn.frames * 0.08)
    assert len(live.inputs) == turn.frames + MAX_STEPS
    assert len(events.of(FrameOut)) == MAX_STEPS
    lines = (only_folder(tmp_path) / "transcript.jsonl").read_text().splitlines()
    user = [json.loads(x) for x in lines if '"user_turn"' in x]
    assert len(user) == 1 and user[0]["manual"] is True


def test_the_mic_is_recorded_while_the_agent_replies(tmp_path):
    """mic.wav is the mic as captured all along: while the model thinks and the agent speaks a
    worker goes on reading a mic that delivers in real time into the recording (not into the
    next turn); the reply's audio starts where the mic's track was when its first frame came,
    and both tracks end together. (Before, the reply's span was digital silence in mic.wav.)"""
    noise = (np.random.default_rng(0).uniform(-1, 1, 24000 * 30) * 1e-3).astype(np.float32)
    devices = FakeDevices(signal=noise, period_s=0.004)  # never speech: push-to-talk
    config = ControllerConfig(mode="turn", max_steps=MAX_STEPS, record_dir=tmp_path)

    async def main():
        events, probe = Events(), Probe(FakeModel(step_delay=0.01))
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(is_state("listening"))
        await conv.toggle_talk()
        await asyncio.sleep(0.2)
        await conv.toggle_talk()
        await events.wait_for(lambda e: isinstance(e, UserTurn))
        mark = len(events.items)
        await events.wait_for(is_state("listening"), after=mark)
        await conv.shutdown()
        return probe

    probe = asyncio.run(main())
    folder = only_folder(tmp_path)
    mic = read_audio(folder / "mic.wav").pcm
    agent = read_audio(folder / "agent.wav").pcm
    lines = [json.loads(x) for x in (folder / "transcript.jsonl").read_text().splitlines()]
    (reply,) = [x for x in lines if x["type"] == "reply"]
    (turn,) = [x for x in lines if x["type"] == "user_turn"]
    assert len(mic) == len(agent)
    span = mic[round(turn["end_s"] * 24000) : round(reply["end_s"] * 24000)]
    assert len(span) > 1920 and np.count_nonzero(span) > 0.9 * len(span)  # the noise, recorded
    assert reply["start_s"] >= turn["end_s"]  # after the thinking time
    start = round(reply["start_s"] * 24000)
    said = np.concatenate(probe.sessions[-1].outputs[-MAX_STEPS:])
    np.testing.assert_allclose(agent[start : start + len(said)], said, atol=1.5 / 32767)
    assert not agent[round(turn["end_s"] * 24000) : start].any()


def test_a_tap_of_space_is_not_sent_and_the_next_turn_is(tmp_path):
    """Two presses 0.1 s apart are a tap, not a turn: it was sent, and the model replied to
    nothing. Now a notice says it was too short, nothing is stepped, listening goes on (the mic
    recorded throughout, none of it lost) and the next turn, of 1 s, is sent and answered."""
    noise = (np.random.default_rng(1).uniform(-1, 1, 24000 * 60) * 1e-3).astype(np.float32)
    devices = FakeDevices(signal=noise, period_s=0.08)  # real time: 0.1 s is 0.1 s of audio
    config = ControllerConfig(mode="turn", max_steps=MAX_STEPS, record_dir=tmp_path)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        try:  # a failed wait must not leave the listening thread running
            await conv.start()
            await events.wait_for(is_state("listening"))
            await conv.toggle_talk()  # start capturing
            await asyncio.sleep(0.1)
            await conv.toggle_talk()  # send, too soon
            notice = await events.wait_for(lambda e: isinstance(e, Notice), timeout=5.0)
            await events.wait_for(is_state("listening"), after=events.items.index(notice))
            assert conv.runner.phase == "listening"
            assert not events.of(UserTurn) and not probe.sessions[-1].inputs
            await conv.toggle_talk()
            await asyncio.sleep(1.0)
            await conv.toggle_talk()
            turn = await events.wait_for(lambda e: isinstance(e, UserTurn))
            mark = len(events.items)
            await events.wait_for(is_state("listening"), after=mark)
        finally:
            await conv.shutdown()
        return events, probe, notice, turn

    events, probe, notice, turn = asyncio.run(main())
    assert notice.message.startswith("That was too short to send (0.")
    assert notice.hint == "Press space, talk, then press space again."
    assert events.of(Notice).count(notice) == 1 and events.of(UserTurn) == [turn]
    assert turn.frames >= 12  # 1 s of audio after the press, and the pre-roll
    assert len(probe.sessions[-1].inputs) == turn.frames + MAX_STEPS
    assert len(events.of(FrameOut)) == MAX_STEPS
    folder = only_folder(tmp_path)
    lines = [json.loads(x) for x in (folder / "transcript.jsonl").read_text().splitlines()]
    assert [x["manual"] for x in lines if x["type"] == "user_turn"] == [True]
    # mic.wav up to the turn's end is the mic's audio without a gap, the tap's included
    mic = read_audio(folder / "mic.wav").pcm[: round(turn.end_s * 24000)]
    blocks = noise[: len(noise) // 1920 * 1920].reshape(-1, 1920)
    first = int(np.abs(blocks - mic[:1920]).max(axis=1).argmin())
    np.testing.assert_allclose(mic, noise[first * 1920 : first * 1920 + len(mic)], atol=Q)
