"""The command line under faults and bad input: Ctrl+C mid-reply, broken audio files, absurd
flags, unwritable outputs, an unreachable hub. Always one sentence and a non-zero exit code,
never a traceback; an interrupted reply leaves a valid WAV of what was generated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.checkpoints import write_small_checkpoint
from tests.cli_runner import size_now

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "data" / "audio"
QUESTION = str(AUDIO / "weather.wav")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("ckpt"))


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **extra}


def ppx(*args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "personaplex_tui", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ or env(),
        timeout=300,
    )


def assert_one_sentence(proc: subprocess.CompletedProcess, message: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert message in last, proc.stderr
    assert last.endswith(".")


def test_ctrl_c_mid_reply_exits_130_and_leaves_a_valid_partial_wav(ckpt, tmp_path):
    out, dump = tmp_path / "reply.wav", tmp_path / "tokens.jsonl"
    # `ppx-tui` as a user's terminal starts it: SIGINT raises KeyboardInterrupt (a test runner
    # started in the background may hand its children an ignored SIGINT).
    start = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from personaplex_tui.cli import main; sys.exit(main())"
    )
    args = ["respond", "--input", QUESTION, "--output", str(out), "--dump-tokens", str(dump),
            "--model", str(ckpt), "--max-steps", "3000", "--seed", "3"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", start, *args],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not size_now(out) > 44 + 2 * 1920 * 20:  # 20 reply frames
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().endswith("ppx-tui: interrupted.")
    assert stdout == ""
    with wave.open(str(out)) as w:  # the header was finished: it counts every sample written
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        frames = w.getnframes()
    assert out.stat().st_size == 44 + 2 * frames
    assert frames % 1920 == 0 and 20 * 1920 <= frames < 3000 * 1920
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    heard = -(-sf.info(QUESTION).frames // 1920)
    assert len(rows) >= heard + frames // 1920  # every frame made was dumped, whole lines only
    assert [r["frame"] for r in rows] == list(range(len(rows)))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _valid_wav(path: Path, seconds: float = 1.0) -> Path:
    sf.write(path, 0.1 * np.sin(np.arange(int(24000 * seconds)) / 7), 24000, subtype="PCM_16")
    return path


def _truncated(path: Path) -> Path:
    data = _valid_wav(path).read_bytes()
    return _write(path, data[: len(data) // 3])


def _garbled(path: Path) -> Path:
    data = bytearray(_valid_wav(path).read_bytes())
    data[20:36] = b"\xff" * 16
    return _write(path, bytes(data))


def _flac_cut(path: Path) -> Path:
    rng = np.random.default_rng(0)
    sf.write(path, 0.3 * rng.standard_normal(48000), 24000, subtype="PCM_16")
    data = path.read_bytes()
    return _write(path, data[: len(data) // 2])


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _write(d / "zero.wav", b""), "The audio file {p} is empty (0 bytes)."),
        (lambda d: _truncated(d / "cut.wav"), "The audio file {p} is truncated: it holds"),
        (lambda d: _garbled(d / "garbled.wav"), "The audio file {p} is corrupt ("),
        (lambda d: _flac_cut(d / "cut.flac"), "The audio file {p} is "),
        (lambda d: _write(d / "photo.wav", PNG), "{p} is not a WAV or FLAC audio file"),
        (lambda d: d, "{p} is a folder, not an audio file."),
    ],
    ids=["zero-length", "truncated-wav", "corrupt-header", "truncated-flac", "not-audio", "folder"],
)
def test_broken_input_audio_is_one_sentence(make, message, tmp_path):
    path = make(tmp_path)
    proc = ppx("respond", "--input", str(path), "--output", str(tmp_path / "o.wav"))
    assert_one_sentence(proc, message.format(p=path))
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-steps", "0"], "--max-steps must be between 1 and 3000 (one context), not 0."),
        (["--max-steps", "100000"], "--max-steps must be between 1 and 3000 (one context), not"),
        (["--text-temp", "-0.1"], "--text-temp must be between 0 and 10, not -0.1."),
        (["--audio-temp", "nan"], "--audio-temp must be between 0 and 10, not nan."),
        (["--audio-top-k", "0"], "--audio-top-k must be at least 1, not 0."),
        (["--chunk-seconds", "0"], "--chunk-seconds must be more than 0 and at most 240, not 0.0."),
        (["--seed", "-1"], "--seed must be between 0 and"),
        (["--voice", "natf9"], "Unknown voice 'natf9'; choose one of"),
        (["--prompt-text", "  "], "The system prompt text is empty."),
        (["--system-prompt", ""], "--system-prompt is empty; give a preset"),
        (["--chunk-seconds", "5"], "--chunk-seconds sets the chunks of --stream"),
        (
            ["--greedy", "--text-temp", "0.7"],
            "--greedy sets the temperatures to 0; drop --text-temp",
        ),
        (["--output", "reply.flac"], "respond writes WAV audio; give --output a .wav name"),
        (
            ["--no-user-transcript", "--stt-model", "x"],
            "--stt-model sets the user transcript's model, which --no-user-transcript turns off",
        ),
    ],
)
def test_absurd_respond_flags_are_one_sentence(args, message, tmp_path):
    proc = ppx("respond", "--input", QUESTION, "--output", str(tmp_path / "o.wav"), *args)
    assert_one_sentence(proc, message)
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps must be between 1 and 100000, not 0."),
        (["--voice-frames", "-5"], "--voice-frames must be between 0 and 1000, not -5."),
        (["--prompt-tokens", "-1"], "--prompt-tokens must be between 0 and 1000, not -1."),
        (["--seed", "-1"], "--seed must be between 0 and"),
        (["--bits", "8"], "--bits is for --random-weights (--small is float32"),
        (["--no-user-transcript", "--stt-quantize", "8"], "--stt-quantize sets the user transc"),
    ],
)
def test_absurd_bench_flags_are_one_sentence(args, message):
    assert_one_sentence(ppx("bench", "--small", "--json", *args), message)


def test_a_malformed_stream_plan_is_one_sentence():
    """PPX_STREAM with a typo would turn the temporal kernel off unseen (a benchmark timing MLX's
    ops); it is refused before anything loads."""
    proc = ppx("bench", "--small", "--json", environ=env() | {"PPX_STREAM": "3;2;1"})
    assert_one_sentence(
        proc, "PPX_STREAM='3;2;1': expected stages,chunks,ahead such as 2,4,1 (or off)."
    )


def test_unwritable_outputs_are_one_sentence(ckpt, tmp_path):
    blocker = _write(tmp_path / "file", b"x")
    proc = ppx("respond", "--input", QUESTION, "--model", str(ckpt), "--max-steps", "2",
               "--output", str(blocker / "reply.wav"))  # fmt: skip
    assert_one_sentence(
        proc,
        f"Cannot write the audio file {blocker / 'reply.wav'}: {blocker} is a file, not a folder.",
    )
    proc = ppx("respond", "--input", QUESTION, "--model", str(ckpt), "--max-steps", "2",
               "--output", str(tmp_path / "r.wav"), "--dump-tokens", str(blocker / "t.jsonl"))  # fmt: skip
    assert_one_sentence(
        proc,
        f"Cannot write the token dump {blocker / 't.jsonl'}: {blocker} is a file, not a folder.",
    )
    assert "Loading" not in proc.stderr  # said before the model loads


def test_an_output_over_the_input_or_another_output_is_refused(ckpt, tmp_path):
    """`--output` naming the question itself would replace the user's recording with the reply;
    the dump and the audio on one file would corrupt both. Refused before loading, untouched."""
    question = _write(tmp_path / "q.wav", Path(QUESTION).read_bytes())
    proc = ppx("respond", "--input", str(question), "--model", str(ckpt), "--max-steps", "2",
               "--output", str(tmp_path / "." / "q.wav"))  # fmt: skip
    assert_one_sentence(proc, f"--output and --input name the same file ({question}): writing "
                        "--output would overwrite the input; give --output another name.")  # fmt: skip
    assert question.read_bytes() == Path(QUESTION).read_bytes()
    both = tmp_path / "both.wav"
    proc = ppx("respond", "--input", QUESTION, "--model", str(ckpt), "--max-steps", "2",
               "--output", str(both), "--dump-tokens", str(both))  # fmt: skip
    assert_one_sentence(proc, f"--dump-tokens and --output name the same file ({both})")
    assert "Loading" not in proc.stderr and not both.exists()


def test_a_folder_that_is_no_checkpoint_says_so_not_that_it_lacks_voices(tmp_path):
    (tmp_path / "empty").mkdir()
    for command in (
        ["respond", "--input", QUESTION, "--output", str(tmp_path / "o.wav")],
        ["voices"],
    ):
        proc = ppx(*command, "--model", str(tmp_path / "empty"))
        assert_one_sentence(proc, f"{tmp_path / 'empty'} is not a PersonaPlex checkpoint: it has")
    proc = ppx("respond", "--input", QUESTION, "--output", str(tmp_path / "o.wav"), "--model", "")
    assert proc.returncode == 2 and "give a Hugging Face repo id or a folder, not ''" in proc.stderr


def test_an_unreachable_hub_is_one_sentence(tmp_path):
    environ = env(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    environ.pop("HF_HUB_OFFLINE")
    environ.pop("HF_HUB_CACHE", None)
    proc = ppx("respond", "--input", QUESTION, "--output", str(tmp_path / "o.wav"),
               "--model", "someone/some-model", environ=environ)  # fmt: skip
    assert_one_sentence(
        proc, "Could not download someone/some-model (the Hugging Face hub is unreachable)"
    )
    assert "--model PATH" in proc.stderr


def test_a_missing_dependency_is_one_sentence(tmp_path):
    """A partial install (here: soxr hidden, as on a GPU box that lacked it) is one sentence."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'soxr':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    proc = ppx("soak", "--frames", "5", environ=env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}"))
    assert_one_sentence(proc, "The Python module 'soxr' that ppx-tui needs is not installed")
    assert proc.stderr.strip().count("\n") == 0


def test_a_missing_module_of_our_own_is_a_bug_with_its_traceback():
    from personaplex_tui import cli

    assert cli._our_module("model.nothing") and cli._our_module("personaplex_tui.x")
    assert not cli._our_module("soxr") and not cli._our_module(None)


CTRL_C_WHILE_LOADING = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal starts it (see above)

class CtrlC:  # Ctrl+C arrives while the command line's modules are being imported
    def find_spec(self, name, path, target=None):
        if name == "personaplex_tui.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
from personaplex_tui.entry import main
sys.exit(main())
"""


def _entry_with_help(script: str) -> subprocess.CompletedProcess:
    """`script` (which runs the console script's `main`) with `--help`, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", script, "--help"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_ctrl_c_while_the_command_line_loads_is_interrupted_not_a_traceback():
    """The console script (`personaplex_tui.entry`) catches a Ctrl+C that lands before `cli.main`
    installed the signal policy (its imports take ~0.5 s): the same sentence and exit code."""
    proc = _entry_with_help(CTRL_C_WHILE_LOADING)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr == "ppx-tui: interrupted.\n"


def test_ctrl_c_while_a_c_extension_loads_is_interrupted_not_a_traceback():
    """A Ctrl+C raised inside a C extension's initialisation broke it: sentencepiece's import
    failed with ImportError (a traceback, exit 1), MLX's nanobind aborted the process. The
    signal is only recorded while the command line's modules load; the stop comes after."""
    extension = CTRL_C_WHILE_LOADING.replace(
        """        if name == "personaplex_tui.cli":
            os.kill(os.getpid(), signal.SIGINT)
""",
        """        if name == "sentencepiece":  # its initialisation fails on an exception, as C does
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                raise ImportError("initialization failed") from None
""",
    )
    assert extension != CTRL_C_WHILE_LOADING
    proc = _entry_with_help(extension)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr == "ppx-tui: interrupted.\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_sigterm_or_sighup_while_the_command_line_loads_is_one_sentence(sig):
    """Only a Ctrl+C was caught while the modules load (~0.5 s): a SIGTERM or SIGHUP there
    killed the process by its signal, with no word (1 in 4 of a stress test's random stops
    of sound-check, a command of under a second)."""
    other = CTRL_C_WHILE_LOADING.replace("signal.SIGINT)\n", f"signal.{sig.name})\n")
    assert other != CTRL_C_WHILE_LOADING
    proc = _entry_with_help(other)
    assert proc.returncode == 128 + sig, proc.stderr[-2000:]
    assert proc.stderr == f"ppx-tui: stopped by {sig.name}.\n"


LATE_SIGNAL = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from personaplex_tui.entry import main
code = main()
# CPython's teardown puts SIG_DFL back for a signal with a Python handler, not an ignored one
print([signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM)])
os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl+C as the process winds down
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.1)
sys.exit(code)
"""


def test_a_signal_after_the_command_returned_does_not_change_the_exit():
    """Once the command returned, the stop signals are ignored outright: the interpreter's
    teardown would otherwise restore the default handlers, and a second Ctrl+C a few ms after
    the first killed the process by SIGINT (exit -2) instead of its 130."""
    proc = subprocess.run(
        [sys.executable, "-c", LATE_SIGNAL, "prompts"],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[True, True]"


def test_an_unknown_flag_of_a_subcommand_points_to_its_help():
    proc = ppx("voices", "--colour")
    assert proc.returncode == 2
    assert proc.stderr == (
        "ppx-tui voices: unrecognized arguments: --colour. See `ppx-tui voices --help`.\n"
    )
    proc = ppx("--colour")
    assert proc.returncode == 2 and "See `ppx-tui --help`." in proc.stderr
