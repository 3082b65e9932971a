"""`ppx-tui transcribe` end to end in a subprocess, on a tiny random Kyutai STT repository in the
real layout; the tokens it dumps are checked against moshi's `LMGen` fed the same codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.conversation.tokenizer import TextTokenizer
from tests.cli_runner import ROOT, ppx
from tests.stt_reference import TOKENIZER_FILE, run_reference, write_tiny_stt_repo

AUDIO = ROOT / "tests" / "data" / "audio"
FLUSH = 7  # ceil(0.5 s * 12.5 Hz) silent frames after the input


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_stt_repo(tmp_path_factory.mktemp("stt") / "stt")


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    return lines[-1]


def test_json_and_token_dump_match_moshi(repo: Path, tmp_path: Path) -> None:
    dump = tmp_path / "tokens.jsonl"
    proc = ppx(
        "transcribe", "--input", str(AUDIO / "greeting.wav"), "--stt-model", str(repo),
        "--json", "--dump-tokens", str(dump),
    )  # fmt: skip
    meta = json.loads(proc.stdout)
    frames = -(-int(3.4952 * 24000) // 1920) + FLUSH
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert meta["frames"] == len(rows) == frames
    assert [r["frame"] for r in rows] == list(range(frames))
    for row in rows:
        assert set(row) == {"frame", "text_token", "audio", "end_of_turn"}
        assert len(row["audio"]) == 32 and all(0 <= c < 2048 for c in row["audio"])
        assert len(row["end_of_turn"]) == 4 and all(0 <= p <= 1 for p in row["end_of_turn"])
    # the oracle: moshi's LMGen fed the very codes the command fed our model
    codes = np.array([r["audio"] for r in rows])
    reference = run_reference(repo, np.zeros(0, np.float32), codes=codes)
    assert [r["text_token"] for r in rows] == reference.text.tolist()
    eot = np.array([r["end_of_turn"] for r in rows])
    assert np.abs(eot - reference.heads[:, :, 0]).max() <= 1e-4
    # the text is the tokens' pieces; the words carry start times
    tokenizer = TextTokenizer(repo / TOKENIZER_FILE)
    assert meta["text"] == tokenizer.decode(reference.text.tolist())
    assert meta["text"] and meta["words"]
    assert " ".join(w["text"] for w in meta["words"]) == " ".join(meta["text"].split())
    assert all(0 <= w["start_s"] <= w["end_s"] for w in meta["words"])
    starts = [w["start_s"] for w in meta["words"]]
    assert starts == sorted(starts) and starts[-1] < frames * 0.08
    assert meta["end_of_turn_heads"] == 4 and meta["timings"]["step_ms_p50"] > 0


def test_text_streams_to_stdout(repo: Path) -> None:
    plain = ppx("transcribe", "--input", str(AUDIO / "weather.wav"), "--stt-model", str(repo))
    meta = json.loads(
        ppx(
            "transcribe", "--input", str(AUDIO / "weather.wav"), "--stt-model", str(repo), "--json"
        ).stdout
    )
    assert plain.stdout.strip() == meta["text"]
    assert "Transcribed" in plain.stderr


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--stt-model", "/nonexistent/stt"], "--stt-model"),
        (["--stt-model", "EMPTY"], "config.json"),
        (["--stt-model", "REPO", "--dump-tokens", "UNDER_A_FILE"], "token dump"),
        (["--stt-model", "REPO", "--input", "/nonexistent.wav"], "does not exist"),
        (["--stt-model", "REPO", "--dump-tokens", "/dev/full"], "No space left on device"),
        (["--stt-model", "REPO", "--input", "INPUT", "--dump-tokens", "INPUT"],
         "--dump-tokens and --input name the same file"),
    ],
    ids=["missing", "empty", "dump", "input", "full-dump", "dump-over-input"],
)  # fmt: skip
def test_mistakes_end_in_one_sentence(repo: Path, tmp_path: Path, args, expected) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "in.wav").write_bytes((AUDIO / "weather.wav").read_bytes())
    names = {"EMPTY": tmp_path / "empty", "REPO": repo, "INPUT": tmp_path / "in.wav",
             "UNDER_A_FILE": tmp_path / "in.wav" / "t.jsonl"}  # fmt: skip
    args = [str(names.get(a, a)) for a in args]
    if "--input" not in args:
        args += ["--input", str(AUDIO / "weather.wav")]
    line = one_error_line(ppx("transcribe", *args, check=False))
    assert line.startswith("ppx-tui: ") and expected in line and line.endswith(".")
    assert sf.info(str(tmp_path / "in.wav")).frames > 0  # the recording is untouched


def test_a_full_disk_keeps_whole_lines_and_a_full_stdout_is_one_sentence(repo: Path, tmp_path):
    """The token dump on a file-size limit (a full disk) keeps whole lines and says how many;
    text or JSON to a full standard output is one sentence. No traceback either way."""
    dump = tmp_path / "t.jsonl"
    limited = (
        "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048)); sys.argv[0] = 'ppx-tui'; "
        "runpy.run_module('personaplex_tui', run_name='__main__')"
    )
    args = ["transcribe", "--input", str(AUDIO / "conversation.wav"), "--stt-model", str(repo)]
    proc = subprocess.run(
        [sys.executable, "-c", limited, *args, "--dump-tokens", str(dump)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    line = one_error_line(proc)
    rows = [json.loads(r) for r in dump.read_text().splitlines()]
    assert line == (
        f"ppx-tui: Writing the token dump {dump} failed (File too large); "
        f"it keeps the first {len(rows)} frames."
    )
    assert rows and [r["frame"] for r in rows] == list(range(len(rows)))
    for extra in ([], ["--json"]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run(
                [sys.executable, "-m", "personaplex_tui", *args, *extra], stdout=full,
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
                stderr=subprocess.PIPE, text=True, timeout=300,
            )  # fmt: skip
        assert one_error_line(proc) == (
            "ppx-tui: Could not write to the standard output: No space left on device."
        )


def test_bad_quantize_value_is_a_usage_error(repo: Path) -> None:
    proc = ppx(
        "transcribe", "--input", str(AUDIO / "weather.wav"), "--stt-model", str(repo),
        "--stt-quantize", "3", check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--stt-quantize" in proc.stderr
