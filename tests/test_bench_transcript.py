"""`ppx-tui bench` rows for the step with the user's transcript on, side by side with it off
(a tiny random STT with --small; no timing is asserted), and how a real model's missing STT
shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkpoints import write_small_checkpoint
from tests.stt_app import write_pair

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "personaplex_tui", "bench", "--steps", "12", "--warmup-steps", "2",
         *args],  # fmt: skip
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def test_small_bench_times_the_step_with_the_transcript_on_and_off() -> None:
    r = json.loads(bench("--small", "--json").stdout)["transcript"]
    assert r["model"] == "random weights"
    for key in ("step_ms_off", "step_ms_on"):
        s = r[key]
        assert s["n"] == 12 and 0 < s["p50"] <= s["p90"] <= s["max"]
    assert r["cost_pct"] == round(100 * (r["step_ms_on"]["p50"] / r["step_ms_off"]["p50"] - 1), 1)
    assert r["stt_ms"] > 0 and r["listening_frame_ms"]["p50"] > 0
    assert r["stt_kernels"] == "MLX"  # the CPU (on CUDA a quantized STT runs the temporal kernel)
    table = bench("--small", "--no-phases").stdout
    assert "user transcript on" in table and "transcript cost" in table
    assert "STT step runs on" in table
    assert "phase: stt" not in table
    assert json.loads(bench("--small", "--json", "--no-user-transcript").stdout)["transcript"] == {}


def test_turn_reports_the_end_of_speech_to_reply_time() -> None:
    turn = json.loads(bench("--small", "--json", "--turn", "--no-user-transcript").stdout)["turn"]
    after = turn["utterance_40_frames_then_first_reply_frame_ms"]
    assert after > turn["first_reply_frame_ms"] > 0
    assert turn["end_of_speech_to_reply_silence_rule_ms"] == pytest.approx(1000 + after, abs=0.01)


def test_a_checkpoint_with_its_stt(tmp_path: Path) -> None:
    persona, stt = write_pair(tmp_path)
    r = json.loads(bench("--model", str(persona), "--stt-model", str(stt), "--json").stdout)
    assert r["transcript"]["model"] == str(stt) and r["transcript"]["step_ms_on"]["n"] == 12
    # without a downloaded STT model: one sentence in place of the rows, the rest measured
    alone = write_small_checkpoint(tmp_path / "alone")
    r = json.loads(bench("--model", str(alone), "--json").stdout)
    assert r["transcript"]["error"].startswith("No transcript of your voice: ")
    assert r["step_ms"]["n"] == 12


def test_without_a_listener_the_stt_kernels_are_off() -> None:
    from types import SimpleNamespace

    from personaplex_tui.kernels_in_use import stt_kernels

    assert stt_kernels(SimpleNamespace(listener=None)) == "off (no user transcript)"
