"""`ppx-tui` (the chat) on the command line: one set of flags, and every mistake the flags can
reveal ends in one sentence and exit code 2 before the screen opens (a subprocess, like a user)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from personaplex_tui.audio import DeviceInfo
from personaplex_tui.cli import build_parser
from tests.checkpoints import write_small_checkpoint

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "data" / "audio"
PULSE_KEYS = ("PULSE_SERVER", "HOME", "XDG_RUNTIME_DIR")  # the private server, for the chat
CHAT_FLAGS = {
    "--config",
    "--dtype",
    "--quantize",
    "--mode",
    "--voice",
    "--system-prompt",
    "--prompt-text",
    "--max-steps",
    "--echo-suppression",
    "--no-echo-suppression",
    "--echo-cancellation",
    "--no-echo-cancellation",
    "--noise-suppression",
    "--no-noise-suppression",
    "--auto-gain",
    "--no-auto-gain",
    "--model",
    "--user-transcript",
    "--no-user-transcript",
    "--stt-model",
    "--stt-quantize",
    "--input-device",
    "--output-device",
    "--input-file",
    "--output-file",
    "--record",
    "--timing-log",
}


def ppx(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PPX_TUI_CONFIG": str(tmp_path / "settings.toml"),
        "PPX_TUI_LOG": str(tmp_path / "ppx-tui.log"),
    }
    return subprocess.run(
        [sys.executable, "-m", "personaplex_tui", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_the_chat_has_exactly_one_set_of_flags():
    parser = build_parser()
    top = {s for a in parser._actions for s in a.option_strings}
    assert top - {"-h", "--help", "--version"} == CHAT_FLAGS
    help_text = parser.format_help()
    for flag in ("--record DIR", "--timing-log FILE.jsonl", "--model REPO_OR_DIR"):
        assert flag in help_text
    assert "--record-dir" not in help_text and "--save-dir" not in help_text


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["--voice", "BOB"], "Unknown voice 'BOB'; choose one of NATF0, NATF1, "),
        (["--system-prompt", "pirate"], "Unknown system prompt 'pirate'; choose one of assistant,"),
        (["--input-file", "missing.wav"], "The input file missing.wav does not exist."),
        (["--input-file", str(ROOT / "pyproject.toml")], "is not a WAV or FLAC audio file"),
        (["--max-steps", "many"], "--max-steps needs a whole number (got 'many')."),
        (["--max-steps", "5"], "Max steps must be between 50 and 500 (got 5)."),
        (["--mode", "karaoke"], "invalid choice: 'karaoke'"),
        (["--quantize", "3"], "invalid choice: 3"),
        (["--dtype", "int8"], "invalid choice: 'int8'"),
        (["--model", "./no/such/folder"], "No model folder at ./no/such/folder; pass --model PATH"),
        (["--output-file", str(AUDIO)], "it is a folder; give a file name."),
        (["--voice", "VARF2", "voices"], "--voice is an option of the chat; put the options of"),
        (
            [
                "--input-file",
                str(AUDIO / "greeting.wav"),
                "--output-file",
                str(AUDIO / "greeting.wav"),
            ],
            "--output-file and --input-file name the same file",
        ),
    ],
)
def test_a_mistake_is_one_sentence_and_exit_code_2(tmp_path, argv, sentence):
    done = ppx(tmp_path, *argv)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppx-tui: "), done.stderr
    assert sentence in lines[0]
    assert "Traceback" not in done.stderr


def test_a_bad_settings_file_is_named(tmp_path):
    (tmp_path / "settings.toml").write_text('voice = "NOBODY"\n')
    done = ppx(tmp_path, "--mode", "duplex")
    assert done.returncode == 2
    assert done.stderr.startswith(f"ppx-tui: In {tmp_path / 'settings.toml'}: Unknown voice")


def test_stderr_of_c_libraries_goes_to_the_log_while_the_tui_runs(tmp_path):
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from personaplex_tui.stderr_capture import stderr_to_file\n"
        "with stderr_to_file(Path(sys.argv[1])):\n"
        "    os.write(2, b'Expression alsa_snd_pcm failed\\n')\n"  # what PortAudio does
        "    print('drawn by the TUI', file=sys.__stderr__, flush=True)\n"
        "os.write(2, b'after\\n')\n"
    )
    log = tmp_path / "ppx-tui.log"
    done = subprocess.run(
        [sys.executable, "-c", code, str(log)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "drawn by the TUI\nafter\n"
    assert log.read_text() == "Expression alsa_snd_pcm failed\n"


def test_after_the_screen_closes_the_files_written_are_named(tmp_path):
    import numpy as np
    import soundfile as sf

    from personaplex_tui.commands.chat import after_exit_lines
    from personaplex_tui.settings import Settings

    sf.write(tmp_path / "agent.wav", np.zeros(1920, np.float32), 24000, subtype="PCM_16")
    settings = Settings(
        output_file=tmp_path / "agent.wav",
        record_dir=tmp_path / "never-made",
        timing_log=tmp_path / "t.jsonl",
    )
    assert after_exit_lines(settings) == [f"ppx-tui: the agent's audio is in {tmp_path}/agent.wav"]
    # Where writing failed at once there is no audio to point at: /dev/full, an empty WAV.
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 24000, subtype="PCM_16")
    for failed in (Path("/dev/full"), tmp_path / "empty.wav"):
        assert after_exit_lines(Settings(output_file=failed)) == []


def test_the_chat_loads_the_model_as_dtype_and_quantize_say(monkeypatch, tmp_path):
    from personaplex_tui.commands import chat
    from personaplex_tui.model_loader import ModelLoader
    from personaplex_tui.settings_flags import resolve_settings

    loaders = []

    def factory(loader, *rest):
        loaders.append(loader)
        return lambda settings, sink: None

    monkeypatch.setattr(chat, "controller_factory", factory)
    argv = ["--model", str(tmp_path), "--quantize", "4", "--dtype", "float16", "--voice", "VARM1"]
    args = build_parser().parse_args([*argv, "--config", str(tmp_path / "settings.toml")])
    settings, _ = resolve_settings(args)
    chat.build_app(settings.replace(text_temperature=0.5))  # as the settings file may say
    from model.config import SamplingConfig
    from personaplex_tui.user_transcript import SttChoice

    stt = SttChoice()  # the user's transcript: on, the default STT model
    # the conversation's sampling too: the JIT helpers compile its LM step graphs
    sampling = SamplingConfig(text_temperature=0.5)
    assert loaders == [
        ModelLoader(
            str(tmp_path), dtype="float16", quantize=4, voice="VARM1", stt=stt, sampling=sampling
        )
    ]


def test_a_place_the_screen_cannot_be_drawn_is_one_sentence(tmp_path, monkeypatch):
    """Standard output redirected (the screen was drawn at 80x24 whatever the window, or into
    the file), or TERM=dumb: one sentence and exit code 2 before anything loads; a monochrome
    terminal gets NO_COLOR."""
    from personaplex_tui.commands import chat
    from personaplex_tui.commands.common import UsageError
    from tests.checkpoints import write_small_checkpoint

    folder = write_small_checkpoint(tmp_path / "m")
    proc = ppx(tmp_path, "--model", str(folder), "--no-user-transcript")  # stdout: a pipe
    assert proc.returncode == 2
    assert "standard output, which is not a terminal here" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("RIFF...WAVEfmt "))  # `ppx-tui < talk.wav`
    with pytest.raises(UsageError, match="reads its keys from standard input, which is not a"):
        chat.check_terminal()
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "dumb")
    with pytest.raises(UsageError, match="TERM=dumb has none"):
        chat.check_terminal()
    monkeypatch.setenv("TERM", "xterm-mono")
    monkeypatch.setenv("NO_COLOR", "")  # recorded, so that the test's NO_COLOR is undone after
    monkeypatch.delenv("NO_COLOR")  # (CI: it was left set, and every later snapshot lost colour)
    chat.check_terminal()
    assert os.environ["NO_COLOR"] == "1"


def test_an_input_file_cut_short_is_said_before_the_chat(tmp_path, capsys):
    """`--input-file talk.ogg` cut short (an interrupted download) is used, with a warning."""
    import numpy as np
    import soundfile as sf

    from personaplex_tui.commands.chat import check_settings
    from personaplex_tui.settings_flags import resolve_settings

    talk = tmp_path / "talk.ogg"
    sf.write(talk, 0.2 * np.random.default_rng(0).standard_normal(96000), 24000, format="OGG")
    flags = ["--input-file", str(talk), "--config", str(tmp_path / "settings.toml")]
    check_settings(resolve_settings(build_parser().parse_args(flags))[0])
    assert capsys.readouterr().err == ""
    talk.write_bytes(talk.read_bytes()[: talk.stat().st_size * 6 // 10])
    check_settings(resolve_settings(build_parser().parse_args(flags))[0])
    assert capsys.readouterr().err.startswith(f"ppx-tui: warning: The audio file {talk} seems cut")


# Sound devices as PortAudio lists them, for the chat's check of the devices its flags name.
FAKE_DEVICES = [
    DeviceInfo(0, "Built-in Microphone", "Core Audio", 1, 0, 48000.0, is_default_input=True),
    DeviceInfo(1, "Built-in Output", "Core Audio", 0, 2, 48000.0, is_default_output=True),
]


class _Loaded(Exception):
    """What the fake `build_app` raises: the chat went on to build the app that loads the model."""


@pytest.fixture
def chat_until_the_model(monkeypatch, tmp_path):
    """`ppx-tui ARGS` in this process on FAKE_DEVICES, as far as building the app that loads the
    model (it raises _Loaded there), on a terminal; the model named is a repo never fetched."""
    from personaplex_tui.audio import devices
    from personaplex_tui.cli import main
    from personaplex_tui.commands import chat

    built: list[object] = []

    def build_app(*args: object, **kwargs: object) -> None:
        built.append(args)
        raise _Loaded

    monkeypatch.setattr(chat, "build_app", build_app)
    monkeypatch.setattr(chat, "check_terminal", lambda: None)
    monkeypatch.setattr(devices, "list_devices", lambda: FAKE_DEVICES)
    monkeypatch.setenv("PPX_TUI_LOG", str(tmp_path / "ppx-tui.log"))
    config = ["--config", str(tmp_path / "settings.toml"), "--model", "someone/never-fetched"]
    return lambda *argv: (main([*argv, *config]), built)


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["--input-device", "Studio Mic"], "No input device matches 'Studio Mic'"),
        (["--mode", "duplex", "--output-device", "Hall PA"], "No output device matches 'Hall PA'"),
        (["--input-device", "Built-in Output"], "Sound device 1 ('Built-in Output') has no input"),
        (
            ["--input-file", str(AUDIO / "greeting.wav"), "--output-device", "Hall PA"],
            "No output device matches 'Hall PA'",
        ),
    ],
)
def test_a_device_the_flags_name_that_is_not_there_is_said_before_the_model_loads(
    chat_until_the_model, capsys, argv, sentence
):
    """It was said in the app's banner once the model had loaded (many seconds on the real
    model), and the chat went on without a conversation."""
    code, built = chat_until_the_model(*argv)
    err = capsys.readouterr().err
    assert code == 2 and not built, err
    assert err.startswith(f"ppx-tui: {sentence}") and err.count("\n") == 1, err
    assert err.rstrip().endswith("(run `ppx-tui devices` to list them).")


def test_devices_that_are_there_or_replaced_by_files_go_on_to_the_model(
    chat_until_the_model, monkeypatch
):
    """Devices that exist pass; with --input-file and --output-file no device is used, and
    PortAudio is not even started for the names the flags give."""
    from personaplex_tui.audio import devices

    with pytest.raises(_Loaded):
        chat_until_the_model("--input-device", "microphone", "--output-device", "built-in out")

    def no_portaudio() -> None:
        raise AssertionError("PortAudio was started for a chat on files")

    monkeypatch.setattr(devices, "list_devices", no_portaudio)
    monkeypatch.setattr(devices, "portaudio", no_portaudio)
    files = ["--input-file", str(AUDIO / "greeting.wav"), "--output-file", "out.wav"]
    with pytest.raises(_Loaded):
        chat_until_the_model(*files, "--input-device", "Studio Mic", "--output-device", "Hall PA")


@pytest.mark.parametrize(
    ("stored", "flags", "warned"),
    [
        ('input_device = "USB Headset"', [], [("input", "No input device matches 'USB Headset'")]),
        (
            'input_device = "USB Headset"\noutput_device = "Hall PA"',
            ["--output-device", "built-in out"],  # a flag's device, there, takes the file's place
            [("input", "No input device matches 'USB Headset'")],
        ),
        (
            'input_device = "Built-in Output"\noutput_device = "Hall PA"',
            [],
            [
                ("input", "Sound device 1 ('Built-in Output') has no input channels"),
                ("output", "No output device matches 'Hall PA'"),
            ],
        ),
        ('input_device = "USB Headset"', ["--input-device", "microphone"], []),
        ('input_device = "USB Headset"', ["--input-file", str(AUDIO / "greeting.wav")], []),
    ],
    ids=["input", "flag-for-the-other", "both", "flag-over-it", "file-over-it"],
)
def test_a_device_of_the_settings_file_that_is_not_there_is_a_warning_before_the_model_loads(
    chat_until_the_model, monkeypatch, tmp_path, capsys, stored, flags, warned
):
    """It was said only once the model had loaded (minutes on the real model), in a banner.
    Unlike a flag's, it does not end the chat: another can be chosen in the settings while the
    model loads, or it can be plugged in; no other device is opened in its stead. Said on the
    terminal, and on the screen with the settings file's other warnings (`store.warnings`)."""
    from personaplex_tui.commands import chat

    (tmp_path / "settings.toml").write_text(stored + "\n")
    stores: list[object] = []

    def build_app(*args: object, store: object = None, **kwargs: object) -> None:
        stores.append(store)
        raise _Loaded

    monkeypatch.setattr(chat, "build_app", build_app)
    with pytest.raises(_Loaded):
        chat_until_the_model(*flags)
    path = tmp_path / "settings.toml"
    sentences = [
        f"{path}: {reason} (run `ppx-tui devices` to list them); plug it in, or choose another "
        f"{direction} device in the settings (press s) while the model loads."
        for direction, reason in warned
    ]
    assert capsys.readouterr().err == "".join(f"ppx-tui: warning: {s}\n" for s in sentences)
    assert [store.warnings for store in stores] == [sentences]  # type: ignore[attr-defined]


def test_a_missing_device_on_a_real_sound_server_ends_the_chat_before_its_screen(
    pulse_null_sink, tmp_path
):
    """Through PortAudio and the tests' private PulseAudio server, on a terminal: the sentence
    and exit code 2, before the screen opens and the model loads (the folder named holds no
    weights: loading it would fail in a banner)."""
    from tests.tui_pty import PtyProcess, after_screen, user_env

    voices_only = write_small_checkpoint(tmp_path / "m")
    for weights in voices_only.glob("*.safetensors"):
        weights.unlink()
    env = {**user_env(tmp_path), **{k: pulse_null_sink[k] for k in PULSE_KEYS}}
    argv = ["--model", str(voices_only), "--mode", "duplex", "--no-user-transcript"]
    tui = PtyProcess([*argv, "--input-device", "no such mic"], env=env)
    try:
        code = tui.wait(timeout=60)
        output = tui.output
    finally:
        tui.close()
    assert code == 2, output[-2000:]
    assert "\x1b[?1049h" not in output  # the screen never opened
    assert after_screen(output) == [
        "ppx-tui: No input device matches 'no such mic' (run `ppx-tui devices` to list them)."
    ]
