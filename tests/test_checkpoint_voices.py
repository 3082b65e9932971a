"""A checkpoint with fewer voices than the 18 presets (here only NATF0): the app warms up and goes
live with the voice it has, a voice it lacks is one sentence before any weight loads, and the
voice choices (`ppx-tui voices --model`, the `v` key, the settings screen) are the checkpoint's."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from textual.pilot import Pilot
from textual.widgets import Select

from model.conversation.session_settings import SessionSettings
from model.errors import CheckpointError, UnknownVoiceError
from personaplex_tui.audio import FRAME_SAMPLES, read_audio
from personaplex_tui.cli import build_parser
from personaplex_tui.commands.chat import build_app, check_settings
from personaplex_tui.conversation import AudioFactory
from personaplex_tui.engine import Engine
from personaplex_tui.events import ModelInfo
from personaplex_tui.model_loader import ModelLoader, load_model
from personaplex_tui.settings import Settings, SettingsStore, load_settings
from personaplex_tui.settings_flags import resolve_settings
from personaplex_tui.tui.app import PersonaPlexApp, make_app
from personaplex_tui.tui.screens.settings_screen import SettingsScreen
from personaplex_tui.tui.widgets.error_banner import ErrorBanner
from personaplex_tui.tui.widgets.status_bar import StatusBar
from tests import cli_runner
from tests.checkpoints import write_small_checkpoint
from tests.fake_hub import COMMIT, fake_hub
from tests.tui_fakes import MODEL_INFO, FakeFactory

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "data" / "audio"
LACKS_NATF2 = "Unknown voice 'NATF2'; choose one of: NATF0 (the voices of the checkpoint in"


@pytest.fixture(scope="module")
def natf0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete small checkpoint whose voices/ holds only NATF0 (not the default NATF2)."""
    return write_small_checkpoint(tmp_path_factory.mktemp("natf0-ckpt"), voices=("NATF0",))


@pytest.fixture(scope="module")
def voices_only(natf0: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the voice files of `natf0`, no weights: anything that tries to load fails on them,
    so a voice error here proves that the voice was checked first."""
    folder = tmp_path_factory.mktemp("voices-only")
    shutil.copytree(natf0 / "voices", folder / "voices")
    return folder


def ppx(*args: str, home: Path) -> subprocess.CompletedProcess:
    """`ppx-tui ARGS` with its settings file in `home`."""
    return cli_runner.ppx(*args, check=False, env={"PPX_TUI_CONFIG": str(home / "settings.toml")})


# --- the command line: one sentence, before the weights ----------------------------------------


def test_voices_with_a_model_lists_only_the_checkpoints_voices(natf0, tmp_path):
    proc = ppx("voices", "--model", str(natf0), "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        {"name": "NATF0", "category": "natural female", "default": False}
    ]
    table = ppx("voices", "--model", str(natf0), home=tmp_path)
    assert table.returncode == 0 and "NATF0" in table.stdout
    assert not any(v in table.stdout for v in ("NATF2", "VARM4", "NATM0"))
    presets = json.loads(ppx("voices", "--json", home=tmp_path).stdout)
    assert len(presets) == 18  # without --model: every preset


def test_voices_of_a_folder_without_voice_files_is_one_sentence(natf0, tmp_path):
    # a whole checkpoint but its voices
    shutil.copytree(natf0, tmp_path / "novoices", ignore=shutil.ignore_patterns("voices"))
    proc = ppx("voices", "--model", str(tmp_path / "novoices"), home=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"ppx-tui: The checkpoint in {tmp_path / 'novoices'} has no voice files "
        "(voices/*.safetensors or voices.tgz)."
    ]
    (tmp_path / "empty").mkdir()  # no checkpoint at all: said as such
    proc = ppx("voices", "--model", str(tmp_path / "empty"), home=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"ppx-tui: {tmp_path / 'empty'} is not a PersonaPlex checkpoint: it has neither "
        "config.json with temporal.safetensors (converted MLX layout) nor model.safetensors "
        "(original layout)."
    ]


def no_weights(folder: Path) -> str:
    """What a folder holding only a PersonaPlex config.json is told."""
    return (
        f"{folder} is not a PersonaPlex checkpoint: it has config.json but no weights (neither "
        "temporal.safetensors, depformer.safetensors and embeddings.safetensors of the converted "
        "MLX layout nor model.safetensors of the original layout)."
    )


@pytest.fixture
def config_only(natf0: Path, tmp_path: Path) -> Path:
    """The config.json of `natf0` alone: no weights, no voices."""
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(natf0 / "config.json", folder)
    return folder


@pytest.mark.parametrize(
    "command",
    [["voices"], ["respond", "--input", str(AUDIO / "greeting.wav")]],
    ids=["voices", "respond"],
)
def test_a_folder_with_only_config_json_is_said_to_lack_the_weights_not_the_voices(
    config_only, tmp_path, command
):
    out = ["--output", str(tmp_path / "out.wav")] if command[0] == "respond" else []
    proc = ppx(*command, "--model", str(config_only), *out, home=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"ppx-tui: {no_weights(config_only.resolve())}"]


def test_the_loader_says_a_fetched_folder_lacks_the_weights_before_its_voices(config_only):
    """A repo id holding only config.json is such a folder once fetched."""
    stages: list[str] = []
    with pytest.raises(CheckpointError) as info:
        load_model(str(config_only), lambda p: stages.append(p.stage), voice="NATF2")
    assert not isinstance(info.value, UnknownVoiceError)
    assert str(info.value) == no_weights(config_only.resolve())
    assert "load" not in stages


def test_voices_of_a_repo_without_voice_files_is_said_as_of_the_same_folder(
    natf0, config_only, tmp_path
):
    """Of a repo id only the voice files were fetched, so a repo holding only config.json (or
    nothing of a checkpoint) was said to have "no voice files" where its folder is said to have
    no weights: its config.json is fetched too and its list of files tells the rest (no weight
    is fetched). Without the hub's list (HF_HUB_OFFLINE), what was fetched is said."""
    whole = tmp_path / "served" / "whole"
    shutil.copytree(natf0, whole, ignore=shutil.ignore_patterns("voices"))
    (tmp_path / "served" / "readme").mkdir()
    (tmp_path / "served" / "readme" / "README.md").write_text("not a model\n")
    no_voices = "has no voice files (voices/*.safetensors or voices.tgz)."
    cases = {
        "someone/config-only": (config_only, no_weights),
        "someone/readme": (
            tmp_path / "served" / "readme",
            lambda folder: (
                f"{folder} is not a PersonaPlex checkpoint: it has neither "
                "config.json with temporal.safetensors (converted MLX layout) nor model.safetensors "
                "(original layout)."
            ),
        ),
        "someone/whole": (whole, lambda folder: f"The checkpoint in {folder} {no_voices}"),
    }
    cache = tmp_path / "hub"
    for repo, (served, sentence) in cases.items():
        snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / COMMIT
        with fake_hub(repo, served, bytes_per_s=1e9) as url:
            env = {"HF_ENDPOINT": url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0"}
            env |= {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # (the download's bars on stderr)
            env |= {"PPX_TUI_CONFIG": str(tmp_path / "settings.toml")}
            proc = cli_runner.ppx("voices", "--model", repo, check=False, env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines() == [f"ppx-tui: {sentence(snapshot)}"], repo
        assert not list(snapshot.rglob("*.safetensors"))  # no weights fetched to say so
    env |= {"HF_HUB_OFFLINE": "1"}
    proc = cli_runner.ppx("voices", "--model", "someone/config-only", check=False, env=env)
    snapshot = cache / "models--someone--config-only" / "snapshots" / COMMIT
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"ppx-tui: The checkpoint in {snapshot} {no_voices}"
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["--mode", "duplex", "--input-file", str(AUDIO / "conversation.wav")],
        ["respond", "--input", str(AUDIO / "greeting.wav")],
        ["soak", "--frames", "5"],
    ],
    ids=["chat", "respond", "soak"],
)
def test_a_voice_the_checkpoint_lacks_is_one_sentence_before_the_weights_load(
    voices_only, tmp_path, command
):
    out = tmp_path / "out.wav"
    outputs = {"respond": ["--output", str(out)], "soak": [], "--mode": ["--output-file", str(out)]}
    model = ["--model", str(voices_only)]
    args = [*command, *model, *outputs[command[0]]]  # the default voice: NATF2
    proc = ppx(*args, home=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"ppx-tui: {LACKS_NATF2} {voices_only.resolve()})."
    assert "Traceback" not in proc.stderr
    assert not [line for line in lines if "NATF2" in line and line != lines[-1]]  # said once
    assert not out.exists()
    if command[0] == "--mode":  # with NATF0 the chat would open its screen (tested below)
        return
    # with the voice it has, the same command goes on to load: and fails on the missing weights
    proc = ppx(*args, "--voice", "NATF0", home=tmp_path)
    assert proc.returncode == 2 and "is not a PersonaPlex checkpoint" in proc.stderr


def test_the_loader_checks_a_fetched_checkpoints_voice_before_reading_weights(voices_only):
    """A repo id is only known once fetched: the TUI's loader checks between the two."""
    stages: list[str] = []
    with pytest.raises(UnknownVoiceError, match=r"^Unknown voice 'NATF2'; choose one of: NATF0 "):
        load_model(str(voices_only), lambda p: stages.append(p.stage), voice="NATF2")
    assert "load" not in stages  # no weight was read
    with pytest.raises(CheckpointError):  # NATF0 passes, and the missing weights are next
        ModelLoader(str(voices_only), voice="natf0")(lambda p: stages.append(p.stage))
    assert stages[-1] == "load"


# --- the engine ------------------------------------------------------------------------------


class _Session:
    def step(self, pcm: np.ndarray) -> None:
        raise AssertionError("not stepped in this test")

    def reset(self) -> None: ...


class _Model:
    def __init__(self, voices: tuple[str, ...]) -> None:
        self.voices, self.asked = voices, []

    def session(self, settings: SessionSettings) -> object:
        self.asked.append(settings)
        if settings.voice not in self.voices:
            raise UnknownVoiceError(f"Unknown voice '{settings.voice}'.")
        return _Session()


def test_the_warm_up_session_has_the_conversations_voice_prompt_and_sampling():
    model = _Model(("NATF0",))
    chosen = SessionSettings("NATF0", "teacher", seed=5).replace(
        audio_temperature=0.3, text_top_k=7
    )

    async def main() -> float | None:
        engine = Engine(
            lambda progress: (model, ModelInfo("x", "f32", "cpu", ("NATF0",))), [].append
        )
        await engine.load()
        took = await engine.warm_up(steps=0, settings=chosen)
        await engine.close()
        return took

    assert asyncio.run(main()) is not None  # no error: the default NATF2 was never asked for
    assert model.asked == [chosen]  # passed on unchanged


# --- the app ---------------------------------------------------------------------------------


async def until(pilot: Pilot, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await pilot.pause(0.02)
    raise AssertionError("the app never got there")


def chat_app(tmp_path: Path, *flags: str, check: bool = True) -> PersonaPlexApp:
    """The app `ppx-tui FLAGS` would run on the real loader (files not paced)."""
    args = build_parser().parse_args([*flags, "--config", str(tmp_path / "settings.toml")])
    settings, store = resolve_settings(args)
    if check:
        check_settings(settings)
    return build_app(
        settings,
        store=store,
        log_path=tmp_path / "ppx-tui.log",
        audio=AudioFactory(realtime_files=False, file_end="end"),
        cursor_blink=False,
    )


@pytest.mark.asyncio
async def test_the_app_goes_live_with_the_only_voice_the_checkpoint_has(natf0, tmp_path):
    out = tmp_path / "out.wav"
    app = chat_app(
        tmp_path,
        *("--model", str(natf0), "--mode", "duplex", "--voice", "NATF0"),
        *("--input-file", str(AUDIO / "conversation.wav"), "--output-file", str(out)),
    )
    states: list[str] = []

    def watch(_: object) -> None:
        if not states or states[-1] != app.state:
            states.append(app.state)

    async with app.run_test(size=(120, 40), message_hook=watch) as pilot:
        await until(pilot, lambda: app.state == "duplex")  # warmed up with NATF0, live
        assert app.voices == ("NATF0",)
        await until(pilot, lambda: app.state == "ready" and app.stats.count > 0)
        assert "NATF0" in app.main.query_one(StatusBar).render().plain
        await pilot.press("v")  # the only voice: v stays on it, nothing is saved
        await pilot.pause(0.1)
        assert app.settings.session.voice == "NATF0"
        await pilot.press("s")
        assert isinstance(app.screen, SettingsScreen)
        assert voice_choices(app.screen) == ["NATF0"]
        await pilot.press("escape")
        await pilot.press("q")
        await pilot.pause(0.3)
    assert "error" not in states and "duplex" in states
    n = len(read_audio(AUDIO / "conversation.wav").pcm) // FRAME_SAMPLES + 1
    assert len(read_audio(out).pcm) == n * FRAME_SAMPLES
    assert (
        not (tmp_path / "settings.toml").exists()
        or "voice" not in (tmp_path / "settings.toml").read_text()
    )


@pytest.mark.asyncio
async def test_a_fetched_checkpoint_without_the_voice_stops_before_its_weights(
    voices_only, tmp_path
):
    """A repo id is checked once fetched (not before the screen opens): the banner says which
    voices it has, and no weight was read (the folder has none)."""
    app = chat_app(
        tmp_path,
        *("--model", str(voices_only), "--input-file", str(AUDIO / "greeting.wav")),
        check=False,
    )
    notes: list[str] = []
    notify = app.notify
    app.notify = lambda message, **kw: (notes.append(message), notify(message, **kw))[1]  # type: ignore[method-assign]
    async with app.run_test(size=(100, 30)) as pilot:
        banner = app.main.query_one(ErrorBanner)
        await until(pilot, lambda: banner.display, 30)
        assert LACKS_NATF2 in banner.render().plain.replace("\n", " ")
        assert app.state == "error" and app.model_info is None
        await pilot.press("v")  # no checkpoint loaded: its voices are not known
        await pilot.pause(0.1)
        assert app.settings.session.voice == "NATF2" and any(
            "once the model has loaded" in n for n in notes
        )
        await pilot.press("q")
        await pilot.pause(0.2)


def voice_choices(screen: object) -> list[str]:
    """The values the settings screen's voice list offers (Textual keeps them in `_options`)."""
    assert isinstance(screen, SettingsScreen)
    return [str(value) for _, value in screen.query_one("#voice", Select)._options]


def fake_app(
    tmp_path: Path, settings: Settings, **fake: object
) -> tuple[PersonaPlexApp, SettingsStore, list[str]]:
    store = SettingsStore(tmp_path / "settings.toml")
    app = make_app(settings, FakeFactory(**fake), store=store, rss_probe=None, cursor_blink=False)
    notes: list[str] = []
    notify = app.notify
    app.notify = lambda message, **kw: (notes.append(message), notify(message, **kw))[1]  # type: ignore[method-assign]
    return app, store, notes


@pytest.mark.asyncio
async def test_v_while_the_model_loads_does_nothing_and_says_why(tmp_path):
    app, store, notes = fake_app(tmp_path, Settings().replace(voice="NATF0"), load_pause_s=0.3)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.state == "loading", 10)
        await pilot.press("v", "v")
        assert app.settings.session.voice == "NATF0"
        assert any("once the model has loaded" in n for n in notes)
        assert not store.path.exists()  # nothing saved
        await pilot.press("s")  # the settings screen offers no other voice yet
        assert isinstance(app.screen, SettingsScreen)
        assert voice_choices(app.screen) == ["NATF0"]
        assert "once the model has loaded" in str(app.screen.query_one("#settings-note").render())
        await pilot.press("escape")
        await pilot.press("q")


@pytest.mark.asyncio
async def test_v_cycles_only_the_checkpoints_voices_and_saves_only_them(tmp_path):
    info = ModelInfo(**{**MODEL_INFO.__dict__, "voices": ("NATF0", "VARM1", "my-voice")})
    app, store, _ = fake_app(tmp_path, Settings().replace(voice="NATF0"), model_info=info)
    seen: list[str] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.state == "ready", 10)
        assert app.voices == ("NATF0", "VARM1")  # presets only: settings take preset names
        for _ in range(4):
            await pilot.press("v")
            await pilot.pause(0.05)
            seen.append(app.settings.session.voice)
            assert load_settings(store.path).session.voice == app.settings.session.voice
        assert seen == ["VARM1", "NATF0", "VARM1", "NATF0"]
        await pilot.press("s")
        assert voice_choices(app.screen) == ["NATF0", "VARM1"]
        await pilot.press("escape")
        # however a voice the checkpoint lacks comes in, it is neither kept nor saved
        app.change_settings(app.settings.replace(voice="VARF3", mode="duplex"))
        await pilot.pause(0.05)
        assert app.settings.session.voice == "NATF0" and app.settings.mode == "duplex"
        saved = load_settings(store.path)
        assert saved.session.voice == "NATF0" and saved.mode == "duplex"
        await pilot.press("q")
