"""Faults: a step that raises, a missing or busy device, a device lost mid-session. Each ends in
one sentence naming what failed, keeps the recording, and leaves the controller usable."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from personaplex_tui.audio import read_audio, split_frames
from personaplex_tui.conversation import ControllerConfig, create_conversation
from personaplex_tui.events import EngineError, FrameOut, StateChanged
from tests.conversation_fakes import (
    CONVERSATION,
    Events,
    FakeDevices,
    FakeModel,
    Probe,
    conversation_pcm,
    ended,
    file_factory,
    is_state,
)
from tests.test_conversation_duplex import Q, only_folder

WARM_UP_STEPS = 3


def test_an_engine_error_mid_session_keeps_the_recording_and_the_controller(tmp_path):
    config = ControllerConfig(
        mode="duplex", input_file=CONVERSATION, output_file=tmp_path / "o.wav", record_dir=tmp_path
    )
    fail_at = WARM_UP_STEPS + 51  # the 51st live step raises

    async def main():
        events, model = Events(), FakeModel(fail_at=fail_at)
        probe = Probe(model)
        conv = create_conversation(probe.loader(), events, config, audio=file_factory())
        await conv.start()
        error = await events.wait_for(lambda e: isinstance(e, EngineError))
        await events.wait_for(is_state("error"))
        while conv.running:  # the run winds down after the engine reported the error
            await asyncio.sleep(0.01)
        folder = only_folder(tmp_path)
        mic_so_far = read_audio(folder / "mic.wav").pcm  # flushed when the run ended
        agent_so_far = read_audio(folder / "agent.wav").pcm
        mark = len(events.items)
        await conv.toggle_talk()  # go on with the same session
        await events.wait_for(ended, after=mark)
        await conv.shutdown()
        return events, probe, error, mic_so_far, agent_so_far, folder

    events, probe, error, mic_so_far, agent_so_far, folder = asyncio.run(main())
    assert error.message == "The model failed: boom" and error.kind == "RuntimeError"
    assert len(mic_so_far) == len(agent_so_far) == 51 * 1920  # aligned; the failed step is silent
    assert not agent_so_far[50 * 1920 :].any()

    mic = split_frames(conversation_pcm())
    live = probe.sessions[-1]
    assert len(probe.sessions) == 2  # no new session: the conversation went on
    # every frame reached the model once (the 51st in the step that raised), nothing skipped
    np.testing.assert_array_equal(np.stack(live.inputs), mic)
    assert len(live.outputs) == len(mic) - 1
    rec_mic = read_audio(folder / "mic.wav").pcm
    rec_agent = read_audio(folder / "agent.wav").pcm
    assert len(rec_mic) == len(rec_agent) == len(mic) * 1920
    np.testing.assert_allclose(rec_mic, mic.reshape(-1), atol=Q)
    assert "step failed" in (folder / "transcript.md").read_text()


@pytest.mark.parametrize(
    ("setting", "busy", "expected"),
    [
        ({"input_device": "Studio Mic"}, set(), "No input device matches 'Studio Mic'"),
        ({"output_device": "Hall PA"}, set(), "No output device matches 'Hall PA'"),
        ({}, {0}, "The input device 'Desk Mic' could not be opened (Device unavailable"),
        ({}, {2}, "The output device 'Speakers' could not be opened (Device unavailable"),
    ],
)
def test_a_missing_or_busy_device_is_one_sentence_then_another_device_works(
    setting, busy, expected
):
    devices = FakeDevices()
    devices.busy = set(busy)
    config = ControllerConfig(mode="duplex", **setting)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        error = await events.wait_for(lambda e: isinstance(e, EngineError))
        assert not conv.running
        assert all(not s.active for s in devices.inputs + devices.outputs)  # nothing left open
        needs_reset = await conv.apply_settings(
            ControllerConfig(mode="duplex", input_device="USB Headset", output_device="USB Headset")
        )
        mark = len(events.items)
        await conv.toggle_talk()
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 5, after=mark)
        await conv.shutdown()
        return events, error, needs_reset

    events, error, needs_reset = asyncio.run(main())
    assert error.message.startswith(expected) and error.kind == "AudioDeviceError"
    assert error.message.count(".") <= 2 and "\n" not in error.message  # one sentence
    assert StateChanged("error", error.message) in events.items
    assert needs_reset is False  # devices take effect without a new session
    assert devices.inputs[-1].kwargs["device"] == 1 and devices.outputs[-1].kwargs["device"] == 1


def test_a_device_chosen_while_the_model_loads_is_the_one_the_first_run_opens():
    """The settings file's device is unplugged: the chat says so before the model loads, and
    another can be chosen in the settings meanwhile. The change waited for the load, which
    held the controller's lock until the first run had failed on the missing device, in a
    banner; space was needed then."""
    import threading

    from personaplex_tui.events import LoadProgress

    devices = FakeDevices()
    loading = threading.Event()  # held until the new device is chosen

    async def main():
        events, probe = Events(), Probe(FakeModel())
        load = probe.loader()

        def slow_load(progress):
            assert loading.wait(30)
            return load(progress)

        config = ControllerConfig(mode="duplex", input_device="Studio Mic")
        conv = create_conversation(slow_load, events, config, audio=devices.factory())
        start = asyncio.create_task(conv.start())
        await events.wait_for(lambda e: isinstance(e, LoadProgress) or is_state("loading")(e))
        chosen = ControllerConfig(mode="duplex", input_device="USB Headset")
        change = asyncio.create_task(conv.apply_settings(chosen))
        await asyncio.sleep(0.05)  # it waits for the load
        assert not change.done()
        loading.set()
        await start
        needs_reset = await change
        await events.wait_for(
            lambda e: isinstance(e, EngineError) or (isinstance(e, FrameOut) and e.index >= 5)
        )
        running = conv.running
        await conv.shutdown()
        return events, needs_reset, running

    events, needs_reset, running = asyncio.run(main())
    assert not [e for e in events.items if isinstance(e, EngineError)]
    assert running and needs_reset is False
    assert [s.kwargs["device"] for s in devices.inputs] == [1]  # the USB Headset, first


@pytest.mark.parametrize("lost", ["input", "output"])
def test_a_device_lost_mid_session_stops_cleanly_and_resumes_on_another(lost, tmp_path):
    devices = FakeDevices()
    config = ControllerConfig(mode="duplex", record_dir=tmp_path)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 30)
        stream = devices.inputs[-1] if lost == "input" else devices.outputs[-1]
        stream.lose()
        error = await events.wait_for(lambda e: isinstance(e, EngineError))
        while conv.running:
            await asyncio.sleep(0.01)
        steps = len(probe.sessions[-1].inputs)
        folder = only_folder(tmp_path)
        heard = read_audio(folder / "mic.wav").pcm
        said = read_audio(folder / "agent.wav").pcm
        other = (
            {"input_device": "USB Headset"} if lost == "input" else {"output_device": "USB Headset"}
        )
        await conv.apply_settings(ControllerConfig(mode="duplex", record_dir=tmp_path, **other))
        mark = len(events.items)
        await conv.toggle_talk()
        await events.wait_for(
            lambda e: isinstance(e, FrameOut) and e.index >= steps + 20, after=mark
        )
        await conv.shutdown()
        return events, probe, error, steps, heard, said, folder

    events, probe, error, steps, heard, said, folder = asyncio.run(main())
    name = "Desk Mic" if lost == "input" else "Speakers"
    assert error.message.startswith(f"The {lost} device '{name}' stopped")
    assert error.message.endswith("sound server quit or restarted?).")
    assert error.kind == "AudioDeviceError"
    assert error.hint == f"Choose another {lost} device and press space to go on."
    assert StateChanged("error", error.message) in events.items  # the state: the sentence alone
    assert len(heard) == len(said) == steps * 1920  # nothing recorded was lost
    live = probe.sessions[-1]
    assert len(probe.sessions) == 2 and len(live.inputs) >= steps + 20  # the same session went on
    final = read_audio(folder / "mic.wav").pcm
    assert len(live.inputs) * 1920 <= len(final) <= (len(live.inputs) + 1) * 1920
    assert np.array_equal(final[: len(heard)], heard)
    transcript = (folder / "transcript.md").read_text()
    assert f"'{name}' stopped" in transcript and "press space" not in transcript
    kind = devices.inputs if lost == "input" else devices.outputs
    assert [s.kwargs["device"] for s in kind] == [0 if lost == "input" else 2, 1]


def test_a_failure_while_reporting_the_end_of_a_run_is_an_error_not_silence(monkeypatch):
    """Reporting why a run ended writes the transcript; if that raises (a bug: a file name that
    was not UTF-8 did, and the soak waited forever for the run's end), whoever waits still hears
    an error and the state says so."""
    from personaplex_tui.conversation.controller import ConversationController

    note = ConversationController._note

    def broken(self, text, kind="note"):
        if "has ended" in text:  # the note of the input's end
            raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")
        note(self, text, kind)

    monkeypatch.setattr(ConversationController, "_note", broken)
    config = ControllerConfig(mode="duplex", input_file=CONVERSATION)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=FakeDevices().factory())
        await conv.start()
        error = await asyncio.wait_for(
            events.wait_for(lambda e: isinstance(e, EngineError)), timeout=60
        )
        state = await events.wait_for(is_state("error"))
        running = conv.running
        await conv.shutdown()
        return error, state, running

    error, state, running = asyncio.run(main())
    assert error.message.startswith("The conversation stopped after an unexpected error:")
    assert "surrogates not allowed" in state.detail and not running


def test_a_fifo_no_one_writes_to_does_not_keep_the_process_alive(tmp_path):
    """Opening an input FIFO that no one writes to blocks in the system for good; quitting then
    left that worker (of asyncio's default executor) keeping the process alive after the screen
    was gone. The devices are opened on a daemon thread now: the process can exit."""
    import os
    import threading

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    config = ControllerConfig(mode="duplex", input_file=fifo)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=file_factory())
        try:
            await asyncio.wait_for(conv.start(), 2.0)
        except TimeoutError:
            pass
        await conv.shutdown()

    asyncio.run(main())
    try:
        stuck = [t for t in threading.enumerate() if t.name == "ppx-acquire" and t.is_alive()]
        assert stuck and all(t.daemon for t in stuck)
    finally:
        with open(fifo, "wb"):  # let the blocked open() return
            pass
