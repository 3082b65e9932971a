"""The chat app driven by Textual's pilot against the fake controller: keys, buttons, palette,
settings, a full-duplex session, loading and the offline message."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import Button, Input, Static, Switch
from textual.widgets._footer import FooterKey

from model.conversation.prompts import PROMPT_PRESETS
from model.conversation.session_settings import SESSION_KEYS
from model.errors import ModelNotFoundError, PersonaPlexError
from personaplex_tui.events import (
    EngineError,
    FrameOut,
    Levels,
    LoadProgress,
    MemoryUsage,
    Notice,
    PlaybackStats,
    StateChanged,
    StepTiming,
    TextOut,
    UserTurn,
)
from personaplex_tui.settings import Settings, SettingsStore, load_settings
from personaplex_tui.tui.app import PersonaPlexApp, make_app
from personaplex_tui.tui.keys import KEY_ACTIONS
from personaplex_tui.tui.messages import LiveDataArrived
from personaplex_tui.tui.screens.help_screen import HelpScreen
from personaplex_tui.tui.screens.settings_screen import SettingsScreen
from personaplex_tui.tui.widgets.error_banner import ErrorBanner
from personaplex_tui.tui.widgets.level_bar import LevelBar
from personaplex_tui.tui.widgets.load_panel import LoadPanel
from personaplex_tui.tui.widgets.status_bar import StatusBar
from personaplex_tui.tui.widgets.timing_panel import TimingPanel
from personaplex_tui.tui.widgets.transcript_panel import TranscriptPanel
from tests.tui_fakes import (
    MODEL_INFO,
    REPLIES,
    FakeConversation,
    FakeFactory,
    conversation_events,
    fixed_memory,
    list_devices,
)

SIZE = (80, 24)
pytestmark = pytest.mark.asyncio


def build(
    settings: Settings | None = None, store: SettingsStore | None = None, **fake: object
) -> tuple[PersonaPlexApp, FakeFactory, list[str]]:
    factory = FakeFactory(**fake)
    app = make_app(
        settings or Settings(),
        factory,
        store=store,
        list_devices=list_devices,
        rss_probe=fixed_memory,
        log_path=Path("/tmp/ppx-tui-test.log"),
        cursor_blink=False,
    )
    notes: list[str] = []
    original = app.notify

    def notify(message: str, **kwargs: object) -> None:
        notes.append(message)
        original(message, **kwargs)  # type: ignore[arg-type]

    app.notify = notify  # type: ignore[method-assign]
    return app, factory, notes


async def until(pilot: Pilot, check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Let the app run until `check()` holds (polling, so a busy app is not waited out)."""
    for _ in range(int(timeout_s / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the app never got there")


def fake_of(factory: FakeFactory) -> FakeConversation:
    assert factory.fake is not None
    return factory.fake


def text_of(widget: object) -> str:
    return widget.render().plain  # type: ignore[attr-defined]


async def ready(pilot: Pilot, app: PersonaPlexApp) -> None:
    await until(pilot, lambda: app.state == "ready")


async def test_startup_loads_in_the_background_then_shows_the_model():
    app, factory, _ = build(load_pause_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        panel = app.main.query_one(LoadPanel)
        await until(pilot, lambda: app.state == "loading")
        assert panel.display
        await until(pilot, lambda: panel.progress is not None and panel.progress.done_bytes > 0)
        assert "of 5.8 GB" in text_of(panel) and "MB/s" in text_of(panel)
        await until(pilot, lambda: app.state == "warming_up")
        assert "WARMING UP" in text_of(app.main.query_one(StatusBar))
        await ready(pilot, app)
        assert not panel.display
        status = text_of(app.main.query_one(StatusBar))
        assert MODEL_INFO.source in status and "4-bit" in status and "GPU" in status
        assert "1.2 GB" in status  # the injected memory probe
        assert fake_of(factory).names() == ["start"]


async def test_download_progress_shows_bytes_rate_and_time_left():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        app.bridge(StateChanged("loading"))  # e.g. a new model after a restart
        app.bridge(LoadProgress("download", "mimi.safetensors", 2_900_000_000, 5_800_000_000,
                                48_300_000.0, 60.0))  # fmt: skip
        await pilot.pause()
        text = text_of(app.main.query_one(LoadPanel))
        assert "50%" in text and "2.9 GB of 5.8 GB" in text
        assert "48.3 MB/s" in text and "1:00 left" in text and "Downloading" in text


async def test_the_warm_up_shows_the_graph_it_compiles_and_the_count():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        app.bridge(StateChanged("warming_up"))  # e.g. a restart on a fresh GPU machine
        names = ["encode (Mimi filling)", "LM step (window 1024 masked)", "decode (Mimi full)"]
        for done, name in enumerate(names):
            app.bridge(LoadProgress("warm_up", f"compiling {name} ({done}/12)", 0, 0, 0.0, None,
                                    done, 12))  # fmt: skip
        panel = app.main.query_one(LoadPanel)
        await until(pilot, lambda: panel.progress is not None and panel.progress.done_count == 2)
        assert panel.display
        text = text_of(panel)
        first, second = text.splitlines()
        assert "Warming up" in first and first.endswith(" 2/12")
        assert second == "compiling decode (Mimi full) (2/12)"  # the latest line only
        assert " B" not in text and "left" not in text  # a count, not bytes
        bar = first[first.index("━") : first.rindex("━") + 1]
        green = [s for s in panel.render().spans if s.style == "bold green"]  # the bar's done part
        assert len(green) == 1 and green[0].end - green[0].start == int(len(bar) * 2 / 12) > 0
        app.bridge(LoadProgress("warm_up", "compiled 12 graphs", done_count=12, total_count=12))
        await until(pilot, lambda: panel.progress is not None and panel.progress.done_count == 12)
        assert text_of(panel).splitlines()[0].endswith(" 12/12")


async def test_keys_do_nothing_to_the_model_while_it_loads():
    app, factory, notes = build(load_pause_s=0.3)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state == "loading")
        await pilot.press("space", "r", "w")
        assert fake_of(factory).names() == ["start"]
        assert any("still loading" in n for n in notes)


async def test_offline_without_a_model_says_what_to_do():
    app, factory, notes = build(offline=True)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.main.query_one(ErrorBanner)
        await until(pilot, lambda: banner.display)
        await pilot.pause()
        assert "--model PATH" in banner.message and "HF_HUB_OFFLINE=1" in banner.message
        assert banner.region.height >= 3  # in view, not squeezed away
        assert "ERROR" in text_of(app.main.query_one(StatusBar))
        await pilot.press("space")
        assert fake_of(factory).names() == ["start"]
        assert any("No model is loaded" in n for n in notes)
        await pilot.press("escape")
        assert not banner.display


async def test_space_talks_and_a_turn_based_reply_streams_into_the_transcript():
    app, factory, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("space")
        await until(pilot, lambda: app.state == "listening")
        await pilot.press("space")
        fake = fake_of(factory)
        await until(pilot, lambda: fake.played.is_set() and app.state == "ready")
        transcript = app.main.query_one(TranscriptPanel)
        await until(pilot, lambda: REPLIES[0] in transcript.plain_text())
        assert "[you 0.0–" in transcript.plain_text()
        assert fake.names() == ["start", "toggle_talk", "toggle_talk"]


async def test_m_switches_mode_and_saves_it(tmp_path: Path):
    store = SettingsStore(tmp_path / "settings.toml")
    app, factory, _ = build(store=store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("m")
        fake = fake_of(factory)
        await until(pilot, lambda: ("set_mode", "duplex") in fake.calls)
        assert app.settings.mode == "duplex"
        assert "duplex" in text_of(app.main.query_one(StatusBar))
        assert load_settings(store.path).mode == "duplex"
        await pilot.press("m")
        await until(pilot, lambda: fake.calls[-2:][0] == ("set_mode", "turn"))
        assert load_settings(store.path).mode == "turn"


async def test_v_cycles_the_voice_which_applies_on_reset():
    app, factory, notes = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("v")
        await until(pilot, lambda: app.pending_reset)
        assert app.settings.session.voice == "NATF3"
        assert "NATF3" in text_of(app.main.query_one(StatusBar))
        assert "press r to apply" in text_of(app.main.query_one(StatusBar))
        assert any("next reset" in n for n in notes)
        await pilot.press("v", "v", "v", "v")
        await until(pilot, lambda: app.settings.session.voice == "NATM3")
        await pilot.press("r")
        await until(pilot, lambda: "reset" in fake_of(factory).names())
        assert not app.pending_reset
        assert "press r" not in text_of(app.main.query_one(StatusBar))
        assert "new conversation" in app.main.query_one(TranscriptPanel).plain_text()


async def test_w_saves_the_recording_and_says_where():
    app, factory, notes = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("w")
        await until(pilot, lambda: any("recordings/session-1" in n for n in notes))
        await pilot.pause(0.1)
        assert fake_of(factory).names() == ["start", "save_recording"]
        assert sum("recordings/session-1" in n for n in notes) == 1  # said once


async def test_c_copies_the_transcript():
    app, _, notes = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("c")
        assert any("empty" in n for n in notes)
        app.bridge(UserTurn(1.0, 2.5, 19))
        for i, piece in enumerate([" Hello", " there", "!"]):
            app.bridge(TextOut(40 + i, piece))
        await pilot.pause()
        await pilot.press("c")
        assert app.clipboard == "[you 1.0–2.5 s] (19 frames)\n[agent 3.2 s] Hello there!"


async def test_transcript_text_can_be_selected_and_copied():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        for i, piece in enumerate([" Select", " me", " please."]):
            app.bridge(TextOut(10 + i, piece))
        await pilot.pause()
        body = app.main.query_one("#transcript .said", Static)
        body.text_select_all()  # what a mouse drag over it does
        await pilot.pause()
        await pilot.press("ctrl+c")
        assert app.clipboard == "Select me please."


async def test_question_mark_opens_help_and_escape_closes_it():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=100, record=True)
        console.print(app.screen.query_one("#help-keys", Static).content)
        help_text = console.export_text()
        for word in ("space", "Switch between", "Start a new conversation", "Next voice", "ctrl+p"):
            assert word in help_text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_q_shuts_the_controller_down_and_quits():
    app, factory, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("q")
        await pilot.pause()
    assert fake_of(factory).names()[-1] == "shutdown"
    assert not app.is_running and not app.shutdown_incomplete


def footer_key(app: PersonaPlexApp, label: str) -> FooterKey:
    (key,) = [k for k in app.main.query(FooterKey) if k.description == label]
    return key


async def test_the_actions_are_shown_once_in_the_footer_and_work_with_the_mouse():
    app, factory, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await until(pilot, lambda: any(k.region.width for k in app.main.query(FooterKey)))
        await pilot.pause()
        shown = [k.description for k in app.main.query(FooterKey) if k.action != "command_palette"]
        assert shown == [k.label for k in KEY_ACTIONS if k.show]  # each once, no button row
        assert not app.main.query(Button)
        await pilot.click(footer_key(app, "Talk"))
        await until(pilot, lambda: app.state == "listening")
        await pilot.click(footer_key(app, "Voice"))
        await until(pilot, lambda: app.settings.session.voice == "NATF3")
        await pilot.click(footer_key(app, "Settings"))
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        await pilot.click("#cancel")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert fake_of(factory).names()[:2] == ["start", "toggle_talk"]


async def test_the_memory_timer_firing_while_the_screen_goes_away_is_harmless():
    """At exit Textual removes the main screen's widgets while the memory poll's interval can
    still fire once (CI saw `NoMatches: 'StatusBar'` from `_poll_memory`)."""
    from personaplex_tui.tui.widgets.status_bar import StatusBar

    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await app.main.query_one(StatusBar).remove()
        app._poll_memory()  # no StatusBar: nothing to refresh, and no error
        app._refresh_status()
        await pilot.pause()
        assert app.is_running


async def test_command_palette_lists_and_runs_the_actions():
    app, factory, _ = build()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        commands = {c.title for c in app.get_system_commands(app.main)}
        assert {"Talk", "Mode", "Reset", "Voice", "Settings", "Save", "Copy", "Help"} <= commands
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"save")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: "save_recording" in fake_of(factory).names())


async def _screenshot_from_the_palette(notes: list[str], pilot: Pilot, app: PersonaPlexApp) -> str:
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*"screenshot")
    await pilot.pause(0.3)
    await pilot.press("enter")
    await until(pilot, lambda: any("screenshot" in note for note in notes))
    return next(note for note in notes if "screenshot" in note)


async def test_the_palettes_screenshot_is_saved_without_a_downloads_folder_or_says_why_not(
    tmp_path, monkeypatch
):
    """Textual's Screenshot saved to ~/Downloads only: on a machine without one (a server) it
    said "Failed to save screenshot", neither why nor where. It goes to ~/ppx-tui there."""
    for name in ("XDG_CONFIG_HOME", "XDG_DOWNLOAD_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    app, _, notes = build()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        said = await _screenshot_from_the_palette(notes, pilot, app)
        (saved,) = (tmp_path / "ppx-tui").glob("*.svg")
        assert said == f"Saved the screenshot as {saved}."
        assert saved.read_text().lstrip().startswith("<svg") and "ppx-tui" in saved.read_text()
        (tmp_path / "Downloads").mkdir()  # a desktop's: used as before
        notes.clear()
        said = await _screenshot_from_the_palette(notes, pilot, app)
        (saved,) = (tmp_path / "Downloads").glob("*.svg")
        assert said == f"Saved the screenshot as {saved}."
    cannot = tmp_path / "file-home"
    cannot.write_text("")  # a home that is a file: nothing can be made in it
    monkeypatch.setenv("HOME", str(cannot))
    app, _, notes = build()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        said = await _screenshot_from_the_palette(notes, pilot, app)
    assert said == f"Could not save the screenshot in {cannot / 'ppx-tui'} (Not a directory)."


@pytest.mark.parametrize("key", ["question_mark", "s", "ctrl+p"])
async def test_ctrl_c_quits_from_the_help_the_settings_and_the_palette(key):
    """A modal screen keeps the app's bindings from its keys: Ctrl+C did nothing there."""
    app, factory, _ = build()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press(key)
        await until(
            pilot, lambda: isinstance(app.screen, (HelpScreen, SettingsScreen, CommandPalette))
        )
        await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running)
    assert fake_of(factory).names()[-1] == "shutdown"
    assert app.return_code == app.exit_code == 130 and app.stop_signal == signal.SIGINT


async def test_ctrl_c_in_a_settings_field_with_text_selected_copies_it():
    app, _, _ = build()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        steps = app.screen.query_one("#max-steps", Input)
        steps.focus()
        steps.value = "240"
        steps.select_all()
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.clipboard == "240" and app.is_running and app.stop_signal is None


async def test_controller_failures_show_one_sentence():
    app, factory, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        fake = fake_of(factory)

        async def not_writable() -> str:
            raise PersonaPlexError("The recording folder /rec is not writable.")

        fake.save_recording = not_writable  # type: ignore[method-assign]
        await pilot.press("w")
        banner = app.main.query_one(ErrorBanner)
        await until(pilot, lambda: banner.display)
        assert banner.message == "The recording folder /rec is not writable."

        async def broken() -> None:
            raise RuntimeError("stream closed")

        fake.reset = broken  # type: ignore[method-assign]
        await pilot.press("r")
        await until(pilot, lambda: "stream closed" in banner.message)
        assert banner.message == (
            "Could not reset: stream closed. Details are in /tmp/ppx-tui-test.log."
        )


async def test_a_failing_controller_factory_is_shown_not_raised():
    def factory(settings: Settings, sink: object) -> FakeConversation:
        raise PersonaPlexError("No audio input device was found.")

    app = make_app(Settings(), factory, rss_probe=None, cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        banner = app.main.query_one(ErrorBanner)
        assert banner.display and banner.message == "No audio input device was found."


async def test_a_start_that_raises_ends_loading_with_its_message():
    missing = ModelNotFoundError("No model at /models/missing: the folder does not exist.")
    app, _, _ = build(start_error=missing)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.main.query_one(ErrorBanner)
        await until(pilot, lambda: banner.display)
        assert banner.message == "No model at /models/missing: the folder does not exist."
        assert app.state == "error" and not app.main.query_one(LoadPanel).display


async def test_a_start_that_fails_makes_the_exit_code_2_until_a_conversation_runs():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.exit_code == 0
        app.bridge(StateChanged("warming_up"))  # a session that cannot start (a wrong voice)
        app.bridge(StateChanged("error", "Unknown voice 'VARM3'."))
        await until(pilot, lambda: app.state == "error")
        assert (app.load_error, app.exit_code) == ("Unknown voice 'VARM3'.", 2)
        app.bridge(StateChanged("ready"))  # another voice and a reset: it runs after all
        await until(pilot, lambda: app.state == "ready")
        assert (app.load_error, app.exit_code) == (None, 0)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_quit_while_loading_stops_cleanly():
    app, factory, _ = build(load_pause_s=0.5)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state == "loading")
        await pilot.press("q")
        await pilot.pause()
    assert fake_of(factory).names() == ["start", "shutdown"]
    assert not app.is_running


async def test_notices_and_memory_events_reach_the_user():
    app, _, notes = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        app.bridge(Notice("Output device changed to Headphones."))
        app.bridge(MemoryUsage(5_800_000_000, 6_100_000_000))
        await pilot.pause()
        assert "Output device changed to Headphones." in notes
        assert "MLX 5.8 GB" in text_of(app.main.query_one(StatusBar))
        panel = app.main.query_one(TranscriptPanel)
        assert "Headphones" not in panel.plain_text()  # a notice only
        paused = "ppx-tui was paused for 3.0 s (stopped by a signal or a debugger)."
        app.bridge(Notice(paused, in_transcript=True))  # a notice and a line of the transcript
        await pilot.pause()
        assert paused in notes and f"-- {paused} --" in panel.plain_text()


async def test_a_failures_key_hint_follows_its_sentence_on_screen():
    app, _, notes = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        lost = (
            "The output device 'Speakers' stopped playing (unplugged, or its sound server quit "
            "or restarted?)."
        )
        app.bridge(
            EngineError(
                lost, "AudioDeviceError", "Choose another output device and press space to go on."
            )
        )
        app.bridge(StateChanged("error", lost))
        app.bridge(
            Notice(
                "A model step failed (the recording and transcript are kept).",
                "warning",
                "Press space to go on with this conversation, or r to start a new one.",
            )
        )
        banner = app.main.query_one(ErrorBanner)
        await until(pilot, lambda: banner.display and any("step failed" in n for n in notes))
        assert banner.message == (
            "The output device 'Speakers' stopped playing (unplugged, or its sound server quit or "
            "restarted?). Choose another output device and press space to go on."
        )
        assert [n for n in notes if "step failed" in n] == [
            "A model step failed (the recording and transcript are kept). Press space to go on "
            "with this conversation, or r to start a new one."
        ]
        assert app.load_error is None  # a conversation ran: nothing for the terminal


async def test_full_duplex_session_fills_meters_timings_and_transcript():
    app, factory, _ = build(Settings(mode="duplex"), pace_s=0.004)
    stream = conversation_events()
    levels_seen: set[tuple[float, float]] = set()

    def watch(message: object) -> None:  # what the meters showed whenever new data arrived
        if isinstance(message, LiveDataArrived) and app.state == "duplex":
            mic = app.main.query_one("#mic-meter", LevelBar)
            agent = app.main.query_one("#agent-meter", LevelBar)
            levels_seen.add((mic.rms_db, agent.rms_db))

    async with app.run_test(size=(120, 40), message_hook=watch) as pilot:
        await ready(pilot, app)
        mic = app.main.query_one("#mic-meter", LevelBar)
        agent = app.main.query_one("#agent-meter", LevelBar)
        await pilot.press("space")  # the stream comes from another thread, like PortAudio
        fake = fake_of(factory)
        await until(pilot, lambda: fake.played.is_set())
        assert app.state == "duplex"
        assert "DUPLEX" in text_of(app.main.query_one(StatusBar))
        timings = [e.total_ms for e in stream if isinstance(e, StepTiming)]
        await until(pilot, lambda: app.stats.count == len(timings))

        # Meters moved with the speech and the agent's voice.
        assert len({m for m, _ in levels_seen}) > 10 and len({a for _, a in levels_seen}) > 10
        last = [e for e in stream if isinstance(e, Levels)][-1]
        assert (mic.rms_db, agent.rms_db) == (last.mic_rms_db, last.agent_rms_db)
        # Step timing statistics are those of the stream's last window.
        summary = app.stats.summary()
        assert summary is not None
        window = np.array(timings[-125:])
        assert summary.p50_ms == pytest.approx(np.percentile(window, 50))
        assert summary.p95_ms == pytest.approx(np.percentile(window, 95))
        assert summary.max_ms == pytest.approx(window.max())
        await pilot.pause(0.3)  # the panel repaints at most 4 times a second
        panel = text_of(app.main.query_one(TimingPanel))
        assert f"p50 {np.percentile(window, 50):.1f}" in panel and "RTF" in panel
        underruns = [e for e in stream if isinstance(e, PlaybackStats)][-1].underruns
        assert underruns > 0 and f"underruns {underruns}" in panel
        assert "temporal" in panel and "depformer" in panel and "mimi enc" in panel
        # The transcript holds every reply and every user turn, in order.
        text = app.main.query_one(TranscriptPanel).plain_text()
        positions = [text.index(reply) for reply in REPLIES]
        assert positions == sorted(positions)
        turns = [e for e in stream if isinstance(e, UserTurn)]
        assert text.count("[you ") == len(turns) == 3
        # Stop: the meters drop to silence (they froze on the last levels, CLIP included); quit.
        await pilot.press("space")
        await until(pilot, lambda: app.state == "ready")
        await pilot.pause(0.2)
        assert mic.silent and agent.silent and not mic.clipping and not agent.clipping
        await pilot.press("q")
        await pilot.pause()
    assert fake.names() == ["start", "toggle_talk", "toggle_talk", "shutdown"]


async def test_the_bridge_is_thread_safe_and_coalesces_high_rate_events():
    app, _, _ = build()
    handled: list[object] = []
    threads_n, per_thread = 4, 300

    def emit(offset: int) -> None:
        for i in range(per_thread):
            index = offset * per_thread + i
            app.bridge(StepTiming(index, 40.0 + (index % 50)))
            app.bridge(Levels(-20.0 - i % 10, -10.0, -30.0, -12.0))
            app.bridge(FrameOut(index))

    async with app.run_test(size=SIZE, message_hook=handled.append) as pilot:
        await ready(pilot, app)
        workers = [threading.Thread(target=emit, args=(k,)) for k in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        await until(pilot, lambda: app.stats.count == threads_n * per_thread)
        live = [m for m in handled if isinstance(m, LiveDataArrived)]
        assert 0 < len(live) < threads_n * per_thread  # far fewer repaints than events
        app.bridge.close()
        app.bridge(StepTiming(0, 1.0))
        await pilot.pause()
        assert app.stats.count == threads_n * per_thread


async def test_resizes_cleanly_between_small_and_large_terminals():
    app, _, _ = build()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        screen = app.main
        dashboard = screen.query_one("#dashboard")
        assert screen.has_class("-narrow", "-short")
        small = dashboard.region.height
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert screen.has_class("-wide", "-tall")
        assert dashboard.region.height > small
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert dashboard.region.height == small
        for widget in (StatusBar, TimingPanel, TranscriptPanel):
            assert screen.query_one(widget).region.width <= 80


async def test_under_50_columns_the_levels_take_the_row_and_the_timing_comes_back_wider():
    """Beside the meters' 30 columns the step timing was a sliver (at 40 columns `p50 1…`, at
    35 a box cut by the screen's edge): under 50 it is hidden and the levels take the row."""
    app, _, _ = build()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        screen = app.main
        meters, timing = screen.query_one("#meters"), screen.query_one(TimingPanel)
        for width in (49, 40, 35):
            await pilot.resize_terminal(width, 24)
            await pilot.pause()
            assert not timing.display, width
            assert meters.region.x == 0 and meters.region.right == width, (width, meters.region)
        await pilot.resize_terminal(50, 24)
        await pilot.pause()
        assert timing.display and timing.region.right == 50 and timing.region.width >= 20
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert timing.display and meters.region.right == timing.region.x
        assert timing.region.right == 120


async def test_transcript_follows_new_text_unless_scrolled_up():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        transcript = app.main.query_one(TranscriptPanel)
        for turn in range(12):
            app.bridge(UserTurn(turn * 5.0, turn * 5.0 + 2, 25))
            app.bridge(TextOut(turn * 100 + 40, f" reply number {turn}"))
        await until(pilot, lambda: transcript.max_scroll_y > 0)
        await until(pilot, lambda: transcript.scroll_y == transcript.max_scroll_y)
        transcript.scroll_home(animate=False)  # the user scrolls up to read
        await pilot.pause()
        longest = transcript.max_scroll_y
        app.bridge(TextOut(12 * 100 + 41, " more"))
        await until(pilot, lambda: transcript.max_scroll_y > longest)
        await pilot.pause()
        assert transcript.scroll_y == 0


async def test_a_short_transcript_shows_from_the_top_again_after_the_terminal_was_tiny():
    """Shrunk, the text overflowed and the panel anchored to follow it; grown back, the text
    fits, and an anchor left behind would push it to the panel's bottom under blank rows."""
    app, _, _ = build()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        transcript = app.main.query_one(TranscriptPanel)
        app.bridge(UserTurn(0.6, 3.7, 39))
        app.bridge(TextOut(70, " A short reply."))
        await until(pilot, lambda: "short reply" in transcript.plain_text())
        await pilot.pause()
        first = transcript.children[0]
        top = first.region.y
        await pilot.resize_terminal(20, 5)
        await until(pilot, lambda: transcript.is_anchored)  # overflowing: it follows the text
        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: transcript.max_scroll_y == 0 and not transcript.is_anchored)
        await pilot.pause()
        assert first.region.y == top and transcript.scroll_y == 0


def _pick(app: PersonaPlexApp, selector: str, value: object) -> None:
    widget = app.screen.query_one(selector)
    widget.value = value  # type: ignore[attr-defined]


SETTING_CHANGES: list[tuple[str, object, dict[str, object]]] = [
    ("#voice", "VARF4", {"voice": "VARF4"}),
    ("#prompt", "teacher", {"prompt": "teacher"}),
    ("#mode", "duplex", {"mode": "duplex"}),
    ("#max-steps", "240", {"max_steps": 240}),
    ("#echo", True, {"echo_suppression": True}),
    ("#audio-temperature", "0.6", {"audio_temperature": 0.6}),
    ("#audio-top-k", "100", {"audio_top_k": 100}),
    ("#text-temperature", "0", {"text_temperature": 0.0}),
    ("#text-top-k", "10", {"text_top_k": 10}),
    ("#input-device", "USB Audio Interface", {"input_device": "USB Audio Interface"}),
    ("#output-device", "Headphones", {"output_device": "Headphones"}),
    ("#model", "/models/personaplex-8bit", {"model": "/models/personaplex-8bit"}),
]


@pytest.mark.parametrize(("selector", "value", "expected"), SETTING_CHANGES)
async def test_each_setting_changes_through_the_settings_screen(
    tmp_path: Path, selector: str, value: object, expected: dict[str, object]
):
    store = SettingsStore(tmp_path / "settings.toml")
    app, factory, notes = build(store=store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        before = app.settings
        await pilot.press("s")
        assert isinstance(app.screen, SettingsScreen)
        _pick(app, selector, value)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.settings == before.replace(**expected)
        fake = fake_of(factory)
        await until(pilot, lambda: fake.calls[-1][0] == "apply_settings")
        assert fake.calls[-1] == ("apply_settings", app.settings)
        saved = load_settings(store.path)
        for name, wanted in expected.items():
            assert saved.flat()[name] == wanted
        if "mode" in expected:
            assert ("set_mode", "duplex") in fake.calls
        if "model" in expected:
            assert any("next time ppx-tui starts" in n for n in notes)
        await pilot.pause()  # a new model needs a restart, not a reset
        assert app.pending_reset == bool(SESSION_KEYS & expected.keys())


async def test_typing_a_custom_prompt_and_a_reply_length():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        screen = app.screen
        box = screen.query_one("#prompt-text")
        assert box.disabled and box.value == PROMPT_PRESETS["assistant"]  # type: ignore[attr-defined]
        _pick(app, "#prompt", "custom")
        await pilot.pause()
        assert not box.disabled
        box.value = ""  # type: ignore[attr-defined]
        box.focus()
        await pilot.press(*"Be brief.")
        steps = screen.query_one("#max-steps")
        steps.focus()
        await pilot.press("end", "backspace", "backspace", "1", "2", "0")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.settings.session.system_prompt == "Be brief."
        assert app.settings.max_steps == 120
        assert "Be brief." in text_of(app.main.query_one(StatusBar))


async def test_a_pasted_prompt_of_several_lines_is_kept_whole_on_one_line():
    """Textual's Input kept only the first line of a paste, silently; the prompt box takes every
    line, its line breaks as spaces, as the settings file and --prompt-text are taken."""
    from textual import events

    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        screen = app.screen
        _pick(app, "#prompt", "custom")
        await pilot.pause()
        box = screen.query_one("#prompt-text")
        box.value = ""  # type: ignore[attr-defined]
        box.focus()
        box.post_message(events.Paste("Line one 😀 مرحبا\nline two\r\n\tשלום"))
        await pilot.pause()
        assert box.value == "Line one 😀 مرحبا line two שלום"  # type: ignore[attr-defined]
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.settings.session.prompt_text == "Line one 😀 مرحبا line two שלום"
    assert Settings().replace(prompt="custom", prompt_text="a\n b\tc").session.prompt_text == (
        "a b c"
    )


@pytest.mark.parametrize(
    ("selector", "value", "message"),
    [
        ("#max-steps", "20", "Max steps must be between 50 and 500 (got 20)."),
        ("#audio-top-k", "", "Audio top-k must be a whole number (got '')."),
        ("#text-temperature", "3", "Text temperature must be between 0.0 and 2.0 (got 3.0)."),
    ],
)
async def test_bad_values_in_the_settings_screen_are_refused(selector, value, message):
    app, factory, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        before = app.settings
        await pilot.press("s")
        _pick(app, selector, value)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        assert str(app.screen.query_one("#settings-error").render()) == message
        await pilot.press("escape")
        assert app.settings == before
        assert "apply_settings" not in fake_of(factory).names()


async def test_an_empty_custom_prompt_is_refused():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        _pick(app, "#prompt", "custom")
        await pilot.pause()
        _pick(app, "#prompt-text", "  ")
        await pilot.press("ctrl+s")
        await pilot.pause()
        error = str(app.screen.query_one("#settings-error").render())
        assert error == "The custom system prompt is empty; type a prompt or pick a preset."


async def test_settings_screen_keeps_an_unplugged_device_and_works_without_a_list():
    settings = Settings(input_device="Old Mic")
    app = make_app(settings, FakeFactory(), rss_probe=None, cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        screen = app.screen
        assert screen.query_one("#input-device").value == "Old Mic"  # type: ignore[attr-defined]
        assert "device list is not available" in str(screen.query_one("#settings-note").render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.settings == settings


SMALL_SIZES = [(40, 12), (60, 15)]


@pytest.mark.parametrize("size", SMALL_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(("button", "saves"), [("#save", True), ("#cancel", False)])
async def test_a_small_terminal_keeps_save_and_cancel_in_reach(
    size: tuple[int, int], button: str, saves: bool
):
    """At 40x12 the form pushed Save and Cancel below the screen, where neither could be
    reached; the form now scrolls in the rows left above them."""
    app, _, _ = build()
    async with app.run_test(size=size) as pilot:
        await ready(pilot, app)
        before = app.settings
        await pilot.press("s")
        screen = app.screen
        for selector in ("#save", "#cancel"):
            assert screen.region.contains_region(screen.query_one(selector).region), selector
        form, footer = screen.query_one("#settings-form"), screen.query_one("#settings-footer")
        assert screen.region.contains_region(form.region)
        assert not form.region.overlaps(footer.region)
        last = screen.query_one("#user-transcript", Switch)
        last.focus()
        await until(pilot, lambda: form.region.contains_region(last.region))  # scrolled to
        await pilot.press("space")
        await until(pilot, lambda: last.value != before.user_transcript)
        await pilot.click(button)
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        flipped = before.replace(user_transcript=not before.user_transcript)
        assert app.settings == (flipped if saves else before)


async def test_unknown_keys_of_the_settings_file_are_a_notice_on_the_screen_too(tmp_path: Path):
    """The warning line is printed before the screen takes the terminal, where it stayed out of
    sight until the user quit; the app shows it as well."""
    path = tmp_path / "settings.toml"
    path.write_text('voise = "VARF2"\n')
    store = SettingsStore(path)
    store.load()
    assert len(store.warnings) == 1 and "voise (did you mean voice?)" in store.warnings[0]
    app, _, notes = build(store=store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert store.warnings[0] in notes


async def test_engine_data_that_arrives_while_the_screen_is_taken_down_is_dropped(monkeypatch):
    """Leaving mid-load: Textual removes the screen's widgets one by one while the still-running
    engine sends load progress, levels and events; none of them may reach a half-removed screen
    (CI once crashed with `NoMatches: TimingPanel` from `show_live`)."""
    app, _, _ = build(load_pause_s=0.3)
    sent: list[str] = []

    def engine_speaks_on(widget_type: type, what: str) -> None:
        def on_unmount(widget: object) -> None:  # the widget is gone; its siblings may not be
            app.bridge(LoadProgress("load", "Loading the weights"))
            app.bridge(Levels(-20.0, -10.0, -30.0, -25.0))
            app.bridge(StepTiming(0, 10.0, 1.0, 2.0, 3.0))
            app.bridge(TextOut(0, "late", 0.0))
            app.bridge(StateChanged("ready"))
            sent.append(what)

        monkeypatch.setattr(widget_type, "on_unmount", on_unmount, raising=False)

    engine_speaks_on(TimingPanel, "timing")
    engine_speaks_on(TranscriptPanel, "transcript")
    engine_speaks_on(LoadPanel, "load")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state == "loading")
    assert sorted(sent) == ["load", "timing", "transcript"]  # the race was set up
    assert not app.crashed
