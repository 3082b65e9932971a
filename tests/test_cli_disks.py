"""Full disks, unreadable inputs, unwritable outputs and bad bytes, as a user meets them: the real
`ppx-tui` in a subprocess. A full disk is `/dev/full` or a file-size limit (RLIMIT_FSIZE, set in
the child with SIGXFSZ ignored, so that a write past it fails with EFBIG like a full disk). Each
case ends in one sentence and exit code 2, checked before the model loads where it can be; a
WAV's header always counts the samples that are really in the file."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import soundfile as sf

from tests.checkpoints import write_small_checkpoint
from tests.cli_runner import size_now

ROOT = Path(__file__).resolve().parents[1]
QUESTION = str(ROOT / "tests" / "data" / "audio" / "weather.wav")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("ckpt"))


def ppx(
    *args: str | bytes,
    file_limit: int | None = None,
    stdout: int | None = subprocess.PIPE,
    pass_fds: tuple[int, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`ppx-tui ARGS`; `file_limit` caps every file it writes at that many bytes."""

    def limit() -> None:
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    environ = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "personaplex_tui", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=environ,
        timeout=300,
        preexec_fn=limit,
        pass_fds=pass_fds,
    )


def one_sentence(proc: subprocess.CompletedProcess, message: str, code: int = 2) -> str:
    """The last stderr line, checked: exit `code`, no traceback, one sentence holding `message`."""
    stderr = proc.stderr.decode(errors="backslashreplace")
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert message in last and last.endswith("."), stderr
    sentence = last.split(" See `ppx-tui")[0]  # a flag mistake points at --help
    assert sentence.count(". ") == 0, last  # one sentence
    return stderr


def wav_counts_its_bytes(path: Path) -> int:
    """The WAV's header counts exactly the samples in the file; returns how many."""
    frames = sf.info(str(path)).frames
    assert path.stat().st_size == 44 + 2 * frames
    assert len(sf.read(str(path))[0]) == frames
    return frames


# --- inputs ----------------------------------------------------------------------------------


def test_an_input_without_read_permission_is_one_sentence(tmp_path):
    if os.geteuid() == 0:  # root reads any file: a write-only kernel file refuses even root
        unreadable = Path("/proc/sys/vm/drop_caches")
    else:
        unreadable = tmp_path / "secret.wav"
        unreadable.write_bytes(Path(QUESTION).read_bytes())
        unreadable.chmod(0)
    proc = ppx("respond", "--input", str(unreadable), "--output", str(tmp_path / "o.wav"))
    one_sentence(proc, f"The audio file {unreadable} cannot be read: you have no permission")
    assert not (tmp_path / "o.wav").exists()


def test_a_fifo_and_a_process_substitution_are_read(ckpt, tmp_path):
    fifo = tmp_path / "question.wav"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(Path(QUESTION).read_bytes()))
    feeder.start()
    out = tmp_path / "a.wav"
    proc = ppx("respond", "--input", str(fifo), "--output", str(out), "--model", str(ckpt),
               "--max-steps", "3")  # fmt: skip
    feeder.join()
    assert proc.returncode == 0, proc.stderr
    assert wav_counts_its_bytes(out) == 3 * 1920
    # `--input <(cat q.wav)`: the shell hands over /dev/fd/N, the read end of a pipe.
    read, write = os.pipe()
    feeder = threading.Thread(target=lambda: (os.write(write, Path(QUESTION).read_bytes()),
                                              os.close(write)))  # fmt: skip
    feeder.start()
    proc = ppx("respond", "--input", f"/dev/fd/{read}", "--output", str(out), "--model",
               str(ckpt), "--max-steps", "2", pass_fds=(read,))  # fmt: skip
    feeder.join()
    os.close(read)
    assert proc.returncode == 0, proc.stderr
    assert wav_counts_its_bytes(out) == 2 * 1920
    # A pipe closed before any audio came is said as such, not as an empty file.
    read, write = os.pipe()
    os.close(write)
    proc = ppx("respond", "--input", f"/dev/fd/{read}", "--output", str(out), pass_fds=(read,))
    os.close(read)
    one_sentence(proc, f"/dev/fd/{read} gave no data (a pipe that ended without any audio).")


def test_an_empty_input_name_is_one_sentence(tmp_path):
    proc = ppx("respond", "--input", "", "--output", str(tmp_path / "o.wav"))
    one_sentence(proc, "No audio file was given (the file name is empty).")
    proc = ppx("--input-file", "", "--config", str(tmp_path / "s.toml"))
    one_sentence(proc, "--input-file needs a path (got an empty one)")


def test_bad_utf8_in_a_file_name_works_and_in_a_prompt_is_one_sentence(ckpt, tmp_path):
    odd = os.fsencode(tmp_path) + b"/bad\xff.wav"
    with open(odd, "wb") as f:
        f.write(Path(QUESTION).read_bytes())
    out = tmp_path / "a.wav"
    proc = ppx("respond", "--input", odd, "--output", str(out), "--model", str(ckpt),
               "--max-steps", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert wav_counts_its_bytes(out) == 2 * 1920
    proc = ppx("respond", "--input", QUESTION, "--output", str(out), "--model", str(ckpt),
               "--prompt-text", b"hi \xff")  # fmt: skip
    stderr = one_sentence(proc, "--prompt-text is not valid UTF-8 text (byte 0xff at character 4).")
    assert "Loading" not in stderr  # refused before the model loads


# --- outputs ---------------------------------------------------------------------------------


def test_a_full_disk_during_respond_output_keeps_a_wav_whose_header_counts_its_data(ckpt, tmp_path):
    out = tmp_path / "reply.wav"
    limit = 44 + 2 * 1920 * 10 + 1  # ten frames and one byte: a sample cut in half
    proc = ppx("respond", "--input", QUESTION, "--output", str(out), "--model", str(ckpt),
               "--max-steps", "40", file_limit=limit)  # fmt: skip
    frames = wav_counts_its_bytes(out)
    assert frames == 10 * 1920  # the half sample was cut off, the rest is counted
    one_sentence(
        proc,
        f"Writing the audio file {out} failed (File too large); it keeps the first "
        f"{frames / 24000:.2f} s, which its header describes.",
    )


def test_a_full_disk_during_dump_tokens_keeps_whole_lines(ckpt, tmp_path):
    dump, out = tmp_path / "tokens.jsonl", tmp_path / "reply.wav"
    proc = ppx("respond", "--input", QUESTION, "--output", str(out), "--model", str(ckpt),
               "--max-steps", "40", "--dump-tokens", str(dump), file_limit=3000)  # fmt: skip
    lines = dump.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a whole line
    rows = [json.loads(line) for line in lines[:-1]]
    assert [r["frame"] for r in rows] == list(range(len(rows))) and rows
    one_sentence(
        proc,
        f"Writing the token dump {dump} failed (File too large); "
        f"it keeps the first {len(rows)} frames.",
    )
    wav_counts_its_bytes(out)  # the reply so far is a valid file too


@pytest.mark.parametrize(
    ("flag", "what"), [("--dump-tokens", "the token dump"), ("--output", "the audio file")]
)
def test_dev_full_outputs_are_refused_before_loading(flag, what, tmp_path):
    args = ["--output", str(tmp_path / "o.wav")] if flag != "--output" else []
    proc = ppx("respond", "--input", QUESTION, flag, "/dev/full", *args,
               "--model", str(tmp_path / "no-such-model"))  # fmt: skip
    stderr = one_sentence(proc, f"Cannot write {what} /dev/full: No space left on device.")
    assert "Loading" not in stderr


@pytest.mark.parametrize(
    "args",
    [["voices"], ["voices", "--json"], ["prompts"], ["prompts", "--json"], ["--help"],
     ["--version"], ["respond", "--help"]],
    ids=" ".join,
)  # fmt: skip
def test_listings_to_a_full_disk_are_one_sentence(args):
    """--help and --version: argparse dropped the error (exit 0, nothing printed)."""
    with open("/dev/full", "wb") as full:
        proc = ppx(*args, stdout=full.fileno())
    one_sentence(proc, "Could not write to the standard output: No space left on device.")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e9"])
def test_chunk_seconds_that_is_not_a_length_is_one_sentence(value, tmp_path):
    proc = ppx("respond", "--input", QUESTION, "--output", str(tmp_path / "o.wav"), "--stream",
               f"--chunk-seconds={value}", "--model", str(tmp_path / "no-such-model"))  # fmt: skip
    one_sentence(proc, f"--chunk-seconds must be more than 0 and at most 240, not {float(value)}.")


def test_unwritable_chat_files_are_refused_before_the_screen_opens(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder should be")
    usb, unmounted = tmp_path / "usb", tmp_path / "media" / "usb"  # a link to a drive not there
    usb.symlink_to(unmounted)
    cases = [
        ("--timing-log", "/proc/x.jsonl", "Cannot create the timing log /proc/x.jsonl: "),
        ("--timing-log", str(blocker / "t.jsonl"),
         f"Cannot write the timing log {blocker / 't.jsonl'}: {blocker} is a file, not a folder."),
        ("--output-file", "/dev/full",
         "Cannot write the output file /dev/full: No space left on device."),
        ("--record", str(blocker / "rec"),
         f"Cannot use {blocker / 'rec'} for recordings: {blocker} is a file, not a folder."),
        ("--record", str(usb), f"Cannot use {usb} for recordings: it is a link to {unmounted}, "
         "which does not exist."),
        ("--record", str(usb / "rec"), f"Cannot use {usb / 'rec'} for recordings: {usb} is a "
         f"link to {unmounted}, which does not exist."),
    ]  # fmt: skip
    for flag, path, message in cases:
        proc = ppx(flag, path, "--input-file", QUESTION, "--config", str(tmp_path / "s.toml"),
                   "--model", str(tmp_path / "no-such-model"))  # fmt: skip
        one_sentence(proc, message)
    assert not Path("/proc/x.jsonl").exists()


def _run_tui_until(args: list[str], home: Path, file_limit: int, done) -> tuple[int, str]:
    """`ppx-tui ARGS` on a pseudo-terminal, as a user starts it; once `done()` holds (or after a
    minute) `q` is pressed. Returns the exit code and the screen's text without escapes."""
    import pty
    import re
    import select
    import time

    environ = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
               "TERM": "xterm-256color", "HOME": str(home), "XDG_CONFIG_HOME": str(home / "cfg"),
               "XDG_STATE_HOME": str(home / "state"), "XDG_CACHE_HOME": str(home / "cache")}  # fmt: skip
    pid, fd = pty.fork()
    if pid == 0:  # the child: a full disk for files over file_limit bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "personaplex_tui", *args], environ)
    screen = b""

    def read(seconds: float) -> bool:
        nonlocal screen
        if select.select([fd], [], [], seconds)[0]:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                return False
            screen += chunk
            return bool(chunk)
        return True

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not done():
        read(0.2)
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:
        read(0.1)
    os.write(fd, b"q")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and read(0.5):
        pass
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = re.sub(rb"\x1b\[[0-9;?<>=]*[a-zA-Z]", b" ", screen).decode(errors="replace")
    return os.waitstatus_to_exitcode(status), " ".join(text.replace("▌", " ").split())


def test_a_full_disk_during_a_tui_recording_keeps_wavs_whose_headers_count_their_data(
    ckpt, tmp_path
):
    rec = tmp_path / "rec"
    limit = 30001  # mic.wav fills first (it is written before each step): 0.62 s and a byte
    mic = lambda: next(rec.glob("*/mic.wav"), None)  # noqa: E731
    code, screen = _run_tui_until(
        ["--mode", "duplex", "--input-file", QUESTION, "--output-file", "/dev/null",
         "--record", str(rec), "--model", str(ckpt)],
        tmp_path / "home",
        limit,
        lambda: mic() is not None and mic().stat().st_size >= limit - 1,
    )  # fmt: skip
    assert code == 0, screen[-2000:]
    folder = mic().parent
    assert wav_counts_its_bytes(folder / "mic.wav") == (limit - 1 - 44) // 2
    assert wav_counts_its_bytes(folder / "agent.wav") > 0
    # The notice, as the screen wraps it in its box, and the line after the screen is gone.
    kept_s = wav_counts_its_bytes(folder / "mic.wav") / 24000
    for piece in (
        "Recording in",
        f"stopped at {kept_s:.1f} s (File too large); what was",
        "recorded until then is kept",
        f"ppx-tui: The recording in {folder} stopped at {kept_s:.1f} s (File too large); "
        "only what came before is saved.",
    ):
        assert piece in screen, screen


# --- checks before the model loads -----------------------------------------------------------


def test_inputs_that_cannot_fit_are_refused_before_loading(tmp_path):
    import numpy as np

    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(24000 * 241, np.float32), 24000, subtype="PCM_16")
    common = ("--output", str(tmp_path / "o.wav"), "--model", str(tmp_path / "no-such-model"))
    proc = ppx("respond", "--input", str(long), *common)
    stderr = one_sentence(proc, "The audio is 241.0 s long, longer than the model's 240.0 s")
    assert "Loading" not in stderr
    proc = ppx("respond", "--input", QUESTION, "--prompt-text", "x" * 2001, *common)
    stderr = one_sentence(proc, "--prompt-text is too long (2001 characters; at most 2000, as in")
    assert "Loading" not in stderr
    assert not (tmp_path / "o.wav").exists()


def test_a_prompt_longer_than_the_context_is_refused_before_prefill(tmp_path):
    from tests.checkpoints import small_config

    ckpt = write_small_checkpoint(tmp_path / "ckpt", config=small_config(context=50))
    out = tmp_path / "o.wav"
    proc = ppx("respond", "--input", QUESTION, "--output", str(out), "--model", str(ckpt),
               "--prompt-text", "hello world " * 20)  # fmt: skip
    one_sentence(proc, "fit in this model's context of 50 frames.")
    assert "The system prompt is " in proc.stderr.decode() and not out.exists()


def test_unknown_settings_keys_are_one_warning_line(tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text('voise = "NATM0"\nmax_step = 300\n[my_tools]\neditor = "vim"\n')
    proc = ppx("--config", str(config), "--timing-log", "/proc/x.jsonl")  # stops before the TUI
    stderr = one_sentence(proc, "Cannot create the timing log /proc/x.jsonl")
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"ppx-tui: warning: {config} has settings this version does not know: voise (did you "
        "mean voice?), max_step (did you mean max_steps?), my_tools; they are kept in the file "
        "but ignored."
    ]


def test_the_timing_log_writes_null_for_phases_not_measured(ckpt, tmp_path):
    log = tmp_path / "timing.jsonl"
    lines = lambda: log.read_text().count("\n") if log.exists() else 0  # noqa: E731
    code, screen = _run_tui_until(
        ["--mode", "duplex", "--input-file", QUESTION, "--output-file", "/dev/null",
         "--timing-log", str(log), "--model", str(ckpt)],
        tmp_path / "home",
        1 << 30,
        lambda: lines() >= 30,
    )  # fmt: skip
    assert code == 0, screen[-2000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    phases = ("encode_ms", "temporal_ms", "depformer_ms", "decode_ms")
    measured = [r for r in rows if r["encode_ms"] is not None]
    unmeasured = [r for r in rows if r["encode_ms"] is None]
    assert measured and unmeasured, rows
    assert all(all(r[p] is None for p in phases) for r in unmeasured)
    assert all(all(r[p] > 0 for p in phases) for r in measured)
    assert all(r["total_ms"] > 0 for r in rows)


# --- voices ----------------------------------------------------------------------------------


def test_a_soak_with_a_voice_the_checkpoint_lacks_says_so_once(ckpt):
    proc = ppx("soak", "--model", str(ckpt), "--frames", "10", "--voice", "VARM3")
    stderr = one_sentence(proc, "Unknown voice 'VARM3'; choose one of: NATF2, NATM0, VARF2 (the")
    assert stderr.count("Unknown voice") == 1, stderr


def test_a_broken_voice_file_says_what_is_wrong(ckpt, tmp_path):
    import shutil

    broken = tmp_path / "ckpt"
    shutil.copytree(ckpt, broken)
    voice = broken / "voices" / "NATF2.safetensors"
    voice.write_bytes(voice.read_bytes()[:100])
    proc = ppx("respond", "--input", QUESTION, "--output", str(tmp_path / "o.wav"),
               "--model", str(broken), "--voice", "NATF2")  # fmt: skip
    one_sentence(proc, f"{voice} is truncated: its header alone needs")


def test_an_input_file_that_is_a_folder_is_called_a_folder(tmp_path):
    proc = ppx("--input-file", str(tmp_path), "--config", str(tmp_path / "s.toml"))
    one_sentence(proc, f"{tmp_path} is a folder, not an audio file.")


def test_a_full_disk_during_the_timing_log_keeps_whole_lines_and_says_so(ckpt, tmp_path):
    log = tmp_path / "timing.jsonl"
    limit = 4001  # some 20 lines, the last one cut
    code, screen = _run_tui_until(
        ["--mode", "duplex", "--input-file", QUESTION, "--output-file", "/dev/null",
         "--timing-log", str(log), "--model", str(ckpt)],
        tmp_path / "home",
        limit,
        lambda: size_now(log) >= limit - 300,
    )  # fmt: skip
    assert code == 0, screen[-2000:]
    data = log.read_bytes()
    assert data.endswith(b"\n") and len(data) < limit
    rows = [json.loads(line) for line in data.splitlines()]  # whole lines only
    assert rows and [r["step"] for r in rows] == list(range(len(rows)))
    for piece in (f"it keeps the {len(rows)} steps logged", "stops here"):
        assert piece in screen, screen


def test_respond_without_a_sound_card_says_to_give_output_before_loading(tmp_path):
    # A machine without sound devices: PortAudio lists none.
    start = (
        "import sys; import personaplex_tui.audio.devices as d; d.list_devices = lambda: []; "
        "from personaplex_tui.cli import main; sys.exit(main())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", start, "respond", "--input", QUESTION,
         "--model", str(tmp_path / "no-such-model")],
        capture_output=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    stderr = one_sentence(
        proc,
        "Cannot play the reply (there is no output device: PortAudio finds no sound device at "
        "all, no sound card or no sound server); give --output FILE.wav to write it to a file "
        "instead.",
    )
    assert "Loading" not in stderr and "by name or index" not in stderr
