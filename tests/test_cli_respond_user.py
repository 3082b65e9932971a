"""`ppx-tui respond` with the user's transcript (a small PersonaPlex and a tiny STT sharing one
Mimi): PersonaPlex's tokens are the same with it on and off, the user's words go to --json and
--transcript, and a missing STT model is one line on stderr, the reply still made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_runner import ppx
from tests.stt_app import write_pair
from tests.test_cli_respond import AUDIO


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"))


def respond(persona: Path, dump: Path, *extra: str):
    return ppx(
        "respond", "--input", str(AUDIO / "greeting.wav"), "--output", str(dump.with_suffix(".wav")),
        "--model", str(persona), "--max-steps", "15", "--seed", "5", "--dump-tokens", str(dump),
        "--json", "--transcript", *extra,
    )  # fmt: skip


def test_tokens_are_the_same_with_the_user_transcript_on_and_off(pair, tmp_path: Path) -> None:
    persona, stt = pair
    on = respond(persona, tmp_path / "on.jsonl", "--stt-model", str(stt))
    off = respond(persona, tmp_path / "off.jsonl", "--no-user-transcript")
    dumped = (tmp_path / "on.jsonl").read_text()
    assert dumped == (tmp_path / "off.jsonl").read_text() and len(dumped.splitlines()) > 50
    assert (tmp_path / "on.wav").read_bytes() == (tmp_path / "off.wav").read_bytes()
    # --transcript: the user's line first, then the agent's as without it
    on_lines, off_lines = (
        on.stdout.split("\n{")[0].splitlines(),
        off.stdout.split("\n{")[0].splitlines(),
    )
    assert on_lines[0].startswith("you: ") and len(on_lines[0]) > 10
    assert on_lines[1:] == off_lines
    meta_on = json.loads("{" + on.stdout.split("\n{", 1)[1])
    meta_off = json.loads("{" + off.stdout.split("\n{", 1)[1])
    user = meta_on["user_transcript"]
    assert meta_off["user_transcript"] is None and meta_on["transcript"] == meta_off["transcript"]
    assert user["model"] == str(stt) and user["text"] == on_lines[0][len("you: ") :]
    assert user["lag_s"] == pytest.approx(0.48)
    words = user["words"]
    assert words and " ".join(w["text"] for w in words) == user["text"]
    assert all(w["start_s"] <= w["end_s"] for w in words)
    assert [w["start_s"] for w in words] == sorted(w["start_s"] for w in words)
    assert "transcript of your voice" not in on.stderr + off.stderr


def test_a_missing_stt_model_is_one_line_and_the_reply_is_made(pair, tmp_path: Path) -> None:
    persona, _ = pair
    missing = tmp_path / "nowhere"
    proc = respond(persona, tmp_path / "t.jsonl", "--stt-model", str(missing))
    notes = [line for line in proc.stderr.splitlines() if "transcript" in line.lower()]
    assert len(notes) == 1 and notes[0].startswith("No transcript of your voice: ")  # said once
    assert "Traceback" not in proc.stderr
    meta = json.loads("{" + proc.stdout.split("\n{", 1)[1])
    assert meta["user_transcript"] is None and meta["steps"] > 15
