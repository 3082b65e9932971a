"""A stop signal that lands as a command finishes (its files being closed, its words or figures
being gathered): what it made is still reported (--json with `stopped_by`), its files are whole,
and it exits 128 + the signal's number. The signal is sent at a hook where the command is
finishing, as a stress test's random signals met it."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.test_stop_signals import AUDIO, assert_wav_whole, jsonl
from tests.tui_pty import user_env


def run_main(args: list[str]) -> int:
    from personaplex_tui import cli

    try:
        return cli.main(args)
    except KeyboardInterrupt as escaped:  # (pytest would take it for the user's and stop)
        pytest.fail(f"{escaped!r} escaped main")


def signal_before(owner: object, name: str, sig: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`owner.name` gets `sig` sent to this process as it is called (its handler runs there)."""
    call = getattr(owner, name)

    def interrupted(*args, **kwargs):
        try:
            os.kill(os.getpid(), sig)  # a Stopped raised here goes on once the call is made
        finally:
            result = call(*args, **kwargs)
        return result

    monkeypatch.setattr(owner, name, interrupted)


def test_a_signal_as_respond_finishes_its_files_still_prints_what_it_made(
    commands_policy, small_checkpoint, tmp_path, monkeypatch, capsys
):
    """A signal once the reply was made, as its WAV was finished: the Stopped came out of the
    files' closing, and the --json of the reply (made, and whole on disk) was never printed
    (1 of 60 random SIGTERMs of a stress test's respond runs)."""
    from personaplex_tui.audio import WavWriter

    for name, value in user_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    signal_before(WavWriter, "close", signal.SIGTERM, monkeypatch)
    out, dump = tmp_path / "reply.wav", tmp_path / "tokens.jsonl"
    code = run_main(["respond", "--input", str(AUDIO / "weather.wav"), "--output", str(out),
                         "--dump-tokens", str(dump), "--json", "--model", str(small_checkpoint),
                         "--no-user-transcript", "--seed", "3"])  # fmt: skip
    assert code == 143
    stdout, stderr = capsys.readouterr()
    assert stderr.strip().splitlines()[-1] == "ppx-tui: stopped by SIGTERM."
    meta = json.loads(stdout)
    assert meta["stopped_by"] == "SIGTERM" and meta["steps"] == len(jsonl(dump))
    assert meta["reply_steps_made"] * 1920 == assert_wav_whole(out) > 0


def test_a_signal_as_transcribe_gathers_its_words_still_prints_them(
    commands_policy, tmp_path, monkeypatch, capsys
):
    """A signal once the recording was transcribed, as its words were gathered: the Stopped
    came out there and the words heard were never printed."""
    from model.stt.words import TranscriptBuilder
    from tests.stt_reference import write_tiny_stt_repo

    repo = write_tiny_stt_repo(tmp_path / "stt")
    signal_before(TranscriptBuilder, "finish", signal.SIGINT, monkeypatch)
    dump = tmp_path / "tokens.jsonl"
    code = run_main(["transcribe", "--input", str(AUDIO / "weather.wav"), "--stt-model", str(repo),
                     "--json", "--dump-tokens", str(dump)])  # fmt: skip
    assert code == 130
    stdout, stderr = capsys.readouterr()
    assert stderr.strip().splitlines()[-1] == "ppx-tui: interrupted."
    meta = json.loads(stdout)
    assert meta["stopped_by"] == "SIGINT" and meta["frames"] == len(jsonl(dump)) > 0


def test_a_signal_as_a_soak_gathers_its_figures_still_prints_them(
    commands_policy, tmp_path, monkeypatch, capsys
):
    """A signal once the soak's run was over, as its figures were gathered: the Stopped came
    out there and the figures of the run were never printed."""
    from personaplex_tui import soak

    signal_before(soak, "_growth", signal.SIGTERM, monkeypatch)
    run = tmp_path / "run"
    code = run_main(["soak", "--frames", "40", "--context", "50", "--voice-frames", "20",
                     "--prompt-tokens", "10", "--record-dir", str(run), "--json"])  # fmt: skip
    assert code == 143
    stdout, stderr = capsys.readouterr()
    assert stderr.strip().splitlines()[-1] == "ppx-tui: stopped by SIGTERM."
    result = json.loads(stdout)
    assert result["stopped_by"] == "SIGTERM" and result["frames_stepped"] > 0
    (folder,) = (run / "recording").iterdir()
    assert assert_wav_whole(folder / "agent.wav") == result["recorded_agent_samples"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_a_soak_prints_its_report_changes_neither_the_report_nor_the_exit(
    commands_policy, tmp_path, monkeypatch, capsys, sig
):
    """A signal once the report was made, as it was printed: the JSON said `"stopped_by":
    null` and the process then exited 128 + N all the same. The report is the outcome."""
    from personaplex_tui.commands import soak as soak_command

    signal_before(soak_command, "print_out", sig, monkeypatch)
    code = run_main(["soak", "--frames", "40", "--context", "50", "--voice-frames", "20",
                     "--prompt-tokens", "10", "--json"])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    result = json.loads(stdout)
    assert result["stopped_by"] is None and result["ok"] and code == 0
    assert "stopped by" not in stderr and "interrupted" not in stderr


def test_a_signal_while_respond_prints_its_report_changes_neither_the_report_nor_the_exit(
    commands_policy, small_checkpoint, tmp_path, monkeypatch, capsys
):
    from personaplex_tui.commands import respond as respond_command

    for name, value in user_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    signal_before(respond_command, "print_out", signal.SIGTERM, monkeypatch)
    out = tmp_path / "reply.wav"
    code = run_main(["respond", "--input", str(AUDIO / "weather.wav"), "--output", str(out),
                     "--json", "--model", str(small_checkpoint), "--no-user-transcript",
                     "--seed", "3"])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    meta = json.loads(stdout)
    assert meta["stopped_by"] is None and code == 0
    assert "stopped by" not in stderr
    assert assert_wav_whole(out) > 0


def test_a_signal_while_transcribe_prints_its_report_changes_neither_the_report_nor_the_exit(
    commands_policy, tmp_path, monkeypatch, capsys
):
    from personaplex_tui.commands import transcribe as transcribe_command
    from tests.stt_reference import write_tiny_stt_repo

    repo = write_tiny_stt_repo(tmp_path / "stt")
    signal_before(transcribe_command, "print_out", signal.SIGINT, monkeypatch)
    code = run_main(["transcribe", "--input", str(AUDIO / "weather.wav"), "--stt-model", str(repo),
                     "--json"])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    meta = json.loads(stdout)
    assert meta["stopped_by"] is None and code == 0
    assert "interrupted" not in stderr
