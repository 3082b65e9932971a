"""Full duplex end to end: a WAV as the microphone, as fast as the engine goes, through the real
audio stand-ins, recorder and transcript; echo suppression; stopping within one step."""

from __future__ import annotations

import asyncio
import json
import time
import wave

import numpy as np
import pytest

from personaplex_tui.audio import FileSpeaker, read_audio, split_frames
from personaplex_tui.conversation import AudioFactory, ControllerConfig, create_conversation
from personaplex_tui.conversation.transcript_writer import clock, escape_markdown
from personaplex_tui.events import FrameOut, Levels, PlaybackStats, StepTiming, TextOut
from tests.conversation_fakes import (
    CONVERSATION,
    Events,
    FakeModel,
    Probe,
    conversation_pcm,
    run_until_ended,
)

Q = 1.5 / 32767  # 16-bit WAV quantization (plus rounding)


def wav_samples(path) -> np.ndarray:
    return read_audio(path).pcm


def only_folder(root):
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def test_duplex_steps_once_per_mic_frame_and_records_everything(make_model, tmp_path):
    config = ControllerConfig(
        mode="duplex",
        input_file=CONVERSATION,
        output_file=tmp_path / "speaker.wav",
        record_dir=tmp_path / "rec",
        timing_log=tmp_path / "timing.jsonl",
    )

    async def main():
        events, probe = Events(), Probe(make_model)
        conv = await run_until_ended(config, probe, events)
        await conv.shutdown()  # twice is safe
        return events, probe, conv

    events, probe, conv = asyncio.run(main())
    mic = split_frames(conversation_pcm())
    n = len(mic)
    live = probe.sessions[-1]
    assert len(probe.sessions) == 2  # the warm-up's throwaway session, then the live one

    # one step per mic frame, the mic's own audio (echo suppression is off), on the engine thread
    assert len(live.inputs) == n
    np.testing.assert_array_equal(np.stack(live.inputs), mic)
    assert probe.threads == {conv.engine.thread_ident}
    assert [e.index for e in events.of(FrameOut)] == list(range(n))
    assert len(events.of(StepTiming)) == n
    assert [e.text for e in events.of(TextOut)] == [t for t in live.texts if t]
    assert events.of(Levels) and events.of(PlaybackStats)
    assert "duplex" in events.states() and events.states()[-1] == "ready"

    # the recording: both tracks n frames, as heard and as said; 16-bit WAVs hold [-1, 1], so
    # what a model said beyond full scale (random weights do) is compared clipped
    folder = only_folder(tmp_path / "rec")
    agent = np.clip(np.concatenate(live.outputs), -1.0, 1.0)
    rec_mic, rec_agent = wav_samples(folder / "mic.wav"), wav_samples(folder / "agent.wav")
    assert len(rec_mic) == len(rec_agent) == n * 1920
    np.testing.assert_allclose(rec_mic, mic.reshape(-1), atol=Q)
    np.testing.assert_allclose(rec_agent, agent, atol=Q)
    # the speaker (a file here) played every frame, in order
    np.testing.assert_allclose(wav_samples(tmp_path / "speaker.wav"), agent, atol=Q)

    # the transcript: well-formed JSON lines, in time order, every word said; readable Markdown
    lines = [json.loads(x) for x in (folder / "transcript.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "session" and lines[0]["voice"] == "NATF2"
    assert lines[-1]["type"] == "end" and lines[-1]["t"] == pytest.approx(n * 0.08)
    texts = [x for x in lines if x["type"] == "text"]
    assert [x["text"] for x in texts] == [t for t in live.texts if t]
    assert [x["t"] for x in texts] == sorted(x["t"] for x in texts)
    steps_with_text = [i for i, t in enumerate(live.texts) if t]
    assert [x["t"] for x in texts] == pytest.approx([i * 0.08 for i in steps_with_text])
    md = (folder / "transcript.md").read_text()
    assert md.startswith("# Conversation")
    if steps_with_text:  # the first words open an agent paragraph at their time
        first = escape_markdown(live.texts[steps_with_text[0]].lstrip())
        assert f"**Agent** · {clock(steps_with_text[0] * 0.08)} · {first}" in md
    assert "has ended" in md

    # the timing log: one line per live step
    timing = [json.loads(x) for x in (tmp_path / "timing.jsonl").read_text().splitlines()]
    assert [x["step"] for x in timing] == list(range(n))
    assert all(x["mode"] == "duplex" and x["total_ms"] > 0 for x in timing)


class RecentLoudSpeaker(FileSpeaker):
    """A speaker whose agent stays audible for the 3 frames after a loud one (a pre-buffer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loud: list[bool] = []

    def write_frame(self, pcm, timeout=0.0):
        self.loud.append(bool(np.abs(pcm).max() > 0.01))
        return super().write_frame(pcm, timeout)

    def audible(self):
        return any(self.loud[-3:])


class EchoTestAudio(AudioFactory):
    def open_speaker(self, config):
        self.speaker = RecentLoudSpeaker(config.output_file, realtime=False)
        return self.speaker


def test_echo_suppression_sends_silence_while_the_agent_is_audible(tmp_path):
    talk = lambda step: 40 <= step < 60 or 150 <= step < 155  # noqa: E731
    config = ControllerConfig(
        mode="duplex",
        input_file=CONVERSATION,
        output_file=tmp_path / "speaker.wav",
        echo_suppression=True,
    )
    audio = EchoTestAudio(realtime_files=False, file_end="end")

    async def main():
        probe = Probe(FakeModel(talk=talk))
        await run_until_ended(config, probe, Events(), audio)
        return probe

    probe = asyncio.run(main())
    mic = split_frames(conversation_pcm())
    heard = np.stack(probe.sessions[-1].inputs)
    assert len(heard) == len(mic)
    suppressed = [i for i in range(len(mic)) if any(talk(j) for j in range(i - 3, i))]
    assert suppressed == list(range(41, 63)) + list(range(151, 158))
    for i in range(len(mic)):
        expected = np.zeros(1920, np.float32) if i in suppressed else mic[i]
        np.testing.assert_array_equal(heard[i], expected, err_msg=f"frame {i}")


def test_space_stops_duplex_within_one_step_and_resumes(tmp_path):
    config = ControllerConfig(
        mode="duplex", input_file=CONVERSATION, output_file=tmp_path / "o.wav"
    )
    audio = AudioFactory(realtime_files=False, file_end="silence")  # never ends by itself

    async def main():
        events, probe = Events(), Probe(FakeModel(step_delay=0.003))
        conv = create_conversation(probe.loader(), events, config, audio=audio)
        await conv.start()
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 20)
        asked = time.perf_counter()
        await conv.toggle_talk()
        stopped_after = sum(t > asked for t in probe.sessions[-1].step_started)
        steps = len(probe.sessions[-1].inputs)
        assert not conv.running
        await asyncio.sleep(0.05)
        assert len(probe.sessions[-1].inputs) == steps  # nothing runs any more
        mark = len(events.items)
        await conv.toggle_talk()  # space again: the same session goes on
        await events.wait_for(
            lambda e: isinstance(e, FrameOut) and e.index >= steps + 10, after=mark
        )
        await conv.shutdown()
        return events, probe, stopped_after, steps

    events, probe, stopped_after, steps = asyncio.run(main())
    assert stopped_after <= 1
    assert len(probe.sessions) == 2 and len(probe.sessions[-1].inputs) >= steps + 10
    states = events.states()
    assert states.count("duplex") == 2 and "ready" in states[states.index("duplex") :]
    with wave.open(str(tmp_path / "o.wav")) as w:  # the speaker file kept playing across runs
        assert w.getnframes() >= (steps + 10) * 1920
