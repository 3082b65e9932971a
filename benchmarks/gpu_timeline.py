"""Where a step's GPU time goes: every kernel of the full-duplex and LM-only steps, timed by CUPTI.

`python3 benchmarks/gpu_timeline.py [--bits 4] [--steps 30]` (CUDA only; needs torch with CUDA,
whose profiler records every kernel of the process through CUPTI, MLX's included) builds the
benchmark's random 7B model, warms a session up, then profiles `--steps` full-duplex steps and
as many LM-only steps. Per kind of step it prints the GPU's busy and idle time per step (the
idle time is launch, encoding and host synchronisation the GPU waits for), and per kernel name
its calls per step and median duration, largest first; `--sequence` also lists one step's
kernels in order with the gap before each; `--transcript` also profiles full-duplex steps of a
session that transcribes the user (the STT's kernels among them). Steps are found by the temporal kernel's launches.
MLX's kernels are launched as the app launches them (directly, `personaplex_tui/cuda_launches.py`);
`MLX_USE_CUDA_GRAPHS=1` times them as CUDA graphs (whose first kernels then wait for the graph's
update: the reason the app launches directly).
Measurement only: it changes nothing in the model.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def kernels_of(trace_path: str) -> list[tuple[str, float, float]]:
    """(name, start µs, duration µs) of every GPU kernel in a Chrome trace, by start."""
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    out = [
        (e["name"], float(e["ts"]), float(e.get("dur", 0.0)))
        for e in events
        if e.get("cat") == "kernel" and e.get("ph") == "X"
    ]
    return sorted(out, key=lambda k: k[1])


def split_steps(kernels: list[tuple[str, float, float]], anchor: str) -> list[tuple[list, float]]:
    """(kernels, next anchor's start) between consecutive launches of the kernel whose name
    contains `anchor` (each step starts a little before it; the partial steps dropped)."""
    starts = [i for i, k in enumerate(kernels) if anchor in k[0]]
    return [(kernels[a:b], kernels[b][1]) for a, b in zip(starts, starts[1:], strict=False)]


def short(name: str, width: int = 70) -> str:
    name = name.split("(")[0]
    return name if len(name) <= width else name[: width - 1] + "…"


def report(label: str, steps: list[tuple[list, float]], sequence: bool) -> None:
    if not steps:
        print(f"{label}: no steps found")
        return
    spans, busy = [], []
    per_name: dict[str, list[float]] = collections.defaultdict(list)
    for step, next_start in steps:
        spans.append(next_start - step[0][1])
        # busy: union of kernel intervals (kernels may overlap on several streams)
        total, cur_s, cur_e = 0.0, None, None
        for _, s, d in step:
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    total += cur_e - cur_s
                cur_s, cur_e = s, s + d
            else:
                cur_e = max(cur_e, s + d)
        total += cur_e - cur_s
        busy.append(total)
        for name, _, d in step:
            per_name[name].append(d)
    n = len(steps)
    span, work = statistics.median(spans), statistics.median(busy)
    print(
        f"\n== {label}: {n} steps; anchor to anchor {span / 1000:.3f} ms, GPU busy "
        f"{work / 1000:.3f} ms, idle {(span - work) / 1000:.3f} ms (medians); "
        f"{statistics.median([len(s) for s, _ in steps]):.0f} kernels per step"
    )
    rows = sorted(per_name.items(), key=lambda kv: -sum(kv[1]) / n)
    print(f"{'µs/step':>9} {'calls':>6} {'median µs':>10}  kernel")
    for name, durs in rows[:40]:
        print(
            f"{sum(durs) / n:9.1f} {len(durs) / n:6.1f} {statistics.median(durs):10.1f}  {short(name)}"
        )
    if len(rows) > 40:
        rest = sum(sum(d) for _, d in rows[40:]) / n
        print(f"{rest:9.1f}        (the other {len(rows) - 40} names)")
    if sequence:
        step = steps[len(steps) // 2][0]
        print(f"-- one {label} step in order: gap before (µs), duration (µs), kernel")
        prev_end = step[0][1]
        for name, s, d in step:
            print(f"{s - prev_end:8.1f} {d:8.1f}  {short(name)}")
            prev_end = max(prev_end, s + d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=4, choices=(4, 8))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--sequence", action="store_true", help="list one step's kernels in order")
    ap.add_argument("--anchor", default="temporal", help="a name part of one kernel per step")
    ap.add_argument(
        "--transcript",
        action="store_true",
        help="also profile full-duplex steps with the user transcript on (random STT weights)",
    )
    args = ap.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from personaplex_tui.benchmark import BenchOptions, transcribing_session, warmed_session
    from personaplex_tui.cuda_launches import launch_directly

    launch_directly()  # as the app launches MLX's kernels; MLX_USE_CUDA_GRAPHS=1 for graphs

    if not torch.cuda.is_available():
        print("gpu_timeline needs torch with CUDA (its profiler reads the GPU's kernels)")
        return 1
    torch.zeros(1, device="cuda")  # CUDA and CUPTI up before MLX's first kernel
    opts = BenchOptions(random_weights=True, bits=args.bits, user_transcript=False)
    model, session, audio = warmed_session(opts, args.steps + 10, 30)
    rng = np.random.default_rng(0)
    for _ in range(10):
        session.step_codes(rng.integers(0, model.lm.config.card, 8))

    steps = {
        "full-duplex": lambda i: session.step(audio[i]),
        "LM-only": lambda i: session.step_codes(rng.integers(0, model.lm.config.card, 8)),
    }
    if args.transcript:
        # no voice or system prompt: its positions are earlier than the first session's (the
        # ring is far from full in both)
        transcribing = transcribing_session(model, opts, audio)
        steps["full-duplex, user transcript on"] = lambda i: transcribing.step(audio[i])
    results = {}
    for label, step in steps.items():
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for i in range(args.steps):
                step(i)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            results[label] = kernels_of(path)
    for label, kernels in results.items():
        # the STT's step is the temporal kernel too (another variant): split those at the depformer
        anchor = "depformer" if "transcript" in label and args.anchor == "temporal" else args.anchor
        report(label, split_steps(kernels, anchor), args.sequence)
    return 0


if __name__ == "__main__":
    sys.exit(main())
