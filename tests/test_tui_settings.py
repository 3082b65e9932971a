"""Settings: validation messages, the TOML file round trip, flags over the file, logging to a file."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from model.checkpoints.voice_presets import VOICE_PRESETS
from model.conversation.prompts import PROMPT_PRESETS
from personaplex_tui.logs import setup_logging
from personaplex_tui.settings import (
    CUSTOM_PROMPT,
    Settings,
    SettingsError,
    SettingsStore,
    load_settings,
    save_settings,
    to_toml,
    tomllib,
)
from personaplex_tui.settings_flags import add_chat_arguments, resolve_settings, settings_from_args

AUDIO = Path(__file__).parent / "data" / "audio"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ppx-tui")
    add_chat_arguments(parser)
    return parser.parse_args(list(argv))


def test_settings_offer_exactly_the_models_presets():
    assert [Settings().replace(voice=v).session.voice for v in VOICE_PRESETS] == list(VOICE_PRESETS)
    for name, text in PROMPT_PRESETS.items():
        assert Settings().replace(prompt=name).session.system_prompt == text
    with pytest.raises(SettingsError, match="Unknown voice 'NATF9'; choose one of NATF0, "):
        Settings().replace(voice="NATF9")


def test_round_trip_keeps_every_persisted_field(tmp_path: Path):
    path = tmp_path / "conf" / "settings.toml"
    original = Settings().replace(
        voice="VARM3",
        prompt=CUSTOM_PROMPT,
        prompt_text='You are a pirate.\nSay "arr" \\ often.\t\x01',
        mode="duplex",
        max_steps=321,
        echo_suppression=True,
        audio_temperature=0.65,
        audio_top_k=100,
        text_temperature=0.0,
        text_top_k=1,
        input_device="USB Mic ñ",
        output_device="3",
        model="/models/personaplex-8bit",
        dtype="float16",
        quantize=8,
        record_dir=Path("/tmp/rec"),  # per run: not written
    )
    save_settings(original, path)
    loaded = load_settings(path)
    assert loaded == original.replace(record_dir=None)
    assert "record" not in path.read_text()
    assert tomllib.loads(path.read_text())["prompt_text"] == original.session.prompt_text


def test_missing_file_gives_defaults_and_none_values_are_left_out(tmp_path: Path):
    assert load_settings(tmp_path / "nope.toml") == Settings()
    text = to_toml(Settings())
    assert "input_device" not in text and "model" not in text
    assert tomllib.loads(text)["voice"] == Settings().session.voice


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"voice": "NATF9"}, "Unknown voice 'NATF9'"),
        ({"prompt": "pirate"}, "Unknown system prompt 'pirate'"),
        ({"prompt": CUSTOM_PROMPT, "prompt_text": "   "}, "custom system prompt is empty"),
        ({"mode": "half"}, "Unknown mode 'half'"),
        ({"max_steps": 49}, "Max steps must be between 50 and 500 (got 49)"),
        ({"max_steps": 501}, "Max steps must be between 50 and 500"),
        ({"max_steps": 75.5}, "Max steps must be a whole number"),
        ({"audio_temperature": -0.1}, "Audio temperature must be between 0.0 and 2.0"),
        ({"text_temperature": float("nan")}, "Text temperature must be a number between"),
        ({"audio_top_k": 0}, "Audio top-k must be between 1 and 2048"),
        ({"text_top_k": 40000}, "Text top-k must be between 1 and 32000"),
        ({"echo_suppression": "yes"}, "Echo suppression must be true or false"),
        ({"input_device": " "}, "Input device must be a non-empty name"),
        ({"prompt": CUSTOM_PROMPT, "prompt_text": "x" * 2001}, "too long"),
        ({"dtype": "int8"}, "Unknown dtype 'int8'; choose one of float32, float16, bfloat16"),
        ({"quantize": 3}, "Quantize must be 4 or 8 bits (got 3)"),
        ({"quantize": True}, "Quantize must be 4 or 8 bits"),
        ({"seed": "abc"}, "The seed must be a whole number, not 'abc'"),
        ({"seed": 1.5}, "The seed must be a whole number"),
        ({"seed": -5}, "The seed must be between 0 and"),
        ({"voice": 3}, "The voice must be text (got 3)"),
        ({"prompt_text": 7}, "The prompt text must be text (got 7)"),
    ],
)
def test_bad_values_are_rejected_with_one_clear_sentence(changes, message):
    with pytest.raises(SettingsError) as err:
        Settings().replace(**changes)
    text = str(err.value)
    assert message in text
    assert text.endswith(".") and "\n" not in text


def test_bad_file_values_name_the_file_and_the_key(tmp_path: Path):
    path = tmp_path / "settings.toml"
    path.write_text('voice = "NATM1"\nmax_steps = "many"\n')
    with pytest.raises(SettingsError, match=r"settings\.toml, max_steps must be a whole number"):
        load_settings(path)
    path.write_text("max_steps = 20\n")
    with pytest.raises(SettingsError, match=r"In .*settings\.toml: Max steps must be between"):
        load_settings(path)
    path.write_text('quantize = "4"\n')
    with pytest.raises(SettingsError, match=r"settings\.toml, quantize must be a whole number"):
        load_settings(path)
    path.write_text("voice = \n")
    with pytest.raises(SettingsError, match="is not valid TOML"):
        load_settings(path)


def test_unknown_keys_in_the_file_are_ignored_with_one_warning(tmp_path: Path):
    path = tmp_path / "settings.toml"
    path.write_text('voice = "VARF1"\nvoise = "NATM0"\nmax_step = 300\nfuture_option = 3\n')
    said: list[str] = []
    assert load_settings(path, said.append).session.voice == "VARF1"
    assert said == [
        f"{path} has settings this version does not know: voise (did you mean voice?), "
        "max_step (did you mean max_steps?), future_option; they are kept in the file but ignored."
    ]
    store = SettingsStore(path)
    store.load()
    store.update(mode="duplex")
    store.load()
    assert len(store.warnings) == 1  # once, however often the file is read


USER_FILE = """\
# my settings: NATM0 sounds best on my headset
voice = "NATM0"  # keep this one
max_step = 300   # a typo, kept as it is

mode = "turn"

[my_tools]
editor = "vim"
"""


def test_saving_keeps_the_users_comments_unknown_keys_and_tables(tmp_path: Path):
    path = tmp_path / "settings.toml"
    path.write_text(USER_FILE)
    SettingsStore(path).update(mode="duplex", input_device="USB Mic")
    text = path.read_text()
    for kept in ("# my settings: NATM0 sounds best on my headset", 'voice = "NATM0"  # keep this one',
                 "max_step = 300   # a typo, kept as it is", "[my_tools]", 'editor = "vim"'):  # fmt: skip
        assert kept in text, text
    data = tomllib.loads(text)
    assert data["mode"] == "duplex" and data["input_device"] == "USB Mic"
    assert data["my_tools"] == {"editor": "vim"} and "input_device" not in data["my_tools"]
    assert load_settings(path) == Settings().replace(
        voice="NATM0", mode="duplex", input_device="USB Mic"
    )
    SettingsStore(path).update(input_device=None)  # back to the default device: the key goes
    assert "input_device" not in tomllib.loads(path.read_text())


def test_a_settings_file_that_cannot_be_saved_is_named_in_one_sentence(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("a file where the config folder should be")
    path = tmp_path / "notes.txt" / "settings.toml"
    with pytest.raises(SettingsError) as err:
        save_settings(Settings(mode="duplex"), path)
    assert str(err.value) == (
        f"The settings file {path} could not be saved ({tmp_path / 'notes.txt'} is a file, not a "
        "folder); "
        "the change holds for this run only."
    )


def test_flags_override_the_file(tmp_path: Path):
    path = tmp_path / "settings.toml"
    save_settings(
        Settings().replace(voice="NATM0", mode="duplex", max_steps=200, text_top_k=30), path
    )
    args = parse(
        "--config", str(path),
        "--voice", "varf2",
        "--mode", "turn",
        "--prompt-text", "Talk like a sailor.",
        "--echo-suppression",
        "--model", "/models/pp",
        "--input-device", "USB Mic",
        "--output-device", "2",
        "--input-file", str(AUDIO / "greeting.wav"),
        "--output-file", "out.wav",
        "--record", "recs",
        "--timing-log", "t.jsonl",
    )  # fmt: skip
    settings, store = resolve_settings(args)
    assert store.path == path
    assert settings.session.voice == "VARF2"  # names are case-insensitive
    assert settings.mode == "turn"
    assert (
        settings.session.prompt == CUSTOM_PROMPT
        and settings.session.system_prompt == "Talk like a sailor."
    )
    assert settings.echo_suppression is True
    assert (settings.model, settings.input_device, settings.output_device) == (
        "/models/pp",
        "USB Mic",
        "2",
    )
    assert settings.input_file == AUDIO / "greeting.wav"
    assert (settings.output_file, settings.record_dir, settings.timing_log) == (
        Path("out.wav"),
        Path("recs"),
        Path("t.jsonl"),
    )
    # Values no flag touched come from the file.
    assert (settings.max_steps, settings.session.sampling.text_top_k) == (200, 30)


def test_flags_left_out_keep_the_files_values(tmp_path: Path):
    base = Settings().replace(voice="NATM2", echo_suppression=True, prompt="teacher")
    assert settings_from_args(parse(), base) == base
    assert settings_from_args(parse("--no-echo-suppression"), base).echo_suppression is False
    chosen = settings_from_args(parse("--system-prompt", "casual"), base)
    assert chosen.session.system_prompt == PROMPT_PRESETS["casual"]


def test_bad_flags_are_rejected_clearly(tmp_path: Path, capsys):
    with pytest.raises(SettingsError, match="Max steps must be between 50 and 500"):
        settings_from_args(parse("--max-steps", "5"), Settings())
    with pytest.raises(SettingsError, match="Unknown voice 'BOB'"):
        settings_from_args(parse("--voice", "bob"), Settings())
    with pytest.raises(SettingsError, match="input file .*missing.wav does not exist"):
        settings_from_args(parse("--input-file", str(tmp_path / "missing.wav")), Settings())
    with pytest.raises(SystemExit):
        parse("--max-steps", "lots")
    assert "--max-steps needs a whole number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--system-prompt", "casual", "--prompt-text", "hi")
    assert "not allowed with argument" in capsys.readouterr().err


def test_store_update_writes_only_what_changed(tmp_path: Path):
    path = tmp_path / "settings.toml"
    save_settings(Settings().replace(voice="NATM1", max_steps=120), path)
    store = SettingsStore(path)
    # The app runs with a flag override (voice) and the user changes the mode in the app.
    store.update(mode="duplex", record_dir=Path("x"))
    saved = load_settings(path)
    assert (saved.session.voice, saved.max_steps, saved.mode) == ("NATM1", 120, "duplex")
    with pytest.raises(SettingsError):
        store.update(max_steps=1)
    assert load_settings(path) == saved  # a rejected change leaves the file alone


def test_default_config_path_follows_the_environment(tmp_path: Path, monkeypatch):
    from personaplex_tui.settings import default_config_path

    monkeypatch.setenv("PPX_TUI_CONFIG", str(tmp_path / "my.toml"))
    assert default_config_path() == tmp_path / "my.toml"
    monkeypatch.delenv("PPX_TUI_CONFIG")
    assert default_config_path().name == "settings.toml"
    assert "ppx-tui" in str(default_config_path())


def test_logging_goes_to_a_file_and_never_to_the_terminal(tmp_path: Path):
    log_file = tmp_path / "logs" / "ppx.log"
    code = (
        "import logging, sys, warnings\n"
        "from pathlib import Path\n"
        "from personaplex_tui.logs import setup_logging\n"
        "logging.basicConfig()\n"  # a terminal handler someone else installed
        f"setup_logging(Path({str(log_file)!r}))\n"
        "logging.getLogger('x').warning('hello from x')\n"
        "warnings.warn('careful')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "" and out.stderr == ""
    text = log_file.read_text()
    assert "hello from x" in text and "careful" in text


def test_setup_logging_twice_keeps_one_handler(tmp_path: Path):
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        setup_logging(tmp_path / "a.log")
        setup_logging(tmp_path / "b.log")
        ours = [h for h in root.handlers if h.get_name() == "ppx-tui"]
        assert len(ours) == 1 and Path(ours[0].baseFilename) == tmp_path / "b.log"
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                handler.close()
        root.handlers[:] = before
        root.setLevel(level)
        logging.captureWarnings(False)


def test_a_read_only_settings_file_is_left_alone_and_named(tmp_path: Path):
    path = tmp_path / "settings.toml"
    path.write_text('voice = "NATM0"\n')
    path.chmod(0o444)
    with pytest.raises(SettingsError) as err:
        SettingsStore(path).update(mode="duplex")
    assert str(err.value) == (
        f"The settings file {path} is read-only, so it was not changed; "
        "the change holds for this run only."
    )
    assert path.read_text() == 'voice = "NATM0"\n'
    assert not path.with_name("settings.toml.tmp").exists()


def test_a_voice_in_the_settings_file_is_taken_as_the_flag_takes_it(tmp_path):
    """`--voice natf2` was NATF2 but `voice = "natf2"` in the file was an unknown voice."""
    path = tmp_path / "settings.toml"
    path.write_text('voice = "natf2"\n')
    assert load_settings(path).session.voice == "NATF2"
