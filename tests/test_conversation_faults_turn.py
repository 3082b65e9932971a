"""Faults in turn-based mode, and quitting mid-reply (duplex faults: test_conversation_faults.py).

A device lost while listening or while the agent speaks, a step that raises mid-reply, and a
shutdown while a reply streams: each ends in one sentence, keeps the recording and transcript
(aligned, valid, ended), and the conversation goes on afterwards — same session or a new one.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from personaplex_tui.audio import read_audio
from personaplex_tui.conversation import ControllerConfig, create_conversation
from personaplex_tui.conversation.controller import ENGINE_ERROR, ENGINE_ERROR_HINT
from personaplex_tui.events import EngineError, FrameOut, Notice, StateChanged, UserTurn
from tests.conversation_fakes import Events, FakeDevices, FakeModel, Probe, is_state
from tests.test_conversation_duplex import only_folder

WARM_UP_STEPS = 3


def frame_out(after_index: int = -1):
    return lambda e: isinstance(e, FrameOut) and e.index > after_index


def recorded(folder):
    mic = read_audio(folder / "mic.wav").pcm
    agent = read_audio(folder / "agent.wav").pcm
    lines = [json.loads(x) for x in (folder / "transcript.jsonl").read_text().splitlines()]
    return mic, agent, lines


@pytest.mark.parametrize("lost", ["input", "output"])
def test_a_device_lost_in_turn_mode_is_one_sentence_and_another_device_goes_on(lost, tmp_path):
    """The mic vanishes while listening, or the speaker while the agent speaks."""
    devices = FakeDevices()
    config = ControllerConfig(mode="turn", max_steps=40, record_dir=tmp_path)

    async def main():
        events, probe = Events(), Probe(FakeModel(step_delay=0.003))
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        if lost == "input":
            await events.wait_for(is_state("listening"))
            await asyncio.sleep(0.2)
            devices.inputs[-1].lose()
        else:
            await events.wait_for(frame_out(5))  # the first reply is streaming
            devices.outputs[-1].lose()
        error = await events.wait_for(lambda e: isinstance(e, EngineError))
        while conv.running:
            await asyncio.sleep(0.01)
        folder = only_folder(tmp_path)
        mic, agent, _ = recorded(folder)
        other = {f"{lost}_device": "USB Headset"}
        assert (
            await conv.apply_settings(
                ControllerConfig(mode="turn", max_steps=40, record_dir=tmp_path, **other)
            )
            is False
        )
        mark = len(events.items)
        await conv.toggle_talk()  # a new run on the other device, same session
        await events.wait_for(lambda e: isinstance(e, UserTurn), after=mark)
        await events.wait_for(is_state("listening"), after=len(events.items))
        await conv.shutdown()
        return events, probe, error, mic, agent, folder

    events, probe, error, mic, agent, folder = asyncio.run(main())
    name = "Desk Mic" if lost == "input" else "Speakers"
    assert error.message.startswith(f"The {lost} device '{name}' stopped")
    assert error.message.endswith("sound server quit or restarted?).") and "\n" not in error.message
    assert error.hint == f"Choose another {lost} device and press space to go on."
    assert error.kind == "AudioDeviceError"
    assert len(mic) == len(agent)  # the tracks were aligned when the run ended
    assert len(probe.sessions) == 2  # the same session went on
    kind = devices.inputs if lost == "input" else devices.outputs
    assert [s.kwargs["device"] for s in kind] == [0 if lost == "input" else 2, 1]
    final_mic, final_agent, lines = recorded(folder)
    assert len(final_mic) == len(final_agent) > len(mic)
    assert np.array_equal(final_mic[: len(mic)], mic)  # nothing recorded before was lost
    assert lines[-1]["type"] == "end"
    assert any(x["type"] == "error" and f"'{name}' stopped" in x["text"] for x in lines)
    if lost == "output":  # the second device played the reply of the resumed run
        assert any(np.abs(block).max() > 0.1 for block in devices.outputs[-1].played)


def test_a_step_that_raises_mid_reply_offers_a_reset_which_works(tmp_path):
    devices = FakeDevices()
    config = ControllerConfig(mode="turn", max_steps=40, record_dir=tmp_path)
    model = FakeModel()

    async def main():
        events, probe = Events(), Probe(model)
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        first = await events.wait_for(frame_out())  # the first reply frame is out
        model.fail_at = model.total_steps + 10  # the 10th step after it raises
        error = await events.wait_for(lambda e: isinstance(e, EngineError))
        hint = await events.wait_for(lambda e: isinstance(e, Notice) and e.severity == "warning")
        while conv.running:
            await asyncio.sleep(0.01)
        state = conv.engine.session
        mark = len(events.items)
        await conv.reset()  # r: a new session (the run had stopped: it is ready, not running)
        await events.wait_for(is_state("ready"), after=mark)
        assert not conv.running
        await conv.toggle_talk()  # space: listening again
        await events.wait_for(is_state("listening"), after=mark)
        await events.wait_for(lambda e: isinstance(e, UserTurn), after=mark)
        await events.wait_for(frame_out(first.index + 9), after=mark)
        await conv.shutdown()
        return events, probe, error, hint, state

    events, probe, error, hint, old_session = asyncio.run(main())
    assert error.message == "The model failed: boom" and error.kind == "RuntimeError"
    assert StateChanged("error", error.message) in events.items
    assert (hint.message, hint.hint) == (ENGINE_ERROR, ENGINE_ERROR_HINT)
    assert len(probe.sessions) == 3 and probe.sessions[1] is old_session  # reset: a new one
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2  # the failed session's recording was finished and kept
    mic, agent, lines = recorded(folders[0])
    assert len(mic) == len(agent) > 0
    assert lines[-1]["type"] == "end" and any(x["type"] == "error" for x in lines)
    assert "step failed" in (folders[0] / "transcript.md").read_text()


def test_quitting_during_a_reply_stops_within_a_step_and_finishes_every_file(tmp_path):
    devices = FakeDevices()
    config = ControllerConfig(mode="turn", max_steps=1000, record_dir=tmp_path)
    model = FakeModel(step_delay=0.01)

    async def main():
        events, probe = Events(), Probe(model)
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        first = await events.wait_for(frame_out())
        await events.wait_for(frame_out(first.index + 20))
        assert conv.runner.phase == "speaking"
        asked = time.perf_counter()
        await conv.shutdown()
        took = time.perf_counter() - asked
        steps = model.total_steps
        await asyncio.sleep(0.1)
        return events, probe, took, steps

    events, probe, took, steps = asyncio.run(main())
    assert took < 3.0 and model.total_steps == steps  # stopped, and nothing steps afterwards
    out = events.of(FrameOut)
    assert 20 < len(out) < 300  # a 1000-frame reply takes over 10 s
    folder = only_folder(tmp_path)
    mic, agent, lines = recorded(folder)
    assert len(mic) == len(agent)  # aligned at the end
    said = np.concatenate(probe.sessions[-1].outputs[-len(out) :])
    assert [x["type"] for x in lines][-2:] == ["reply", "end"]
    # every frame made, from where the reply starts (the mic, a device, was recorded meanwhile:
    # the model's thinking time is in both tracks before it)
    start = round(lines[-2]["start_s"] * 24000)
    assert len(agent) >= start + len(said)
    np.testing.assert_allclose(agent[start : start + len(said)], said, atol=1.5 / 32767)
    assert not agent[start + len(said) :].any()  # then the silence of the mic's last frames
    assert lines[-2]["frames"] == len(out) and lines[-2]["interrupted"] is False
