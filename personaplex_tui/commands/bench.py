"""`ppx-tui bench`: how fast is a step here? A Rich table, or JSON with --json."""

from __future__ import annotations

import argparse
import json

from rich.console import RenderableType

from personaplex_tui.bench_transcript import transcript_rows
from personaplex_tui.commands.common import (
    DTYPES,
    UsageError,
    add_model_arguments,
    check_seed,
    print_out,
    status,
)
from personaplex_tui.commands.measure_table import MeasureTable
from personaplex_tui.user_transcript import add_stt_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time load, warm-up, prompt prefill and the 80 ms step (p50/p90/p99/max)",
        description="Benchmark PersonaPlex on this machine: a real checkpoint (--model) or "
        "random weights of the exact 7B shape (--random-weights, no download).",
    )
    add_model_arguments(p)
    p.add_argument("--random-weights", action="store_true", help="random weights of the 7B shape")
    p.add_argument(
        "--bits",
        type=int,
        choices=(4, 8, 16),
        default=None,
        help="with --random-weights: 4, 8 or 16 (bf16) (4)",
    )
    p.add_argument("--small", action="store_true", help="a tiny random model (CPU smoke test, CI)")
    p.add_argument("--steps", type=int, default=300, help="timed steps after warm-up (300)")
    p.add_argument("--warmup-steps", type=int, default=20, help="warm-up steps (20)")
    p.add_argument(
        "--voice-frames", type=int, help="random model: voice prompt length, 0 for none (50)"
    )
    p.add_argument("--prompt-tokens", type=int, help="random model: system prompt length (20)")
    p.add_argument("--no-phases", action="store_true", help="skip the per-phase breakdown")
    p.add_argument("--turn", action="store_true", help="also time turn-based reply latency")
    p.add_argument(
        "--full-ring",
        action="store_true",
        help="time steps that attend a full context, as after a conversation's first four "
        "minutes (each session steps there first, untimed)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random weights, the audio fed and the sampling (0)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_stt_arguments(p, with_defaults=True)
    p.set_defaults(handler=run)


MAX_STEPS = 100_000  # two hours of conversation; more is a soak's job (`ppx-tui soak`)


def run(args: argparse.Namespace) -> int:
    from personaplex_tui.benchmark import BenchOptions, run_benchmark

    if not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS}, not {args.steps}.")
    if not 0 <= args.warmup_steps <= MAX_STEPS:
        raise UsageError(
            f"--warmup-steps must be between 0 and {MAX_STEPS}, not {args.warmup_steps}."
        )
    check_seed(args.seed)
    if args.model and (args.random_weights or args.small):
        raise UsageError("Give either --model or --random-weights/--small, not both.")
    if args.random_weights and args.small:  # (--small won, and --bits was ignored)
        raise UsageError("--random-weights and --small are two models; give one of them.")
    random = "--small" if args.small else "--random-weights" if args.random_weights else None
    for flag, value in (
        ("--voice-frames", args.voice_frames),
        ("--prompt-tokens", args.prompt_tokens),
    ):
        if value is not None and not 0 <= value <= 1000:
            raise UsageError(f"{flag} must be between 0 and 1000, not {value}.")
        if value is not None and not random:  # (it was ignored: a checkpoint has its own)
            raise UsageError(
                f"{flag} is for --random-weights or --small; a checkpoint brings its own voice "
                "and system prompt."
            )
    if random and args.quantize is not None:
        raise UsageError(f"--quantize is for a float --model checkpoint, not {random}.")
    if random and args.stt_model is not None:
        raise UsageError(f"--stt-model is for --model runs; {random} uses a random STT model.")
    if args.bits is not None and not args.random_weights:
        raise UsageError(
            "--bits is for --random-weights (--small is float32; a --model has its own)."
        )
    assert args.dtype is None or args.dtype in DTYPES
    opts = BenchOptions(
        model=args.model,
        random_weights=args.random_weights,
        small=args.small,
        bits=args.bits or 4,
        dtype=args.dtype,
        quantize=args.quantize,
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        voice_frames=BenchOptions.voice_frames if args.voice_frames is None else args.voice_frames,
        prompt_tokens=(
            BenchOptions.prompt_tokens if args.prompt_tokens is None else args.prompt_tokens
        ),
        phases=not args.no_phases,
        turn=args.turn,
        full_ring=args.full_ring,
        seed=args.seed,
        user_transcript=args.user_transcript,
        stt_model=args.stt_model,
        stt_quantize=args.stt_quantize,
    )
    result = run_benchmark(opts, progress=lambda m: status(f"bench: {m}..."))
    if args.json:
        print_out(json.dumps(result.as_dict(), indent=2))
    else:
        print_out(result_table(result))
    return 0


def result_table(r) -> RenderableType:
    """The benchmark as a two-column Rich table."""
    t = MeasureTable(f"ppx-tui bench — {r.model}")
    t.add_row("device", r.device)
    t.add_row("platform", r.platform)
    t.add_row("weights", f"{r.quantization}, activations {r.dtype}")
    t.add_row("quantized mat-vec kernels", r.matvec)
    t.add_row("temporal step kernels", r.temporal)
    t.add_row("depformer kernels", r.depformer)
    t.add_row("Mimi kernels", r.mimi)
    if r.cuda_graphs:
        how = "launched directly" if r.cuda_graphs == "off" else "as CUDA graphs"
        t.add_row("MLX's CUDA kernels", f"{how} (MLX_USE_CUDA_GRAPHS)")
    t.add_row("load", f"{r.load_s:.2f} s")
    t.add_row("warm-up (compile + first steps)", f"{r.warmup_s:.2f} s")
    w = r.warmup
    if w.deferred:
        d = w.deferred
        eager = d["eager_step_ms"] or {}
        t.add_row("  steps on eager graphs meanwhile", f"p50 {eager.get('p50', 0):.2f} ms")
        t.add_row("  compiled graphs ready (from the load's start)", f"{d['compiled_s']:.2f} s")
    t.add_row("  first session (prompt prefill)", f"{w.session_s:.2f} s")
    t.add_row(f"  step graphs ({len(w.graphs)}: trace + first run)", f"{w.graphs_s:.2f} s")
    for g in w.graphs:
        t.add_row(f"    {g['graph']}", f"{g['trace_ms']:.0f} + {g['first_run_ms']:.0f} ms")
    t.add_row(f"  first {r.options.get('warmup_steps', 0)} steps", f"{w.steps_s:.2f} s")
    t.add_row("  new session, graphs shared", f"{w.new_session_ms:.0f} ms")
    t.add_row("  prefill of a new prompt length", f"{w.prefill_new_length_ms:.0f} ms")
    t.add_row(f"prompt prefill ({r.prefill_positions} positions)", f"{r.prefill_ms:.1f} ms")
    ring = " (a full ring)" if r.timed_from_position >= r.context else ""
    t.add_row("timed steps start at position", f"{r.timed_from_position} of {r.context}{ring}")
    s = r.step_ms
    t.add_row(
        f"step, full duplex (n={s.n})",
        f"p50 {s.p50:.2f} · p90 {s.p90:.2f} · p99 {s.p99:.2f} · max {s.max:.2f} ms",
    )
    lm = r.lm_step_ms
    t.add_row(
        "LM step only (no Mimi)",
        f"p50 {lm.p50:.2f} · p90 {lm.p90:.2f} · p99 {lm.p99:.2f} · max {lm.max:.2f} ms",
    )
    for name, ms in r.phases_ms.items():
        t.add_row(f"  phase: {name}", f"{ms:.2f} ms")
    t.add_row("real-time factor (p50 / 80 ms)", f"{r.rtf:.3f}")
    t.add_row("peak memory", f"{r.peak_memory_gb:.2f} GB")
    for name, ms in r.turn.items():
        t.add_row(f"turn: {name.replace('_', ' ')}", f"{ms:.1f} ms")
    for name, value in transcript_rows(r.transcript):
        t.add_row(name, value)
    return t
