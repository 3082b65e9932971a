"""The app-level controller: saving recordings, shutdown, settings, reset and mode switches."""

from __future__ import annotations

import asyncio
import inspect
import json
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from model.config import SamplingConfig
from model.conversation.prompts import PROMPT_PRESETS
from model.conversation.session_settings import SessionSettings
from personaplex_tui.audio import read_audio, split_frames
from personaplex_tui.conversation import (
    ControllerConfig,
    ConversationController,
    DuplexController,
    SettingsError,
    TurnController,
    create_conversation,
)
from personaplex_tui.conversation.transcript_writer import TranscriptWriter, clock
from personaplex_tui.events import (
    ConversationAPI,
    EngineError,
    FrameOut,
    LoadProgress,
    ModelInfo,
    Notice,
)
from personaplex_tui.settings import CUSTOM_PROMPT, Settings
from tests.conversation_fakes import (
    AUDIO,
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
from tests.import_probe import modules_loaded_by
from tests.test_conversation_duplex import Q, only_folder


def test_save_recording_without_continuous_recording_copies_a_snapshot(tmp_path):
    config = ControllerConfig(
        mode="duplex",
        input_file=CONVERSATION,
        output_file=tmp_path / "o.wav",
        save_dir=tmp_path / "saved",
    )

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=file_factory())
        await conv.start()
        await events.wait_for(ended)
        temp = conv.recording.folder
        assert conv.recording.temporary and (temp / "mic.wav").exists()
        saved = await conv.save_recording()
        await conv.shutdown()
        await conv.shutdown()
        after = await conv.save_recording()
        return events, probe, temp, saved, after

    events, probe, temp, saved, after = asyncio.run(main())
    mic = split_frames(conversation_pcm())
    folder = only_folder(tmp_path / "saved")
    assert saved == str(folder)
    assert Notice(f"Saved the recording in {folder}.") in events.items
    rec_mic = read_audio(folder / "mic.wav").pcm
    rec_agent = read_audio(folder / "agent.wav").pcm
    assert len(rec_mic) == len(rec_agent) == len(mic) * 1920
    np.testing.assert_allclose(rec_mic, mic.reshape(-1), atol=Q)
    np.testing.assert_allclose(rec_agent, np.concatenate(probe.sessions[-1].outputs), atol=Q)
    lines = [json.loads(x) for x in (folder / "transcript.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "session" and any(x["type"] == "text" for x in lines)
    assert (folder / "transcript.md").read_text().startswith("# Conversation")
    assert not temp.exists()  # the private copy went away at shutdown
    assert after == "" and events.items[-1] == Notice("Nothing has been recorded yet.", "warning")


def test_recording_on_disk_is_valid_while_the_conversation_runs(tmp_path):
    config = ControllerConfig(
        mode="duplex", record_dir=tmp_path / "rec", save_dir=tmp_path / "saved"
    )
    devices = FakeDevices(period_s=0.002)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 40)
        live_folder = conv.recording.folder
        # a crash now would leave valid WAVs missing at most the last second
        with wave.open(str(live_folder / "mic.wav")) as w:
            on_disk = w.getnframes() / 24000
        assert on_disk >= conv.recording.mic_s - 1.0 - 0.08
        saved = await conv.save_recording()  # continuous recording: the live folder, flushed
        assert saved == str(live_folder)
        with wave.open(str(live_folder / "mic.wav")) as w:
            assert w.getnframes() >= 40 * 1920
        await conv.shutdown()
        return events, probe, live_folder

    events, probe, folder = asyncio.run(main())
    n = len(probe.sessions[-1].outputs)
    with wave.open(str(folder / "mic.wav")) as m, wave.open(str(folder / "agent.wav")) as a:
        assert m.getnframes() == a.getnframes()
        assert n * 1920 <= m.getnframes() <= (n + 1) * 1920
    assert Notice(f"The recording is in {folder}.") in events.items
    assert not (tmp_path / "saved").exists()


def test_settings_reset_and_mode_switches(tmp_path):
    devices = FakeDevices(period_s=0.003)
    config = ControllerConfig(mode="turn", record_dir=tmp_path, max_steps=5)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(is_state("listening"))
        assert isinstance(conv.runner, TurnController)
        # duck-typed settings: only the attributes present change
        pending = await conv.apply_settings(
            SimpleNamespace(session=SessionSettings(voice="VARM1"), echo_suppression=True)
        )
        assert pending is True and conv.config.echo_suppression and conv.config.max_steps == 5
        assert await conv.apply_settings(SimpleNamespace(max_steps=7)) is True  # still pending
        mark = len(events.items)
        await conv.set_mode("duplex")
        await events.wait_for(is_state("duplex"), after=mark)
        assert isinstance(conv.runner, DuplexController)
        await events.wait_for(lambda e: isinstance(e, FrameOut), after=mark)
        mark = len(events.items)
        await conv.reset()  # a new session with the new voice, still live in duplex
        await events.wait_for(is_state("duplex"), after=mark)
        await events.wait_for(lambda e: isinstance(e, FrameOut), after=mark)
        assert await conv.apply_settings(SimpleNamespace(max_steps=9)) is False
        bad = await conv.apply_settings(SimpleNamespace(mode="karaoke"))
        mark = len(events.items)
        await conv.apply_settings(SimpleNamespace(mode="turn"))
        await events.wait_for(is_state("listening"), after=mark)
        assert isinstance(conv.runner, TurnController)
        await conv.shutdown()
        return events, probe, bad

    events, probe, bad = asyncio.run(main())
    sessions = probe.sessions[1:]  # after the warm-up's
    assert [s.settings.voice for s in sessions] == ["NATF2", "VARM1"]
    assert sessions[1].settings.prompt == "assistant" and sessions[1].settings.seed is None
    assert bad is False
    assert (
        EngineError("The mode must be 'turn' or 'duplex', not 'karaoke'.", "SettingsError")
        in events.items
    )
    first, second = sorted(p for p in tmp_path.iterdir() if p.is_dir())  # one recording per session
    md = (first / "transcript.md").read_text()
    assert "mode: duplex" in md and "voice NATF2" in md
    assert "voice VARM1" in (second / "transcript.md").read_text()
    assert "mode: turn" in (second / "transcript.md").read_text()
    for folder in (first, second):
        with wave.open(str(folder / "mic.wav")) as m, wave.open(str(folder / "agent.wav")) as a:
            assert m.getnframes() == a.getnframes() > 0


def test_a_failed_load_is_reported_and_start_can_be_tried_again():
    attempts = []

    def loader(progress):
        attempts.append(1)
        progress(LoadProgress("load", "reading weights"))
        if len(attempts) == 1:
            raise FileNotFoundError("no weights here")
        return Probe(FakeModel()), ModelInfo("m", "bf16", "cpu", ("NATF2",))

    async def main():
        events = Events()
        conv = create_conversation(
            loader, events, ControllerConfig(mode="duplex"), audio=FakeDevices().factory()
        )
        await conv.start()
        assert not conv.running
        await conv.start()
        await events.wait_for(is_state("duplex"))
        await conv.shutdown()
        return events

    events = asyncio.run(main())
    assert [e.message for e in events.of(EngineError)] == ["The model failed: no weights here"]
    assert [e.stage for e in events.of(LoadProgress)].count("load") == 2


def test_config_from_any_settings_object():
    base = ControllerConfig(max_steps=30)
    session = SessionSettings(voice="VARF1", seed=3).replace(text_temperature=0.5)
    settings = SimpleNamespace(mode="duplex", session=session, unrelated="x")
    config = ControllerConfig.from_settings(settings, base)
    assert (config.mode, config.session, config.max_steps) == ("duplex", session, 30)
    assert config.session.sampling.text_temperature == 0.5
    assert base.changed(config) == {"mode", "session"}
    with pytest.raises(SettingsError, match="at least one frame"):
        ControllerConfig(max_steps=0)


def test_transcript_markdown_and_json_lines(tmp_path):
    t = TranscriptWriter(tmp_path, "Conversation", {"voice": "NATF2", "seed": None})
    t.user_turn(0.5, 2.0, 22)
    t.agent_turn()
    for i, word in enumerate([" Hi", " *there*", "!"]):
        t.agent_text(2.0 + 0.32 * i, word, i)
    t.agent_text(9.0, " Again", 30)  # after a long pause: a new paragraph
    t.reply(2.0, 9.5, 94, interrupted=True)
    t.close(9.5)
    t.close(9.5)
    md = (tmp_path / "transcript.md").read_text()
    assert "voice NATF2" in md and "seed" not in md
    assert "**You** · 00:00.5–00:02.0 · 1.5 s (voice detected)" in md
    assert "**Agent** · 00:02.0 · Hi \\*there\\*!" in md
    assert "**Agent** · 00:09.0 · Again" in md and "_00:09.5 · reply interrupted_" in md
    lines = [json.loads(x) for x in (tmp_path / "transcript.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["session", "user_turn"] + ["text"] * 4 + ["reply", "end"]
    assert clock(3725.25) == "1:02:05.2"


def test_agent_words_after_a_users_line_start_their_own_paragraph(tmp_path):
    """Duplex: the agent talks on while a line of the user's is written; its next words are a
    new paragraph after the user's, not words appended to the user's line."""
    t = TranscriptWriter(tmp_path, "Conversation", {})
    t.agent_text(0.1, " Hi", 1)
    t.user_said(0.5, 0.7, "Hello")
    t.agent_text(0.8, " there", 10)  # no pause: before, this went on the "You" line
    t.close(1.0)
    md = (tmp_path / "transcript.md").read_text()
    assert "**You** · 00:00.5 · Hello\n\n**Agent** · 00:00.8 · there" in md


def test_the_controller_implements_the_conversation_api():
    for name, member in vars(ConversationAPI).items():
        if name.startswith("_") or not callable(member):
            continue
        mine = getattr(ConversationController, name)
        assert inspect.iscoroutinefunction(mine), name
        assert list(inspect.signature(mine).parameters) == list(
            inspect.signature(member).parameters
        ), name


def test_importing_the_conversation_loads_no_device_ui_or_vad_runtime():
    loaded = modules_loaded_by("import personaplex_tui.conversation")
    assert loaded & {"sounddevice", "onnxruntime", "textual", "torch", "mlx"} == set()


def test_config_from_the_apps_settings():
    saved = ControllerConfig(save_dir="/tmp/saved")
    settings = Settings().replace(
        mode="duplex",
        voice="VARF2",
        prompt=CUSTOM_PROMPT,
        prompt_text="  Be a pirate.  ",
        audio_temperature=0.6,
        text_top_k=40,
        input_file=AUDIO / "greeting.wav",
        record_dir=Path("rec"),
    )
    config = ControllerConfig.from_settings(settings, saved)
    assert config.mode == "duplex" and config.session is settings.session  # passed on unchanged
    assert (config.session.voice, config.session.system_prompt) == ("VARF2", "Be a pirate.")
    assert config.session.sampling == SamplingConfig(audio_temperature=0.6, text_top_k=40)
    assert (config.input_file, config.record_dir) == (AUDIO / "greeting.wav", Path("rec"))
    assert config.save_dir == "/tmp/saved"  # not in Settings: kept
    # a preset wins over text left in the file from an earlier custom prompt
    preset = Settings().replace(prompt="teacher", prompt_text="old text")
    session = ControllerConfig.from_settings(preset).session
    assert session.system_prompt == PROMPT_PRESETS["teacher"]


def test_agent_text_carries_the_recordings_time_which_restarts_after_a_reset(tmp_path):
    from personaplex_tui.events import TextOut

    devices = FakeDevices(period_s=0.003)
    config = ControllerConfig(mode="duplex", record_dir=tmp_path)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(lambda e: isinstance(e, TextOut) and (e.t or 0) > 1.0)
        mark = len(events.items)
        await conv.reset()
        await events.wait_for(lambda e: isinstance(e, TextOut), after=mark)
        await conv.shutdown()
        return events.items, mark

    items, mark = asyncio.run(main())
    before = [e for e in items[:mark] if isinstance(e, TextOut)]
    after = [e for e in items[mark:] if isinstance(e, TextOut)]
    assert all(e.t is not None for e in before + after)
    assert [e.t for e in before] == sorted(e.t for e in before) and before[-1].t > 1.0
    assert after[0].t < 1.0  # a new recording, a new clock
    first = sorted(p for p in tmp_path.iterdir() if p.is_dir())[0]
    lines = [json.loads(x) for x in (first / "transcript.jsonl").read_text().splitlines()]
    written = {r["step"]: r["t"] for r in lines if r["type"] == "text"}
    assert {e.index: round(e.t, 3) for e in before} == {
        e.index: written[e.index] for e in before
    }  # the screen's time is transcript.md's
