"""The chat app wired as `ppx-tui` wires it (flags -> settings -> real loader, engine, controller,
TUI) on the small real model: a full-duplex session from a WAV, and the offline-no-model message."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from model.errors import UnknownVoiceError
from personaplex_tui.audio import FRAME_SAMPLES, read_audio
from personaplex_tui.cli import build_parser
from personaplex_tui.commands.chat import build_app, check_settings
from personaplex_tui.conversation import AudioFactory
from personaplex_tui.events import TextOut
from personaplex_tui.settings_flags import resolve_settings
from personaplex_tui.tui.app import PersonaPlexApp
from personaplex_tui.tui.messages import EngineEventMessage, LiveDataArrived
from personaplex_tui.tui.widgets.error_banner import ErrorBanner
from personaplex_tui.tui.widgets.level_bar import LevelBar
from personaplex_tui.tui.widgets.load_panel import LoadPanel
from personaplex_tui.tui.widgets.status_bar import StatusBar
from personaplex_tui.tui.widgets.timing_panel import TimingPanel
from personaplex_tui.tui.widgets.transcript_panel import TranscriptPanel
from tests.conversation_fakes import AUDIO, CONVERSATION

pytestmark = pytest.mark.asyncio
SEED = 7


def chat_app(tmp_path: Path, *flags: str, audio: AudioFactory | None = None) -> PersonaPlexApp:
    """The app `ppx-tui FLAGS` would run (settings file in tmp_path, files not paced), with a
    seed in its settings: the random model then says the same on every run (unseeded, the
    timing of its reply and the length of its text blocks vary from run to run)."""
    args = build_parser().parse_args([*flags, "--config", str(tmp_path / "settings.toml")])
    settings, store = resolve_settings(args)
    settings = settings.replace(seed=SEED)  # (the settings screen's field; no flag, no file key)
    check_settings(settings)
    return build_app(
        settings,
        store=store,
        log_path=tmp_path / "ppx-tui.log",
        audio=audio or AudioFactory(realtime_files=False, file_end="end"),
        cursor_blink=False,
    )


async def until(pilot: Pilot, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await pilot.pause(0.02)
    raise AssertionError("the app never got there")


def text_of(widget: object) -> str:
    return widget.render().plain  # type: ignore[attr-defined]


# An agent block of the transcript panel's plain text, up to the next entry (its text may span
# lines): `[agent 1.2 s] text`
AGENT_BLOCK = re.compile(r"^\[agent [\d.]+ s\] (.*?)(?=\n\[agent |\n\[you |\n-- |\Z)", re.M | re.S)


def assert_in_agent_blocks(said: str, transcript: str) -> None:
    """`said` (the agent's text pieces, joined) is the transcript's agent blocks in order, all of
    it. The panel starts a new block after 1.5 s without a word, however little the block
    before holds (with an unseeded model, a first block of a few letters is as likely as any),
    and strips each block's ends: only spaces there may differ."""
    rest = said
    for block in AGENT_BLOCK.findall(transcript):
        rest = rest.lstrip()
        assert rest.startswith(block), f"{block!r} is not what the agent said next: {rest!r}"
        rest = rest[len(block) :]
    assert not rest.strip(), f"the transcript lacks the end of what the agent said: {rest!r}"


async def test_a_duplex_session_on_the_real_model_from_a_wav(small_checkpoint, tmp_path):
    app = chat_app(
        tmp_path,
        *("--model", str(small_checkpoint), "--mode", "duplex", "--voice", "VARF2"),
        *("--input-file", str(CONVERSATION), "--output-file", str(tmp_path / "agent.wav")),
        *("--record", str(tmp_path / "rec"), "--timing-log", str(tmp_path / "t.jsonl")),
    )
    levels: set[tuple[float, float]] = set()
    texts: list[str] = []
    states: list[str] = []

    def watch(message: object) -> None:
        if isinstance(message, LiveDataArrived) and app.state == "duplex":
            mic = app.main.query_one("#mic-meter", LevelBar)
            agent = app.main.query_one("#agent-meter", LevelBar)
            levels.add((mic.rms_db, agent.rms_db))
        if isinstance(message, EngineEventMessage) and isinstance(message.event, TextOut):
            texts.append(message.event.text)
        if not states or states[-1] != app.state:
            states.append(app.state)

    async with app.run_test(size=(120, 40), message_hook=watch) as pilot:
        await until(pilot, lambda: app.state == "duplex")  # loaded, warmed up, live at once
        status = text_of(app.main.query_one(StatusBar))
        assert str(small_checkpoint)[-20:] in status and "CPU" in status and "VARF2" in status
        assert not app.main.query_one(LoadPanel).display
        # the file ends the input: the run stops by itself and says so
        await until(pilot, lambda: app.state == "ready" and app.stats.count > 0)
        n = len(read_audio(CONVERSATION).pcm) // FRAME_SAMPLES + 1
        await until(pilot, lambda: app.stats.count == n, 5)

        # meters moved with the speech and the agent's voice
        assert len({m for m, _ in levels}) > 10 and len({a for _, a in levels}) > 10
        # step timings filled the panel (the step is timed by the real model)
        await pilot.pause(0.3)  # the panel repaints at most 4 times a second
        summary = app.stats.summary()
        assert summary is not None and 0 < summary.p50_ms <= summary.max_ms
        panel = app.main.query_one(TimingPanel)
        assert f"p50 {summary.p50_ms:.1f}" in text_of(panel)
        assert f"{n} steps" in str(panel.border_subtitle)
        # the random model's inner monologue is in the transcript, all of it and in order
        transcript = app.main.query_one(TranscriptPanel).plain_text()
        assert texts and "[agent " in transcript
        assert_in_agent_blocks("".join(texts), transcript)
        # MLX memory figures came from the engine
        assert app.device_bytes is not None and app.device_bytes > 0
        assert "MLX" in text_of(app.main.query_one(StatusBar))
        assert not app.main.query_one(ErrorBanner).display
        await pilot.press("q")
        await pilot.pause(0.5)
    assert states[-1] == "stopping" and "error" not in states

    # quitting shut everything down and finished every file
    folders = [p for p in (tmp_path / "rec").iterdir() if p.is_dir()]
    assert len(folders) == 1
    mic, agent = read_audio(folders[0] / "mic.wav").pcm, read_audio(folders[0] / "agent.wav").pcm
    assert len(mic) == len(agent) == n * FRAME_SAMPLES
    assert len(read_audio(tmp_path / "agent.wav").pcm) == n * FRAME_SAMPLES
    md = (folders[0] / "transcript.md").read_text()
    assert "voice VARF2" in md and "has ended" in md
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == n


async def test_no_model_offline_says_what_to_do_in_the_banner(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    app = chat_app(
        tmp_path, "--model", "someone/missing", "--input-file", str(AUDIO / "greeting.wav")
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.state == "error", 20)
        banner = app.main.query_one(ErrorBanner)
        await until(pilot, lambda: banner.display)
        shown = text_of(banner)
        assert "someone/missing is not in the Hugging Face cache" in shown
        assert "--model PATH" in shown and "HF_HUB_OFFLINE" in shown
        await pilot.press("space")  # nothing to talk to: a clear note, no crash
        await pilot.press("q")
        await pilot.pause(0.2)
    assert app.return_code == 2  # the model never loaded: a failure, not a normal quit
    assert app.load_error is not None and "someone/missing" in app.load_error


async def test_a_voice_the_checkpoint_lacks_is_refused_before_the_screen_opens(
    small_checkpoint, tmp_path
):
    with pytest.raises(UnknownVoiceError) as refused:
        chat_app(tmp_path, "--model", str(small_checkpoint), "--voice", "VARM3")
    assert str(refused.value) == (
        "Unknown voice 'VARM3'; choose one of: NATF2, NATM0, VARF2 "
        f"(the voices of the checkpoint in {small_checkpoint.resolve()})."
    )


def _times(screen: str, markdown: str) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
    """(the screen's, transcript.md's) turn times in order: (start, end) for the user's, (start,)
    for the agent's blocks."""

    def seconds(clock: str) -> float:
        minutes, secs = clock.split(":")
        return 60 * int(minutes) + float(secs)

    shown = [
        tuple(float(x) for x in m.groups() if x)
        for m in re.finditer(r"\[(?:you ([\d.]+)–([\d.]+) s|agent ([\d.]+) s)\]", screen)
    ]
    written = [
        tuple(seconds(x) for x in m.groups() if x)
        for m in re.finditer(
            r"\*\*(?:You\*\* · ([\d:.]+)–([\d:.]+)|Agent\*\* · ([\d:.]+))", markdown
        )
    ]
    return shown, written


async def test_the_screen_and_transcript_md_tell_the_same_times_on_one_clock(
    small_checkpoint, tmp_path
):
    app = chat_app(
        tmp_path,
        *("--model", str(small_checkpoint), "--voice", "NATF2", "--max-steps", "50"),
        *("--input-file", str(AUDIO / "greeting.wav"), "--output-file", str(tmp_path / "a.wav")),
        *("--record", str(tmp_path / "rec")),
    )
    states: list[str] = []

    def watch(_: object) -> None:
        if not states or states[-1] != app.state:
            states.append(app.state)

    async with app.run_test(size=(100, 30), message_hook=watch) as pilot:
        await until(pilot, lambda: app.state == "ready", 30)
        await pilot.press("space")  # the file's question is heard and answered
        await until(pilot, lambda: "speaking" in states and app.state == "ready", 30)
        screen = app.main.query_one(TranscriptPanel).plain_text()
        await pilot.press("q")
        await pilot.pause(0.3)
    (folder,) = [p for p in (tmp_path / "rec").iterdir() if p.is_dir()]
    markdown = (folder / "transcript.md").read_text()
    shown, written = _times(screen, markdown)
    assert shown and len(shown[0]) == 2 and any(len(x) == 1 for x in shown), screen
    assert shown == [tuple(round(x, 1) for x in w) for w in written], (screen, markdown)
    user_end = shown[0][1]
    agent = next(x[0] for x in shown if len(x) == 1)
    assert user_end <= agent <= user_end + 2.0  # the reply follows the question on one clock
    assert "· _" not in markdown  # no empty notes


async def test_a_lost_output_shows_its_sentence_then_what_the_keys_do(
    small_checkpoint, tmp_path, monkeypatch
):
    """The output file fills its disk mid-conversation: the banner says so, then how to go on."""
    from tests.test_conversation_disk import FullDisk

    speaker = tmp_path / "out" / "agent.wav"
    speaker.parent.mkdir()
    FullDisk(speaker.parent, free=50_000).install(monkeypatch)  # about 1 s of the agent's voice
    app = chat_app(
        tmp_path,
        *("--model", str(small_checkpoint), "--mode", "duplex", "--voice", "VARF2"),
        *("--input-file", str(CONVERSATION), "--output-file", str(speaker)),
        *("--record", str(tmp_path / "rec")),
    )
    async with app.run_test(size=(120, 40)) as pilot:
        banner = app.main.query_one(ErrorBanner)
        await until(pilot, lambda: banner.display)
        shown = text_of(banner)
        await pilot.press("q")
        await pilot.pause(0.3)
    assert shown.startswith(f"Writing the output file {speaker} failed (No space left on device)")
    assert shown.endswith(" s. Choose another output and press space to go on.")
    assert app.load_error is None and app.return_code == 0  # nothing left for the terminal


async def test_push_to_talk_says_on_the_status_bar_that_it_captures_until_space_again(
    small_checkpoint, tmp_path
):
    """Space while listening (turn-based) starts a capture that only a second space sends: the
    status bar says so. It said LISTENING alone, as before the press, so nothing on the screen
    told that the press was heard or what ends the turn."""
    app = chat_app(
        tmp_path,
        *("--model", str(small_checkpoint), "--no-user-transcript"),
        *("--input-file", str(AUDIO / "greeting.wav"), "--output-file", str(tmp_path / "a.wav")),
        audio=AudioFactory(),  # paced like the app's: the question lasts its 4 s
    )
    async with app.run_test(size=(100, 30)) as pilot:
        bar = app.main.query_one(StatusBar)
        await until(pilot, lambda: app.state == "listening", 30)
        assert "capturing" not in text_of(bar)
        await pilot.press("space")
        await until(pilot, lambda: "capturing" in text_of(bar), 5)
        shown = text_of(bar).splitlines()[0]
        assert shown.startswith(" LISTENING   capturing: press space to send  turn-based"), shown
        await pilot.press("space")  # sent: the model answers, and the note goes
        await until(pilot, lambda: app.state in ("thinking", "speaking"), 10)
        assert "capturing" not in text_of(bar)
        await pilot.press("q")
        await pilot.pause(0.3)
