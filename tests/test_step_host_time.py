"""benchmarks/step_host_time.py: its timers leave the step's frames as they are, and note every
part of every step."""

from __future__ import annotations

import gc

import mlx.core as mx
import numpy as np

import model
from benchmarks.step_host_time import LM_PARTS, PARTS, StepTimer, profiled, report
from model import SessionSettings
from tests.checkpoints import write_small_checkpoint
from tests.mimi_reference import load_test_audio


def test_a_timed_step_gives_the_frames_of_an_untimed_one(tmp_path, capsys) -> None:
    persona = model.load(write_small_checkpoint(tmp_path / "ck"))
    plain, timed = (persona.session(SessionSettings(seed=3)) for _ in range(2))
    plain.warm_up()
    timed.warm_up()
    pcm = load_test_audio("greeting.wav")
    frames = [pcm[i * 1920 : (i + 1) * 1920] for i in range(6)]
    async_eval = mx.async_eval
    timer = StepTimer(timed)
    for frame in frames:
        want, got = plain.step(frame), timer.step(frame)
        assert got.pcm.tobytes() == want.pcm.tobytes()
        assert (got.text_id, got.agent_codes.tolist()) == (want.text_id, want.agent_codes.tolist())
    assert mx.async_eval is async_eval  # put back after each step
    # off CUDA no page-locked buffer: no input copy, write-back or polled wait to time
    assert set(timer.parts) == {*PARTS, "step", "gc"} - {"input: copied in", "write-back: build"}
    assert {k: len(v) for k, v in timer.parts.items()} == dict.fromkeys(timer.parts, len(frames))
    assert all(np.isfinite(v).all() and min(v) >= 0 for v in timer.parts.values())
    medians = [np.median(timer.parts[p]) for p in PARTS if p in timer.parts]
    assert sum(medians) <= np.median(timer.parts["step"]) * 1.5

    class Collecting:  # the session, with a collection inside its step
        def step(self, pcm: np.ndarray) -> object:
            gc.collect()
            return timed.step(pcm)

    timer.session = Collecting()  # a collection is counted, and within the step's time
    assert timer.step(frames[0]).pcm.tobytes() == plain.step(frames[0]).pcm.tobytes()
    assert 0 < timer.parts["gc"][-1] <= timer.parts["step"][-1]

    timer.session = timed
    timer.unwrap()  # the session's own calls again: nothing more is timed, the frames the same
    counted = {k: len(v) for k, v in timer.parts.items()}
    for frame in frames:
        want, got = plain.step(frame), timed.step(frame)
        assert got.pcm.tobytes() == want.pcm.tobytes()
    assert {k: len(v) for k, v in timer.parts.items()} == counted

    capsys.readouterr()
    profiled(timed, frames, 4)  # --cprofile: the top functions by own time, per step
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].strip().startswith("cProfile, 6 steps, the top 4") and len(rows) == 5
    assert any("step (session.py" in row for row in rows[1:])


def test_the_report_says_where_the_slowest_steps_time_goes(capsys) -> None:

    n, slow = 105, {10, 30, 50, 70, 90}  # 100 after the 5 skipped; 5 % of them slow
    wait = [44.0 if i in slow else 4.0 for i in range(n)]
    parts = {p: [1.0] * n for p in PARTS if p != "eval: last launches + wait"}
    parts["eval: last launches + wait"] = wait
    others = len(PARTS) - 1  # parts of 1 ms each, the rest 0.5
    parts["step"] = [w + others + 0.5 for w in wait]
    parts["  of it, MLX's launches"] = [0.25] * n  # inside the eval: not summed
    parts["  of it, the polled wait"] = [w - 0.25 for w in wait]
    report("t", parts)
    out = capsys.readouterr().out.splitlines()
    lines = {line[:36].strip(): line[36:].split() for line in out}
    assert lines["eval: last launches + wait"] == ["4.000", "|", "44.000"]
    assert lines["of it, MLX's launches"] == ["0.250", "|", "0.250"]
    assert lines["of it, the polled wait"] == ["3.750", "|", "43.750"]
    assert lines["encode: build"] == ["1.000", "|", "1.000"]
    assert lines["the rest (read-back, bookkeeping)"] == ["0.500", "|", "0.500"]
    assert lines["step"][:3] == [f"{4 + others + 0.5:.3f}", "|", f"{44 + others + 0.5:.3f}"]
    slowest = [line for line in out if "slowest 5 % are steps" in line]  # where they fall
    assert slowest == [
        "  the slowest 5 % are steps [5, 25, 45, 65, 85]; gaps between them: median 20"
    ]


def test_timed_lm_steps_give_the_untimed_ones_tokens(tmp_path, capsys) -> None:
    """`--lm`: `StepTimer.step_codes` times the LM step alone, with the same tokens as an
    untimed `step_codes`, and the report lists its own parts."""
    persona = model.load(write_small_checkpoint(tmp_path / "ck"))
    plain, timed = (persona.session(SessionSettings(seed=3)) for _ in range(2))
    plain.warm_up()
    timed.warm_up()
    card = persona.lm.config.card
    rows = np.random.default_rng(1).integers(0, card, (8, 8)).astype(np.int32)
    timer = StepTimer(timed)
    for row in rows:
        want, got = plain.step_codes(row), timer.step_codes(row)
        assert (got[0], got[1].tolist()) == (want[0], want[1].tolist())
    assert set(timer.parts) == {"LM step: build", "eval: launches + wait", "step", "gc"}
    assert all(len(v) == len(rows) for v in timer.parts.values())
    timer.unwrap()
    capsys.readouterr()
    report("lm", timer.parts, skip=0, names=LM_PARTS)
    out = capsys.readouterr().out
    assert "LM step: build" in out and "eval: launches + wait" in out
    assert "encode: build" not in out
    # --cprofile with --lm: every function listed (a top few by time would vary by machine),
    # step_codes among them and the full step not
    profiled(timed, list(rows[:3]), 10_000, lm=True)
    listed = capsys.readouterr().out
    assert "step_codes (session.py" in listed and "  step (session.py" not in listed
