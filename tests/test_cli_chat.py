"""`ppx-tui` (the chat) on the command line: one set of flags, and every mistake the flags can
reveal ends in one sentence and exit code 2 before the screen opens (a subprocess, like a user)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from personaplex_tui.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "data" / "audio"
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
