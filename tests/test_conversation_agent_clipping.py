"""The chat's agent clipping flag is lit by the samples its speaker is given, at the speaker's
rate (after resampling, which moves peaks), or by what an output file is given: not by the model's
24 kHz frames as such."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
import soundfile as sf

from personaplex_tui.audio.echo_metrics import FULL_SCALE, clipped_samples, played_clipped
from personaplex_tui.audio.file_streams import FileSpeaker
from personaplex_tui.audio.frames import FRAME_SAMPLES
from personaplex_tui.audio.levels import CLIP_LEVEL
from personaplex_tui.audio.resample import resample
from personaplex_tui.audio.streams import SpeakerStream
from personaplex_tui.conversation import ControllerConfig, create_conversation
from personaplex_tui.conversation.audio_factory import AudioFactory
from personaplex_tui.events import Levels
from tests.conversation_fakes import (
    Events,
    FakeDevices,
    FakeModel,
    Probe,
    ended,
    file_factory,
    is_state,
)

RATE = 48000
FRAMES = 100  # 8 s of the agent's voice


def agent_voice(kind: str, frames: int = FRAMES) -> np.ndarray:
    """The agent at 24 kHz: a 6 kHz tone at 1.3 whose samples fall between its peaks (all under
    0.92; at 48 kHz it reaches 1.3), a 440 Hz tone at 0.5 under an 11.8 kHz one at 0.6 (the
    samples pass 1.0; resampled to 48 kHz, the top band is gone and it stays under 0.6), or a
    440 Hz tone just under full scale (0.9995: over the old flag's 0.999, and never cut)."""
    t = np.arange(frames * FRAME_SAMPLES) / 24000
    if kind == "overshoot":
        return (1.3 * np.sin(2 * np.pi * 6000 * t + np.pi / 4)).astype(np.float32)
    if kind == "just under":
        return (0.9995 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.6 * np.sin(2 * np.pi * 11800 * t)).astype(
        np.float32
    )


def check_premise(kind: str) -> None:
    """At 24 kHz, the overshoot never reaches the old flag's level and the top band passes full
    scale; resampled to 48 kHz, it is the other way round."""
    pcm = agent_voice(kind)
    at_48k = np.abs(resample(pcm, 24000, RATE))
    if kind == "overshoot":
        assert np.abs(pcm).max() < CLIP_LEVEL and at_48k.max() > 1.25
    else:
        assert clipped_samples(pcm, FULL_SCALE) > 0 and at_48k.max() < 0.7


def lit(kind: str, rate: int) -> bool:
    """Whether the speaker at `rate` gets samples at full scale or past it."""
    return (kind == "overshoot") == (rate == RATE)


@pytest.mark.parametrize("kind", ["overshoot", "top band"])
@pytest.mark.parametrize("rate", [RATE, 24000])
def test_a_speaker_counts_clipping_in_the_samples_its_device_gets(kind, rate):
    check_premise(kind)
    devices = FakeDevices(period_s=0.002)
    pcm = agent_voice(kind, 10)
    speaker = SpeakerStream(rate, stream_factory=devices.output_stream)
    counts = []
    with speaker:
        for k in range(10):
            assert speaker.write_frame(pcm[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES], 1.0)
            counts.append(played_clipped(speaker))
        assert speaker.drain(5.0)
    played = np.concatenate(devices.outputs[0].played)
    assert devices.outputs[0].kwargs["samplerate"] == rate
    # each frame's count is of what the device got
    if lit(kind, rate):
        assert all(count > 0 for count in counts)
        assert np.abs(played).max() >= FULL_SCALE
    else:
        assert counts == [0] * 10
        assert np.abs(played).max() < FULL_SCALE
    if rate == 24000:
        assert sum(counts) == clipped_samples(pcm, FULL_SCALE)


def test_a_dropped_frame_leaves_the_flag_to_the_frame_itself():
    """A frame the speaker did not take was never played: the meter decides by it, as before."""
    speaker = SpeakerStream(RATE, capacity_frames=3, stream_factory=FakeDevices().output_stream)
    loud = agent_voice("overshoot", 1)
    for _ in range(3):  # (not started: nothing is pulled)
        assert speaker.write_frame(loud)
        assert played_clipped(speaker) > 0
    assert not speaker.write_frame(loud)
    assert played_clipped(speaker) is None
    speaker.close()


@pytest.mark.parametrize("realtime", [False, True], ids=["fast", "realtime"])
def test_an_output_file_counts_clipping_in_what_is_written(realtime, tmp_path):
    path = tmp_path / "agent.wav"
    pcm = agent_voice("top band", 6)
    counts = []
    with FileSpeaker(path, realtime=realtime, prebuffer_frames=1) as speaker:
        for k in range(6):
            assert speaker.write_frame(pcm[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES], 1.0)
            counts.append(played_clipped(speaker))
        assert speaker.drain(5.0)
    assert all(count > 0 for count in counts) and sum(counts) == clipped_samples(pcm, FULL_SCALE)
    written, rate = sf.read(path, dtype="int16")
    assert rate == 24000 and written.max() == 32767 and written.min() == -32768  # (cut)


class VoiceModel(FakeModel):
    """The fake model, whose agent says `voice` (24 kHz, frame after frame, looped)."""

    def __init__(self, voice: np.ndarray, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.voice = voice

    def session(self, settings):
        inner = super().session(settings)
        step = inner.step

        def voiced(pcm: np.ndarray):
            frame = step(pcm)
            k = frame.index % (len(self.voice) // FRAME_SAMPLES)
            return dataclasses.replace(
                frame, pcm=self.voice[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES].copy()
            )

        inner.step = voiced
        return inner


def _levels(config: ControllerConfig, audio: AudioFactory, voice: np.ndarray) -> list[Levels]:
    """The `Levels` events of a conversation whose agent says `voice`: in duplex, the first 12;
    turn-based, those from its first reply on, until it listens again."""

    async def main() -> Events:
        events = Events()
        model = VoiceModel(voice, step_delay=0.01)
        conv = create_conversation(Probe(model).loader(), events, config, audio=audio)
        await conv.start()
        if config.mode == "duplex":
            await events.wait_for(lambda e: ended(e) or len(events.of(Levels)) >= 12, 30)
        else:
            await events.wait_for(is_state("speaking"), 30)
            await events.wait_for(is_state("listening"), 30, after=len(events.items))
        await conv.shutdown()
        return events

    events = asyncio.run(main())
    if config.mode == "turn":
        first = events.items.index(next(e for e in events.items if is_state("speaking")(e)))
        return [e for e in events.items[first:] if isinstance(e, Levels)]
    return events.of(Levels)


@pytest.mark.parametrize("kind", ["overshoot", "top band"])
@pytest.mark.parametrize(
    "rate, mode, cancel",
    [
        (RATE, "duplex", False),
        (24000, "duplex", False),
        (RATE, "turn", False),
        (24000, "turn", False),
        (RATE, "duplex", True),  # (the canceller's speaker wraps the device's)
    ],
)
def test_the_agents_flag_is_lit_by_what_its_speaker_gets(kind, rate, mode, cancel):
    check_premise(kind)
    devices = FakeDevices(period_s=0.01)  # the test conversation as the mic, 8x real time
    audio = AudioFactory(
        input_stream=devices.input_stream,
        output_stream=devices.output_stream,
        devices=lambda: devices.infos,
        rate=lambda info, direction: 24000 if direction == "input" else rate,
    )
    config = ControllerConfig(mode=mode, max_steps=40, echo_cancellation=cancel)
    levels = _levels(config, audio, agent_voice(kind))
    assert devices.outputs[0].kwargs["samplerate"] == rate
    assert any(lv.agent_peak_db > -6 for lv in levels)  # (the meter did see the agent talk)
    flags = [lv.agent_clipping for lv in levels]
    if mode == "duplex":
        assert all(flags) if lit(kind, rate) else not any(flags)
    else:
        assert any(flags) == lit(kind, rate)


@pytest.mark.parametrize("kind", ["overshoot", "top band", "just under"])
def test_the_agents_flag_with_an_output_file_is_lit_by_what_is_written(kind, tmp_path):
    """Written as given, at 24 kHz: samples past full scale are cut, and only those; one just
    under it (the old flag's 0.999 and over) is written whole."""
    mic = tmp_path / "mic.wav"
    sf.write(mic, np.zeros(24000 * 8, np.float32), 24000)
    config = ControllerConfig(mode="duplex", input_file=mic, output_file=tmp_path / "out.wav")
    levels = _levels(config, file_factory(), agent_voice(kind))
    flags = [lv.agent_clipping for lv in levels]
    assert all(flags) if kind == "top band" else not any(flags)
