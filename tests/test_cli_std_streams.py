"""The standard streams and the command line's spelling, as a shell hands them over: a closed
stdout or stderr (`>&-`, `2>&-`), `-` as an output's name, an abbreviated option, a malformed
developer variable. Each works, or ends in one sentence and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.test_cli_disks import QUESTION, ROOT, ckpt, one_sentence, ppx, wav_counts_its_bytes

__all__ = ["ckpt"]  # the module-scoped checkpoint fixture, shared


def shell(line: str, cwd, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`ppx-tui` run by bash as `LINE` (with its redirections), in `cwd`."""
    ppx = f"{shlex.quote(sys.executable)} -m personaplex_tui"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    return subprocess.run(["bash", "-c", line.replace("PPX", ppx)], cwd=cwd, env=env,
                          capture_output=True, timeout=300)  # fmt: skip


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    stderr = proc.stderr.decode(errors="backslashreplace")
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_a_closed_stdout_is_not_a_traceback(ckpt, tmp_path):
    """Python makes sys.stdout None: every print raised AttributeError."""
    proc = shell("PPX voices >&-", tmp_path)
    no_traceback(proc)
    assert proc.returncode == 0
    out = tmp_path / "a.wav"
    proc = shell(f"PPX respond --model {ckpt} --no-user-transcript --max-steps 3 --input "
                 f"{QUESTION} --output {out} --json >&-", tmp_path)  # fmt: skip
    no_traceback(proc)
    assert proc.returncode == 0
    assert wav_counts_its_bytes(out) == 3 * 1920


def test_a_closed_stderr_does_not_make_the_input_corrupt(ckpt, tmp_path):
    """The input file was opened as fd 2 and read while fd 2 was being filtered: "corrupt", on
    stdout, where the JSON belongs."""
    out = tmp_path / "a.wav"
    proc = shell(f"PPX respond --model {ckpt} --no-user-transcript --max-steps 3 --input "
                 f"{QUESTION} --output {out} --json 2>&-", tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["reply_steps"] == 3
    assert wav_counts_its_bytes(out) == 3 * 1920


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--output", "-"], "--output - would write the audio file"),
        (["--output", "o.wav", "--dump-tokens", "-"], "--dump-tokens - would write the token dump"),
    ],
)
def test_a_dash_as_an_output_is_refused_not_a_file_named_dash(tmp_path, args, flag):
    proc = shell(f"PPX respond --input {QUESTION} {shlex.join(args)}", tmp_path)
    one_sentence(proc, f"{flag} to a file named '-'; give a file name")
    assert not (tmp_path / "-").exists() and "Loading" not in proc.stderr.decode()


@pytest.mark.parametrize(
    "line, unrecognized",
    [
        ("PPX respond --mode duplex --input q.wav --output o.wav", "--mode duplex"),
        ("PPX bench --small --step 3", "--step 3"),
        ("PPX soak --frame 10 --json", "--frame 10"),
    ],
)
def test_a_subcommand_takes_no_abbreviations(tmp_path, line, unrecognized):
    """`respond --mode duplex` was read as `--model duplex` ("No model folder at duplex")."""
    proc = shell(line, tmp_path)
    command = line.split()[1]
    one_sentence(proc, f"ppx-tui {command}: unrecognized arguments: {unrecognized}.")


def test_a_malformed_ring_mask_variable_is_one_sentence_before_loading(ckpt, tmp_path):
    """It was a traceback once the model had loaded, with an empty reply file."""
    out = tmp_path / "a.wav"
    proc = shell(f"PPX respond --model {ckpt} --input {QUESTION} --output {out}", tmp_path,
                 {"PPX_RING_MASK": "zz"})  # fmt: skip
    one_sentence(proc, "PPX_RING_MASK must be one of bool, far_keys, not 'zz'.")
    assert "Loading" not in proc.stderr.decode() and not out.exists()


def test_outputs_go_where_they_were_checked_tilde_and_new_folders_included(ckpt, tmp_path):
    """`~` was expanded for the check only (the reply landed in a folder named '~'), and a
    dump in a new folder failed after the model had loaded, leaving an empty reply WAV."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    proc = shell(f"PPX respond --model {ckpt} --no-user-transcript --max-steps 3 --input {QUESTION} "
                 "--output '~/q.wav' --dump-tokens 'new/dir/t.jsonl'", work, {"HOME": str(home)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert wav_counts_its_bytes(home / "q.wav") == 3 * 1920
    assert not (work / "~").exists()
    assert len((work / "new" / "dir" / "t.jsonl").read_text().splitlines()) > 0


def test_an_unwritable_stderr_stops_no_work(ckpt, tmp_path):
    """`2>/dev/full`: the first progress line ("Loading ...") raised OSError, so the reply was
    never made (exit 1); stderr is best-effort, the reply and its JSON are written, and a
    mistake still ends in exit 2."""
    out = tmp_path / "a.wav"
    proc = shell(f"PPX respond --model {ckpt} --no-user-transcript --max-steps 3 --input "
                 f"{QUESTION} --output {out} --json 2>/dev/full", tmp_path)  # fmt: skip
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["reply_steps"] == 3
    assert wav_counts_its_bytes(out) == 3 * 1920
    proc = shell(f"PPX respond --model {ckpt} --input {tmp_path}/none.wav 2>/dev/full", tmp_path)
    assert proc.returncode == 2
    soak = "PPX soak --frames 5 --context 50 --voice-frames 20 --prompt-tokens 10 --json"
    proc = shell(f"{soak} 2>/dev/full", tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["frames_stepped"] == 5


@pytest.mark.parametrize("args", [["prompts"], ["prompts", "--json"], ["voices"]], ids=" ".join)
def test_a_listing_into_a_closed_pipe_exits_0_quietly(args):
    """`ppx-tui prompts | head -1`: a table ended with exit 1 (rich's own exit), JSON with 0."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: EPIPE, every time
    try:
        proc = ppx(*args, stdout=write)
    finally:
        os.close(write)
    no_traceback(proc)
    assert proc.returncode == 0 and proc.stderr == b""


def test_stderr_into_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`ppx-tui soak 2>&1 | head -1`: the reader is gone, the command ends (exit 0, as on
    stdout), with whatever it recorded whole; it ran on to its end, or exited 1 where the pipe
    closed mid-run."""
    read, write = os.pipe()
    os.close(read)
    run = tmp_path / "run"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "personaplex_tui", "soak", "--frames", "100000", "--context",
             "50", "--voice-frames", "20", "--prompt-tokens", "10", "--record-dir", str(run)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
            stderr=write, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 0
    for wav in run.rglob("*.wav"):
        wav_counts_its_bytes(wav)
