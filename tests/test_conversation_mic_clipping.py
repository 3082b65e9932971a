"""The chat's mic clipping flag is lit by the samples the device (or the input file) gave, at
their own rate, not by the 24 kHz frames resampled from them: resampling moves peaks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile as sf

from personaplex_tui.audio.echo_metrics import clipped_samples
from personaplex_tui.audio.file_streams import FileMic
from personaplex_tui.audio.levels import CLIP_LEVEL
from personaplex_tui.audio.resample import resample
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
)

RATE = 48000


def at_48k(kind: str, seconds: float = 2.0) -> np.ndarray:
    """A 48 kHz microphone: a full-scale 15 kHz tone (it clips; resampled to 24 kHz it is gone,
    above 12 kHz), or a square wave at 0.95 (it does not; resampled, it rings over full scale)."""
    t = np.arange(int(seconds * RATE)) / RATE
    if kind == "tone":
        return np.sin(2 * np.pi * 15000 * t).astype(np.float32)
    return (0.95 * np.sign(np.sin(2 * np.pi * 440 * t))).astype(np.float32)


def check_premise(kind: str) -> None:
    """Resampled to 24 kHz, the tone's clipping is gone and the square wave's appears."""
    pcm = at_48k(kind)
    at_24k = np.abs(resample(pcm, RATE, 24000))
    if kind == "tone":
        assert clipped_samples(pcm) > 0 and at_24k.max() < 0.5
    else:
        assert clipped_samples(pcm) == 0 and at_24k.max() >= CLIP_LEVEL


def _mic_flags(config: ControllerConfig, audio: AudioFactory, frames: int = 8) -> list[bool]:
    """The mic's clipping flags of a conversation's `Levels` events, once `frames` of them came
    (or the input file ended)."""

    async def main() -> Events:
        events = Events()
        conv = create_conversation(Probe(FakeModel()).loader(), events, config, audio=audio)
        await conv.start()
        await events.wait_for(lambda e: ended(e) or len(events.of(Levels)) >= frames, 30)
        await conv.shutdown()
        return events

    levels = asyncio.run(main()).of(Levels)
    assert levels  # (the meters did report)
    return [lv.mic_clipping for lv in levels]


@pytest.mark.parametrize("kind", ["tone", "square"])
@pytest.mark.parametrize("mode", ["duplex", "turn"])
@pytest.mark.parametrize("cancel", [False, True], ids=["plain", "cancelled"])
def test_a_48k_microphones_clipping_lights_the_flag_as_the_device_gave_it(kind, mode, cancel):
    check_premise(kind)
    devices = FakeDevices(at_48k(kind, 20.0), period_s=0.01)  # 8x real time
    audio = AudioFactory(
        input_stream=devices.input_stream,
        output_stream=devices.output_stream,
        devices=lambda: devices.infos,
        rate=lambda info, direction: RATE if direction == "input" else 24000,
    )
    config = ControllerConfig(mode=mode, max_steps=5, echo_cancellation=cancel)
    flags = _mic_flags(config, audio)
    assert devices.inputs[0].kwargs["samplerate"] == RATE
    if kind == "tone":
        assert all(flags)  # clipping all along, though the 24 kHz frames never reach 0.5
    else:
        assert not any(flags)  # never at full scale, though the 24 kHz frames pass it


@pytest.mark.parametrize("kind", ["tone", "square"])
@pytest.mark.parametrize("cancel", [False, True], ids=["plain", "cancelled"])
def test_an_input_files_clipping_lights_the_flag_at_the_files_own_rate(kind, cancel, tmp_path):
    check_premise(kind)
    path = tmp_path / "mic.wav"
    sf.write(path, at_48k(kind), RATE, subtype="FLOAT")
    config = ControllerConfig(
        mode="duplex",
        input_file=path,
        output_file=tmp_path / "out.wav",
        echo_cancellation=cancel,
    )
    flags = _mic_flags(config, file_factory(), frames=1000)  # to the file's end
    assert any(flags) == (kind == "tone") and all(flags) == (kind == "tone")


def test_a_file_mic_counts_each_frames_clipping_in_the_files_own_samples(tmp_path):
    """Per 80 ms frame, at the file's rate and in each of its channels (a mix to mono halves a
    clip on one channel); a real-time mic says the same as a fast one, and a loop starts over."""
    t = np.arange(int(0.4 * RATE)) / RATE
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    left[int(0.1 * RATE) : int(0.1 * RATE) + 7] = 1.0  # in the second frame
    right = 0.5 * np.sin(2 * np.pi * 200 * t)
    right[int(0.3 * RATE) : int(0.3 * RATE) + 3] = -1.0  # in the fourth frame
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), RATE, subtype="FLOAT")
    expected = [0, 7, 0, 3, 0]  # five frames (0.4 s is five 80 ms frames)

    fast = FileMic(path, realtime=False, after_end="loop", max_frames=8)
    with fast:
        got = []
        while (frame := fast.read_frame()) is not None:
            assert np.abs(frame).max() < CLIP_LEVEL  # the mono mix at 24 kHz never clips
            got.append(fast.last_clipped)
    assert got == expected + expected[:3]

    live = FileMic(path, realtime=True, after_end="silence", max_frames=7)
    with live:
        got = []
        while (frame := live.read_frame(timeout=2.0)) is not None:
            got.append(live.last_clipped)
    assert got == expected + [0, 0]
