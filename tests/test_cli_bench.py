"""`ppx-tui bench --small` runs headless, fast, and reports every figure (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.import_probe import modules_loaded_by

ROOT = Path(__file__).resolve().parents[1]


def test_bench_small_json_reports_everything():
    proc = subprocess.run(
        [sys.executable, "-m", "personaplex_tui", "bench", "--small", "--steps", "30",
         "--warmup-steps", "3", "--turn", "--json"],  # fmt: skip
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["device"] == "cpu" and r["model"] == "random weights"
    for key in ("load_s", "warmup_s", "prefill_ms", "rtf", "peak_memory_gb"):
        assert r[key] > 0, key
    assert r["prefill_positions"] == 50 + 6 + 20 + 6 + 1
    for block in ("step_ms", "lm_step_ms"):
        s = r[block]
        assert s["n"] == 30 and 0 < s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert set(r["phases_ms"]) == {"encode", "temporal", "depformer", "decode"}
    assert 0 < r["turn"]["first_reply_frame_ms"] <= r["turn"]["first_sample_played_ms"]


def test_bench_path_imports_no_ui_or_audio():
    loaded = modules_loaded_by("import personaplex_tui.commands.bench, personaplex_tui.benchmark")
    assert ("textual" in loaded, "sounddevice" in loaded) == (False, False)


def test_the_bench_says_which_kernels_multiply_quantized_weights(monkeypatch):
    from types import SimpleNamespace

    from model.config import QuantizationConfig
    from model.cuda import MATVEC as matvec
    from personaplex_tui import kernels_in_use

    quantized = SimpleNamespace(config=SimpleNamespace(quantization=QuantizationConfig(4, 64)))
    floats = SimpleNamespace(config=SimpleNamespace(quantization=None))
    monkeypatch.setattr(kernels_in_use, "on_cuda", lambda: False)
    assert kernels_in_use.matvec_kernels(quantized) == "MLX"
    monkeypatch.setattr(kernels_in_use, "on_cuda", lambda: True)
    monkeypatch.setattr("model.cuda.kernel.on_cuda", lambda: True)
    monkeypatch.delenv(matvec.env_var, raising=False)
    monkeypatch.setattr(matvec, "disabled_reason", None)
    assert kernels_in_use.matvec_kernels(floats) == "MLX"
    assert kernels_in_use.matvec_kernels(quantized) == "fused (model/cuda/matvec.py)"
    monkeypatch.setenv(matvec.env_var, "mlx")
    assert kernels_in_use.matvec_kernels(quantized) == "MLX (PPX_MATVEC=mlx)"
    monkeypatch.delenv(matvec.env_var)
    monkeypatch.setattr(matvec, "disabled_reason", "the kernel failed its check (x)")
    assert kernels_in_use.matvec_kernels(quantized) == "MLX (the kernel failed its check (x))"


def test_the_bench_says_which_kernels_run_the_temporal_step_and_the_depformer(monkeypatch):
    from types import SimpleNamespace

    from model.cuda import DEPFORMER as depformer_kernel
    from model.cuda import TEMPORAL as temporal_kernel
    from personaplex_tui import kernels_in_use

    stacked = SimpleNamespace(temporal_stack=lambda: object(), depformer_stack=lambda: object())
    model = SimpleNamespace(lm=stacked)
    monkeypatch.setattr(kernels_in_use, "on_cuda", lambda: False)
    assert kernels_in_use.temporal_kernels(model) == "MLX"
    monkeypatch.setattr(kernels_in_use, "on_cuda", lambda: True)
    for module in (temporal_kernel, depformer_kernel):
        monkeypatch.setattr(module, "enabled", lambda: True)
        monkeypatch.setattr(module, "supports", lambda lm: None)
    want = "one kernel per step (model/cuda/temporal.py)"
    assert kernels_in_use.temporal_kernels(model) == want
    want = "one kernel per column (model/cuda/depformer.py)"
    assert kernels_in_use.depformer_kernels(model) == want
    monkeypatch.setattr(temporal_kernel, "enabled", lambda: False)
    monkeypatch.setattr(temporal_kernel, "disabled_reason", "the temporal kernel failed (x)")
    assert kernels_in_use.temporal_kernels(model) == "MLX (the temporal kernel failed (x))"
    monkeypatch.setattr(depformer_kernel, "supports", lambda lm: "its projections are floats")
    monkeypatch.setattr(depformer_kernel, "enabled", lambda: False)
    assert kernels_in_use.depformer_kernels(model) == "MLX (its projections are floats)"


def test_a_deferred_bench_steps_eagerly_then_compiles_each_graph(monkeypatch):
    """With JIT helpers at work (a fresh GPU; faked here), the bench's warm-up compiles
    nothing, its warm-up steps run eagerly, and once the helpers are done it warms every
    compiled graph ahead of its session one at a time before the timed steps."""
    from personaplex_tui import benchmark

    class Helpers:
        polls = 0

        def running(self):
            self.polls += 1
            return self.polls < 4

        def stop(self):
            return {"helpers": 1}

    helpers = Helpers()
    monkeypatch.setattr(benchmark, "start_jit_workers", lambda options: helpers)
    monkeypatch.setattr(benchmark, "defer_compile", lambda: True)
    r = benchmark.run_benchmark(
        benchmark.BenchOptions(small=True, steps=5, warmup_steps=4, phases=False)
    )
    d = r.warmup.deferred
    assert helpers.polls == 4 and r.warmup.jit_workers == {"helpers": 1}
    assert d["eager_step_ms"]["n"] == 3 and d["first_eager_step_ms"] > 0
    names = [c["graph"] for c in d["compile_next"]]
    assert names == [g["graph"] for g in r.warmup.graphs]  # each graph once, in that order
    assert any(n.startswith("LM step") for n in names) and "encode (Mimi full)" in names
    assert r.load_s + r.warmup_s <= d["helpers_done_s"] <= d["compiled_s"]
    assert "encode (Mimi filling)" not in names  # passed by the eager warm-up steps
    # so a new session (from frame 0) compiles Mimi's filling encode and decode, nothing else
    assert r.warmup.new_session_traces == 2 and r.step_ms.n == 5


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "personaplex_tui", "bench", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_a_few_steps_still_time_the_phases_without_nan_or_warnings():
    """With --steps under 6 the phases' median was of no step: NaN in the JSON (not JSON by its
    standard) and numpy's warnings on stderr."""
    proc = _bench("--small", "--steps", "3", "--warmup-steps", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr

    def no_nan(name: str) -> float:
        raise AssertionError(f"{name} in the JSON")

    r = json.loads(proc.stdout, parse_constant=no_nan)
    assert r["step_ms"]["n"] == 3 and all(v > 0 for v in r["phases_ms"].values())


def test_the_table_keeps_each_value_on_one_line_in_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    proc = _bench("--small", "--steps", "3", "--warmup-steps", "0")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    values = [line.split("│")[2].strip() for line in rows]
    steps = [value for value in values if value.startswith("p50 ")]  # each whole: "... ms"
    assert len(steps) >= 4 and all(value.endswith(" ms") for value in steps), rows
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_a_long_value_is_a_note_under_the_table_and_every_measure_keeps_its_column(
    monkeypatch, small_checkpoint, tmp_path
):
    """Why the user transcript is off (here: no STT folder) was one row's value, on one line: it
    took every column but its own, and the measures' column of the whole table was empty."""
    monkeypatch.setenv("COLUMNS", "80")
    missing = tmp_path / "no-stt-here"
    proc = _bench("--model", str(small_checkpoint), "--steps", "3", "--warmup-steps", "0",
                  "--stt-model", str(missing))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    rows = [line.split("│") for line in lines if line.startswith("│")]
    measures = [row[1].strip() for row in rows]
    assert {"device", "load", "peak memory", "user transcript"} <= set(measures), lines
    values = {row[1].strip(): row[2].strip() for row in rows}
    assert values["user transcript"] == "see [1] below"
    notes = "\n".join(lines[lines.index(next(x for x in lines if x.startswith("└"))) + 1 :])
    assert notes.startswith("[1] user transcript: No transcript of your voice"), notes
    assert "no model folder at" in notes and max(len(line) for line in lines) <= 80


def test_the_measure_table_fits_its_values_to_the_width_and_prints_brackets_as_they_are():
    from rich.console import Console

    from personaplex_tui.commands.measure_table import MeasureTable

    t = MeasureTable("t")
    t.add_row("step", "p50 4.78 · p90 4.86 · p99 4.94 · max 6.01 ms")  # 44 characters
    t.add_row("kernels", "[bold]MLX[/bold] (the temporal kernel failed its check)")

    def rendered(width: int) -> str:
        console = Console(width=width)
        with console.capture() as captured:
            console.print(t)
        return captured.get()

    wide, narrow = rendered(120), rendered(60)
    assert "p50 4.78 · p90 4.86 · p99 4.94 · max 6.01 ms" in wide and "[bold]MLX[/bold]" in wide
    assert "see [" not in wide
    assert "│ step" in narrow and "│ kernels" in narrow  # each measure keeps its column
    assert "see [1] below" in narrow and "see [2] below" in narrow
    assert "[1] step: p50" in narrow and "[2] kernels: [bold]MLX[/bold]" in narrow
    assert max(len(line) for line in narrow.splitlines()) <= 60


def test_absurd_step_counts_are_one_sentence():
    for args, message in (
        (["--steps", "100001"], "--steps must be between 1 and 100000, not 100001."),
        (["--warmup-steps", "-1"], "--warmup-steps must be between 0 and 100000, not -1."),
    ):
        proc = _bench("--small", *args)
        assert proc.returncode == 2 and proc.stderr.strip() == f"ppx-tui: {message}"


def test_flags_that_would_be_ignored_are_one_sentence():
    """`--random-weights --small --bits 8` ran the small float model; `--quantize` and
    `--stt-model` were ignored with the random models."""
    for args, message in (
        (["--random-weights", "--small", "--bits", "8"], "--random-weights and --small are two"),
        (
            ["--small", "--quantize", "8"],
            "--quantize is for a float --model checkpoint, not --small.",
        ),
        (["--random-weights", "--quantize", "4"], "--quantize is for a float --model checkpoint"),
        (
            ["--small", "--stt-model", "/x"],
            "--stt-model is for --model runs; --small uses a random",
        ),
        # a checkpoint (given or the default one) has its own voice and system prompt
        (
            ["--model", "/x", "--voice-frames", "10"],
            "--voice-frames is for --random-weights or --small; a checkpoint brings its own",
        ),
        (["--prompt-tokens", "5"], "--prompt-tokens is for --random-weights or --small;"),
    ):
        proc = _bench(*args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_zero_voice_frames_is_no_voice_prompt():
    """`--voice-frames 0` ran a one-frame voice prompt: the prefill had a position too many."""
    proc = _bench(
        "--small", "--voice-frames", "0", "--steps", "1", "--warmup-steps", "0",
        "--no-phases", "--no-user-transcript", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    # silence, prompt, silence and the column run ahead, less the first column: without a
    # voice's saved ring it waits on the one-frame delay (plan_prompt); one frame made it 34
    assert r["prefill_positions"] == 6 + 20 + 6 + 1 - 1


def test_a_random_voice_prompt_has_the_frames_asked_for():
    from personaplex_tui.benchmark import BenchOptions, build_model

    for frames in (0, 1, 7):
        _, voice, tokens = build_model(BenchOptions(small=True, voice_frames=frames))
        assert (voice.frames if voice else 0) == frames and len(tokens) == 20


def test_full_ring_times_steps_that_attend_the_whole_context(monkeypatch):
    """`--full-ring` steps every timed session (the main one, the phases', the transcript's on
    and off) until its next step attends the whole context; without it the timed steps start
    right after the prompt."""
    from dataclasses import replace

    from personaplex_tui import benchmark

    small = benchmark.random_config(benchmark.BenchOptions(small=True))
    temporal = replace(small.lm.temporal, context=120)
    monkeypatch.setattr(
        benchmark,
        "random_config",
        lambda opts: replace(small, lm=replace(small.lm, temporal=temporal)),
    )
    filled = []
    fill = benchmark.fill_context

    def spy(session, audio, context):
        n = fill(session, audio, context)
        filled.append((n, session.position))
        return n

    monkeypatch.setattr(benchmark, "fill_context", spy)
    opts = dict(small=True, steps=4, warmup_steps=2, user_transcript=True)
    plain = benchmark.run_benchmark(benchmark.BenchOptions(**opts))
    assert filled == [] and plain.context == 120
    assert plain.timed_from_position == plain.prefill_positions < 120
    full = benchmark.run_benchmark(benchmark.BenchOptions(**opts, full_ring=True))
    assert full.context == 120 and full.timed_from_position == 120
    # the main session, the phases', the transcript's off and on, its phases'
    assert len(filled) == 5 and all(n > 0 and position == 120 for n, position in filled)
    assert full.step_ms.n == full.lm_step_ms.n == 4 and "error" not in full.transcript
