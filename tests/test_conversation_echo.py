"""Echo handling in a conversation on (fake) sound devices: the canceller runs on the mic, and
when its library cannot load the app says so once and mutes the mic while the agent talks."""

from __future__ import annotations

import asyncio
import wave

import numpy as np

from personaplex_tui.audio.errors import CancellerUnavailableError
from personaplex_tui.conversation import ControllerConfig, create_conversation
from personaplex_tui.events import EchoStats, FrameOut, Notice, UserTurn
from tests.conversation_fakes import Events, FakeDevices, FakeModel, Probe


def _run(config: ControllerConfig, frames: int = 40):
    devices = FakeDevices(period_s=0.004)

    async def main():
        events = Events()
        probe = Probe(FakeModel(talk=lambda i: 5 <= i < 25))
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= frames)
        await conv.shutdown()
        return events, probe

    return asyncio.run(main())


def test_with_cancellation_the_mic_is_processed_and_both_tracks_are_recorded(tmp_path):
    config = ControllerConfig(mode="duplex", echo_cancellation=True, record_dir=tmp_path)
    events, probe = _run(config)
    stats = [e for e in events.of(EchoStats) if e.mode == "cancel"]
    assert stats and stats[-1].processing_ms > 0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with wave.open(str(folder / "mic.wav")) as m, wave.open(str(folder / "mic_processed.wav")) as p:
        raw = np.frombuffer(m.readframes(m.getnframes()), np.int16)
        done = np.frombuffer(p.readframes(p.getnframes()), np.int16)
    assert len(raw) == len(done) >= 40 * 1920
    assert not np.array_equal(raw, done)  # high-pass and noise suppression changed it
    heard = np.concatenate(probe.sessions[-1].inputs)
    recorded = done[: len(heard)].astype(np.float32) / 32768
    assert np.abs(heard - recorded).max() < 2e-4  # the model heard the processed track


def test_when_the_canceller_cannot_load_the_app_says_so_once_and_mutes_instead(
    tmp_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise CancellerUnavailableError("The echo canceller could not be loaded (livekit: gone).")

    monkeypatch.setattr("personaplex_tui.conversation.echo.EchoCanceller", broken)
    config = ControllerConfig(mode="duplex", echo_cancellation=True)
    events, probe = _run(config, frames=200)  # the fake devices run at 20x real time
    warnings = [n.message for n in events.of(Notice) if "echo canceller" in n.message]
    assert warnings == [
        "The echo canceller could not be loaded (livekit: gone); the mic is muted while the "
        "agent speaks instead."
    ]
    assert events.of(EchoStats)[-1].mode == "mute"
    inputs = probe.sessions[-1].inputs
    assert all(not x.any() for x in inputs[8:25])  # the greeting, silenced: the agent talks
    assert any(x.any() for x in inputs[176:200])  # "weather", long after the agent's echo tail


def test_without_echo_handling_the_greeting_reaches_the_model():
    """The counterpart of the fallback test: those frames are not silent by themselves."""
    _, probe = _run(ControllerConfig(mode="duplex"), frames=30)
    assert any(x.any() for x in probe.sessions[-1].inputs[8:25])


def test_turn_based_mode_hears_the_user_through_the_canceller(tmp_path):
    devices = FakeDevices(period_s=0.02)  # 4x real time: the VAD must see the pauses

    async def main():
        events = Events()
        probe = Probe(FakeModel())
        config = ControllerConfig(
            mode="turn", max_steps=10, echo_cancellation=True, record_dir=tmp_path
        )
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(lambda e: isinstance(e, UserTurn), timeout=30)
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 5, timeout=30)
        await conv.shutdown()
        return events

    events = asyncio.run(main())
    turn = events.of(UserTurn)[0]
    assert 0.2 < turn.start_s < 1.0 and turn.end_s > turn.start_s + 1.5  # the greeting
    assert [e for e in events.of(EchoStats) if e.mode == "cancel"]
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (folder / "mic_processed.wav").exists()
