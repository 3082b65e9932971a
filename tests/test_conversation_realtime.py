"""Real-time pacing as in the app: `--input-file` played at 12.5 frames/s and a speaker file
that pulls audio like a sound card (pre-buffer, play-out at the end of a reply or a run)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from personaplex_tui.audio import read_audio, split_frames, write_wav
from personaplex_tui.conversation import AudioFactory, ControllerConfig, create_conversation
from personaplex_tui.events import FrameOut, UserTurn
from tests.conversation_fakes import AUDIO, Events, FakeModel, Probe, ended


def loud_frames(path) -> tuple[np.ndarray, np.ndarray]:
    """The frames of a speaker recording that hold agent audio, and where they are. The player
    moves whole 80 ms frames, so they line up with the file's 1920-sample blocks."""
    pcm = read_audio(path).pcm
    frames = pcm[: len(pcm) // 1920 * 1920].reshape(-1, 1920)
    where = np.flatnonzero(np.abs(frames).max(axis=1) > 0.01)
    return frames[where], where


def run(config: ControllerConfig) -> tuple[Events, Probe, float]:
    async def main():
        events, probe = Events(), Probe(FakeModel())
        audio = AudioFactory(realtime_files=True, file_end="end")
        conv = create_conversation(probe.loader(), events, config, audio=audio)
        await conv.start()
        begun = time.monotonic()
        await events.wait_for(ended)
        took = time.monotonic() - begun
        await conv.shutdown()
        return events, probe, took

    return asyncio.run(main())


def test_turn_based_in_real_time_plays_the_whole_reply(tmp_path):
    config = ControllerConfig(
        mode="turn", max_steps=8, input_file=AUDIO / "weather.wav", output_file=tmp_path / "o.wav"
    )
    events, probe, took = run(config)
    mic = split_frames(read_audio(AUDIO / "weather.wav").pcm)
    assert took >= len(mic) * 0.08 - 0.3  # the file was paced, not read at once
    assert len(events.of(UserTurn)) == 1 and len(events.of(FrameOut)) == 8
    reply = np.stack(probe.sessions[-1].outputs[-8:])
    played, where = loud_frames(tmp_path / "o.wav")
    # the whole reply was played, in one piece, before the run ended
    np.testing.assert_allclose(played, reply, atol=1.5 / 32767)
    assert list(np.diff(where)) == [1] * 7


def test_duplex_in_real_time_steps_at_the_mic_rate(tmp_path):
    short = read_audio(AUDIO / "weather.wav").pcm[: 15 * 1920]
    write_wav(tmp_path / "in.wav", short)
    config = ControllerConfig(
        mode="duplex", input_file=tmp_path / "in.wav", output_file=tmp_path / "o.wav"
    )
    events, probe, took = run(config)
    live = probe.sessions[-1]
    assert len(live.inputs) == 15 and len(events.of(FrameOut)) == 15
    assert took >= 15 * 0.08 - 0.3
    gaps = np.diff(live.step_started)
    assert np.median(gaps) > 0.05  # one step per 80 ms frame, not as fast as possible
    played, where = loud_frames(tmp_path / "o.wav")
    np.testing.assert_allclose(played, np.stack(live.outputs), atol=1.5 / 32767)
    assert where[0] >= 2  # the pre-buffer delayed playback
