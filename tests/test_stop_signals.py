"""Signals, as a user's terminal or `kill` sends them, to real `ppx-tui` processes on a small
checkpoint: SIGINT, SIGTERM and SIGHUP stop the model between steps, every file is finished (WAV
headers describe what is on disk, the transcript has its end record, token dumps and timing
logs are whole), the terminal is restored, the exit code is 128 + the signal's number, and a
second signal during the shutdown prints no traceback."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from personaplex_tui.stop_signals import SignalPolicy, Stopped
from tests.cli_runner import size_now
from tests.tui_pty import RESTORE_SEQUENCES, ROOT, PtyProcess, after_screen, user_env

AUDIO = ROOT / "tests" / "data" / "audio"
CONVERSATION = str(AUDIO / "conversation.wav")  # 20 s: the conversation is still live when stopped
FRAME_BYTES = 2 * 1920


def assert_wav_whole(path: Path) -> int:
    """The header counts exactly the samples on disk (16-bit mono); returns that count."""
    info = sf.info(str(path))
    on_disk = (path.stat().st_size - 44) // 2
    assert (info.frames, info.samplerate, info.channels) == (on_disk, 24000, 1), path
    return info.frames


def assert_stays(path: Path, size: int, seconds: float = 0.5) -> None:
    time.sleep(seconds)
    assert path.stat().st_size == size, f"{path} still grows"


def only(pattern: str, folder: Path) -> Path:
    (found,) = folder.glob(pattern)
    return found


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the policy, in this process ---------------------------------------------------------


@pytest.fixture
def policy():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    policy = SignalPolicy()
    policy.install()
    yield policy
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_the_first_signal_stops_at_once_by_default_and_a_second_is_ignored(policy):
    with pytest.raises(Stopped) as stopped:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs before this returns
    assert (stopped.value.signum, stopped.value.exit_code, policy.exit_code) == (15, 143, 143)
    os.kill(os.getpid(), signal.SIGINT)  # while stopping: nothing raised, nothing changed
    time.sleep(0.05)
    assert policy.received == signal.SIGTERM


def test_deferred_a_signal_is_recorded_reported_and_raised_between_steps(policy):
    seen: list[int] = []
    with policy.deferred(seen.append):
        policy.check()  # nothing yet
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
        assert seen == [signal.SIGHUP] and policy.exit_code == 129
        with pytest.raises(Stopped):
            policy.check()


def test_held_raises_for_a_signal_inside_it_only(policy):
    """`held` (around C calls and extensions' inits): a signal inside is raised as it ends; one
    that came before (its `Stopped` raised then and dealt with, the command winding down) is
    not raised again by every later held call (the console script's last imports were)."""
    with pytest.raises(Stopped):
        with policy.held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # recorded, not raised, inside
            inside = policy.received
    assert inside == signal.SIGINT
    try:
        with policy.held():  # the same signal, already raised: nothing more
            pass
    except Stopped:  # (a KeyboardInterrupt: it would end the test run, not fail a test)
        pytest.fail("held raised again a signal that came before it")


def test_deferred_with_repeats_every_later_signal_is_reported_too(policy):
    """The chat hears a second Ctrl+C (it leaves without waiting for its shutdown)."""
    seen: list[int] = []
    with policy.deferred(seen.append, repeats=True):
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)  # out of it: recorded only, as before
    time.sleep(0.05)
    assert seen == [signal.SIGINT, signal.SIGINT, signal.SIGTERM]
    assert policy.received == signal.SIGINT


class _Interrupted(io.FileIO):
    """A file whose third read or write (their sizes go to `calls`) meets the user's Ctrl+C."""

    def __init__(self, path: Path, mode: str, calls: list[int]) -> None:
        super().__init__(path, mode)
        self.calls = calls

    def _call(self, size: int) -> None:
        self.calls.append(size)
        if len(self.calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    def readinto(self, buffer):
        self._call(len(buffer))
        return super().readinto(buffer)

    def write(self, data):
        self._call(len(data))
        return super().write(data)


@pytest.mark.parametrize("name", ["speech.wav", "speech.flac"])
def test_a_signal_while_libsndfile_reads_a_file_stops_there_not_as_a_truncated_file(
    commands_policy, monkeypatch, tmp_path, name
):
    """libsndfile reads a Python file through cffi callbacks, which swallow what they raise:
    a Ctrl+C there printed a traceback and the file was said to be truncated (exit 2)."""
    from personaplex_tui.audio import audio_file, read_audio

    path = tmp_path / name
    sf.write(path, np.sin(np.arange(48000) / 9).astype(np.float32) * 0.3, 24000)
    reads: list[int] = []
    monkeypatch.setattr(
        audio_file, "open", lambda p, mode: _Interrupted(p, "r", reads), raising=False
    )
    with pytest.raises(Stopped) as stopped:
        read_audio(path)
    assert stopped.value.signum == signal.SIGINT and len(reads) >= 3


def test_a_signal_while_libsndfile_writes_a_flac_file_leaves_the_older_file_as_it_was(
    commands_policy, monkeypatch, tmp_path
):
    """libsndfile writes a FLAC through cffi callbacks too: a Ctrl+C there was swallowed with the
    bytes being written, and soundfile failed after it (LibsndfileError, or its AssertionError on
    the short write): a traceback, not the stop."""
    from personaplex_tui.audio import audio_writing

    target = tmp_path / "clean.flac"
    target.write_bytes(b"the older file")
    writes: list[int] = []
    monkeypatch.setattr(
        audio_writing, "open", lambda p, mode: _Interrupted(p, "w", writes), raising=False
    )
    with pytest.raises(Stopped):
        audio_writing.write_wav(target, np.sin(np.arange(120000) / 9).astype(np.float32) * 0.3)
    assert len(writes) >= 3 and target.read_bytes() == b"the older file"
    assert list(tmp_path.iterdir()) == [target]  # nothing half-written left beside it


def test_a_signal_while_the_command_line_is_read_is_one_sentence(
    commands_policy, monkeypatch, capsys
):
    """The parser is built once the policy is installed: a Ctrl+C there was a traceback, exit 1."""
    from personaplex_tui import cli

    def interrupted_build() -> object:
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs before this returns
        raise AssertionError("the signal did not stop the command")

    monkeypatch.setattr(cli, "build_parser", interrupted_build)
    try:
        code = cli.main(["devices"])
    except KeyboardInterrupt as escaped:  # (pytest would take it for the user's and stop)
        pytest.fail(f"{escaped!r} escaped main")
    assert code == 130
    assert capsys.readouterr().err == "ppx-tui: interrupted.\n"


def test_the_console_script_installs_the_policy_after_light_imports_only():
    """Until `main` installs the policy, a Ctrl+C is Python's (a traceback, exit 1), so what the
    console script imports before it is kept to the standard library's lightest modules: not
    `typing` (about 2 ms there, measured with SIGINT sent 14-30 ms after the start)."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import personaplex_tui.entry; "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(ROOT)], capture_output=True, text=True, check=True
    )
    loaded = set(out.stdout.split())
    assert "personaplex_tui.stop_signals" in loaded
    heavy = {"typing", "numpy", "mlx", "re", "pathlib", "personaplex_tui.cli"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_a_signal_while_a_command_imports_its_modules_is_one_sentence(
    commands_policy, monkeypatch, capsys, tmp_path
):
    """A stop signal while a command imported its own modules (soak's, once the command line
    had loaded) as one of their dataclasses was made: Python wrapped the `Stopped` in a
    RuntimeError ("Error calling __set_name__"), a traceback and exit 1 (1 of 60 random
    Ctrl+C of a stress test's soaks)."""
    from personaplex_tui import cli

    made = dataclasses.Field.__set_name__

    def interrupted(self, owner, name) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, while the class is made
        made(self, owner, name)

    monkeypatch.setattr(dataclasses.Field, "__set_name__", interrupted)
    monkeypatch.delitem(sys.modules, "personaplex_tui.soak", raising=False)  # imported anew
    try:
        code = cli.main(["soak", "--frames", "300", "--record-dir", str(tmp_path / "run")])
    except KeyboardInterrupt as escaped:  # (pytest would take it for the user's and stop)
        pytest.fail(f"{escaped!r} escaped main")
    assert code == 130
    assert capsys.readouterr().err.endswith("ppx-tui: interrupted.\n")
    assert not (tmp_path / "run").exists()


def test_a_signal_ignored_at_start_stays_ignored():
    saved = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a program
    try:
        SignalPolicy().install()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, saved)


# -- the chat TUI --------------------------------------------------------------------------


def start_chat(ckpt: Path, tmp: Path) -> tuple[PtyProcess, Path]:
    record = tmp / "record"
    args = ["--model", str(ckpt), "--mode", "duplex", "--input-file", CONVERSATION,
            "--output-file", str(tmp / "out.wav"), "--record", str(record),
            "--timing-log", str(tmp / "timings.jsonl")]  # fmt: skip
    return PtyProcess(args, env=user_env(tmp)), record


def wait_live(tui: PtyProcess, record: Path, frames: int = 10) -> Path:
    """Until the agent's track holds `frames` frames: the model is stepping."""

    def agent_size() -> int:
        found = list(record.glob("*/agent.wav"))
        return found[0].stat().st_size if found else 0

    tui.wait_for(lambda: agent_size() > 44 + frames * FRAME_BYTES, 120, "live")
    return only("*/agent.wav", record).parent


@pytest.mark.parametrize(
    ("sig", "second", "code"),
    [
        (signal.SIGINT, True, 130),  # defect 8: it kept stepping headless; a 2nd gave a traceback
        (signal.SIGTERM, False, 143),  # defect 9: killed, terminal left in the alternate screen
        (signal.SIGHUP, False, 129),  # the terminal window is closed
    ],
    ids=["SIGINT-twice", "SIGTERM", "terminal-closed"],
)
def test_a_signal_stops_the_chat_finishes_its_files_and_restores_the_terminal(
    small_checkpoint, tmp_path, sig, second, code
):
    tui, record = start_chat(small_checkpoint, tmp_path)
    try:
        folder = wait_live(tui, record)
        if sig == signal.SIGHUP:
            tui.hang_up()
        else:
            tui.kill(sig)
        if second:
            time.sleep(0.05)  # the shutdown is under way
            tui.kill(sig)
        assert tui.wait(timeout=30) == code
        out = tui.output
    finally:
        tui.close()
    assert "Traceback" not in out
    if sig != signal.SIGHUP:  # a closed terminal shows nothing more
        after = out[out.rindex("\x1b[?1049h") :]  # everything written after entering the screen
        for sequence in RESTORE_SEQUENCES:
            assert sequence in after, repr(sequence)
        expected = "interrupted." if sig == signal.SIGINT else f"stopped by {sig.name}."
        assert after_screen(out) == [f"ppx-tui: recordings are in {record}",
            f"ppx-tui: the agent's audio is in {tmp_path / 'out.wav'}",
            f"ppx-tui: step timings are in {tmp_path / 'timings.jsonl'}", f"ppx-tui: {expected}"]  # fmt: skip

    agent = folder / "agent.wav"
    assert_stays(agent, agent.stat().st_size)
    frames = assert_wav_whole(agent)
    assert assert_wav_whole(folder / "mic.wav") == frames >= 10 * 1920  # aligned tracks
    assert assert_wav_whole(tmp_path / "out.wav") > 0
    entries = jsonl(folder / "transcript.jsonl")
    assert entries[0]["type"] == "session" and entries[-1]["type"] == "end"
    assert all(e["text"] for e in entries if e["type"] == "note")
    assert entries[-1]["t"] == pytest.approx(frames / 24000, abs=0.001)
    assert (folder / "transcript.md").read_text(encoding="utf-8").endswith("\n")
    timings = jsonl(tmp_path / "timings.jsonl")  # every line whole
    assert len(timings) >= 10


# -- respond, soak -------------------------------------------------------------------------


def ppx(args: list[str], tmp: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "personaplex_tui", *args],
        cwd=ROOT,
        env={**user_env(tmp), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test runner's signals stay ours
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_growing(proc: subprocess.Popen, path: Path, size: int) -> None:
    deadline = time.monotonic() + 120
    while not size_now(path) > size:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_stops_respond_with_every_output_whole(small_checkpoint, tmp_path, sig):
    """Defect 9 (an empty token dump, a lagging header) and Ctrl+C losing --transcript/--json."""
    out, dump = tmp_path / "reply.wav", tmp_path / "tokens.jsonl"
    proc = ppx(["respond", "--input", str(AUDIO / "weather.wav"), "--output", str(out),
                "--dump-tokens", str(dump), "--transcript", "--json", "--model", str(small_checkpoint),
                "--max-steps", "3000", "--seed", "3"], tmp_path)  # fmt: skip
    wait_growing(proc, out, 44 + 20 * FRAME_BYTES)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert "Traceback" not in stderr
    expected = "interrupted." if sig == signal.SIGINT else f"stopped by {sig.name}."
    assert stderr.strip().splitlines()[-1] == f"ppx-tui: {expected}"
    reply_samples = assert_wav_whole(out)
    tokens = jsonl(dump)
    assert [t["frame"] for t in tokens] == list(range(len(tokens)))
    start = stdout.index("{\n")  # --transcript's line, then --json's object
    transcript, meta = stdout[:start].rstrip("\n"), json.loads(stdout[start:])
    assert meta["stopped_by"] == sig.name and meta["steps"] == len(tokens)
    assert meta["reply_steps_made"] * 1920 == reply_samples > 0
    assert meta["transcript"] == transcript


def test_a_closed_terminal_stops_respond_with_129_and_its_files_whole(small_checkpoint, tmp_path):
    """Closing the terminal sends SIGHUP and fails every later write to it (EIO): the stopped
    reply's JSON could not be printed, and that failure, not the signal, gave the exit code (2,
    or 1 with a traceback where stderr was the terminal too)."""
    out, dump = tmp_path / "reply.wav", tmp_path / "tokens.jsonl"
    tui = PtyProcess(["respond", "--input", str(AUDIO / "weather.wav"), "--output", str(out),
                      "--dump-tokens", str(dump), "--json", "--model", str(small_checkpoint),
                      "--max-steps", "3000", "--no-user-transcript"], env=user_env(tmp_path))  # fmt: skip
    try:
        tui.wait_for(lambda: size_now(out) > 44 + 20 * FRAME_BYTES, 120, "replying")
        tui.hang_up()
        assert tui.wait(timeout=60) == 129
    finally:
        tui.close()
    samples = assert_wav_whole(out)
    tokens = jsonl(dump)
    assert [t["frame"] for t in tokens] == list(range(len(tokens)))
    assert 20 * 1920 <= samples < 3000 * 1920


def test_sigterm_stops_a_soak_with_its_recording_whole(tmp_path):
    run = tmp_path / "run"
    proc = ppx(["soak", "--frames", "100000", "--context", "50", "--voice-frames", "20",
                "--prompt-tokens", "10", "--every", "100", "--record-dir", str(run), "--json"],
               tmp_path)  # fmt: skip
    agent = run / "recording"
    deadline = time.monotonic() + 120
    while not list(agent.glob("*/agent.wav")) or only("*/agent.wav", agent).stat().st_size < 1e5:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and stderr.strip().endswith("ppx-tui: stopped by SIGTERM.")
    result = json.loads(stdout)
    assert result["stopped_by"] == "SIGTERM" and 0 < result["frames_stepped"] < 100000
    # its speed so far, not 0 (it came from the last memory sample, of which a stop has few)
    assert result["elapsed_s"] > 0 and result["frames_per_s"] > 0
    folder = only("*/agent.wav", agent).parent
    samples = assert_wav_whole(folder / "agent.wav")
    assert assert_wav_whole(folder / "mic.wav") == samples == result["recorded_agent_samples"]
    assert_wav_whole(run / "speaker.wav")
    entries = jsonl(folder / "transcript.jsonl")
    assert entries[-1]["type"] == "end"
    assert all(e["text"] for e in entries if e["type"] == "note")  # no "input ended" of nothing


def test_sigterm_stops_a_bench_in_one_sentence(tmp_path):
    """bench writes no files: the policy's default, a stop where the signal lands."""
    proc = ppx(["bench", "--small", "--steps", "100000", "--warmup-steps", "1"], tmp_path)
    assert proc.stderr is not None
    seen = ""
    while "bench: warming up" not in seen:
        line = proc.stderr.readline()
        assert line, (proc.wait(), seen)
        seen += line
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert stdout == "" and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "ppx-tui: stopped by SIGTERM."


def test_ctrl_c_stops_transcribe_with_what_it_heard_printed(tmp_path):
    """The words already transcribed were lost: nothing on stdout, only "interrupted."."""
    from tests.stt_reference import write_tiny_stt_repo

    repo = write_tiny_stt_repo(tmp_path / "stt")
    speech, rate = sf.read(str(AUDIO / "weather.wav"), dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(str(long), np.tile(speech, 100), rate)  # 5 minutes: far from done when stopped
    dump = tmp_path / "tokens.jsonl"
    proc = ppx(["transcribe", "--input", str(long), "--stt-model", str(repo), "--json",
                "--dump-tokens", str(dump)], tmp_path)  # fmt: skip
    wait_growing(proc, dump, 2000)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "ppx-tui: interrupted."
    meta = json.loads(stdout)
    tokens = jsonl(dump)
    assert meta["stopped_by"] == "SIGINT" and meta["frames"] == len(tokens)
    assert 0 < len(tokens) < 100 * 3 * 12.5  # stopped part of the way through
    assert isinstance(meta["text"], str) and meta["input_seconds"] > 290
