"""ppx-tui against its peers on PersonaPlex's shapes: one command, one side-by-side table with ratios.

Runs, each in its own process and in sequence (so that one implementation's GPU memory, threads
or missing package cannot touch another's numbers):
- ours: `python -m personaplex_tui bench --random-weights --json` (the LM step, 8 depformer
  steps, and the full-duplex step) and `benchmarks/peers_ours.py mimi` (Mimi per frame);
- PyTorch `moshi` (`benchmarks/peers_torch.py`): LMGen with 8 and 16 depformer steps, the
  full-duplex step as its server runs it, Mimi per frame; bf16 with CUDA graphs on CUDA;
- Kyutai's `moshi_mlx` (`benchmarks/peers_mlx.py`): the same, `--bits` like ours.

`--ours-also 8bit mlx-ops` adds rows of ours at 8 bits and on MLX's ops alone (what Metal and the
CPU run), without ratios; `--fresh-cache` points every kernel cache at a new empty folder, so
ours' first bench waits as a new machine does and a second, cached one follows. A second table
gives each of ours' benches its load + warm-up in seconds. So one call gives the whole picture:

    python3 benchmarks/peers.py --bits 4 --fresh-cache --ours-also 8bit mlx-ops --markdown

Every figure is milliseconds per 80 ms frame over `--steps` timed steps after `--warmup-steps`
untimed ones, with `ppx-tui bench`'s percentiles; the ratio columns are the peer's over ours for
the same measure (the LM step: over ours with 8 depformer steps; ours' steps follow its prompt
prefill of about 80 positions, the peers' start at position 0). A peer whose package is
missing is a row saying so. Random weights of the 7B's exact shape; `--small` uses the tiny
model of `ppx-tui bench --small` (float weights) for a CPU smoke run. Stopped (Ctrl+C, or
SIGTERM from `timeout`), it prints the tables of the processes that finished and exits 128 + the
signal's number, as `ppx-tui` does (`personaplex_tui/stop_signals.py`).

    python3 benchmarks/peers.py --bits 4 --steps 300          # on the GPU machine
    python3 benchmarks/peers.py --small --steps 30            # CPU smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGINT
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers_common import RESULT_PREFIX  # noqa: E402
from model.checks import MAX_SEED  # noqa: E402
from personaplex_tui.commands.bench import MAX_STEPS  # noqa: E402
from personaplex_tui.kernel_cache import persistent_kernel_cache  # noqa: E402
from personaplex_tui.stop_signals import (  # noqa: E402
    POLICY,
    Stopped,
    exit_code_for,
    signal_name,
    stopped_sentence,
)

MEASURES = {
    "lm": "LM step",
    "full": "full-duplex step",
    "full_stt": "full-duplex step, user transcript on",
    "encode": "Mimi encode",
    "decode": "Mimi decode",
}
LM, MIMI = ("lm", "full"), ("encode", "decode")  # what each kind of process reports
OUR_LM = (*LM, "full_stt")  # ours' bench also steps with the user's transcript, side by side
PEERS = ("torch", "mlx")
OURS = "ppx-tui"
NAMES = {OURS: OURS, "torch": "PyTorch moshi", "mlx": "moshi_mlx"}
# --ours-also: (what the rows say, bench's extra arguments, the environment)
OURS_ALSO = {
    "8bit": ("8-bit weights", ["--bits", "8"], {}),
    "mlx-ops": (  # what Metal and the CPU run: every CUDA kernel of ours off
        "MLX's ops only (PPX_*=mlx), no transcript",
        ["--no-user-transcript"],
        {f"PPX_{k}": "mlx" for k in ("TEMPORAL", "DEPFORMER", "MATVEC", "MIMI", "SEANET")},
    ),
}
# The kernel caches --fresh-cache empties: MLX's JIT, the driver's PTX, our precompiled cubins.
CACHE_VARS = ("MLX_PTX_CACHE_DIR", "CUDA_CACHE_PATH", "PPX_CUDA_KERNEL_CACHE")


@dataclass
class Job:
    """One process: what it measures, how to start it, and what it reported."""

    key: str
    impl: str  # OURS or one of PEERS
    what: str  # e.g. "8 depformer steps"
    measures: tuple[str, ...]  # keys of MEASURES it reports
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set for its process only
    base: bool = True  # ours: the rows the peers' ratios divide by
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result.get("status") == "ok"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark ppx-tui and its peers (PyTorch moshi, moshi_mlx) on PersonaPlex's "
        "shapes with random weights, and print one side-by-side table."
    )
    p.add_argument(
        "--bits",
        type=int,
        choices=(4, 8, 16),
        default=4,
        help="LM weights of ours and moshi_mlx: 4, 8 or 16 (bf16); PyTorch is bf16",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="the tiny model of `ppx-tui bench --small` (float weights; CPU, tests)",
    )
    p.add_argument("--steps", type=int, default=300, help="timed steps or frames per measure (300)")
    p.add_argument("--warmup-steps", type=int, default=20, help="untimed steps before them (20)")
    p.add_argument(
        "--depformer-steps",
        type=int,
        nargs="+",
        choices=(8, 16),
        default=[8, 16],
        help="the peers' depformer steps: 8 as ours runs, 16 as PersonaPlex ships",
    )
    p.add_argument(
        "--peers", nargs="+", choices=PEERS, default=list(PEERS), help="which peers to run (both)"
    )
    p.add_argument(
        "--ours-also",
        nargs="+",
        choices=tuple(OURS_ALSO),
        default=[],
        help="also ours at 8 bits and on MLX's ops alone (rows without ratios)",
    )
    p.add_argument(
        "--fresh-cache",
        action="store_true",
        help="empty kernel caches: ours' first bench compiles as on a new machine, then again cached",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds per process (900)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", metavar="PATH", help="also write every result as JSON to PATH")
    args = p.parse_args(argv)
    if not (1 <= args.steps <= MAX_STEPS and 0 <= args.warmup_steps <= MAX_STEPS):
        p.error(f"--steps must be 1 to {MAX_STEPS} and --warmup-steps 0 to {MAX_STEPS}.")
    if not 0 <= args.seed <= MAX_SEED:
        p.error(f"--seed must be between 0 and {MAX_SEED}, not {args.seed}.")
    if not (math.isfinite(args.timeout) and args.timeout > 0):  # (NaN and inf: a traceback)
        p.error("--timeout must be a positive number of seconds.")
    if args.small and "8bit" in args.ours_also:
        p.error("--ours-also 8bit needs the 7B shapes: --small has float weights only.")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        p.error(f"--json: the folder of {args.json} does not exist.")
    if args.json and Path(args.json).is_dir():
        p.error(f"--json: {args.json} is a folder; give a file name.")
    return args


def jobs(args: argparse.Namespace) -> list[Job]:
    """Every process to run, ours first."""
    bits = 16 if args.small else args.bits  # the tiny shapes are not multiples of a group
    common = ["--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
              "--seed", str(args.seed), "--bits", str(bits)] + (["--small"] * args.small)  # fmt: skip
    ours = list(common)
    if args.small:  # `ppx-tui bench` takes --bits with --random-weights only (--small is float)
        at = ours.index("--bits")
        del ours[at : at + 2]
    bench = [
        "-m", "personaplex_tui", "bench", "--small" if args.small else "--random-weights",
        "--no-phases", "--json", *ours,
    ]  # fmt: skip
    first = "8 depformer steps" + (", empty kernel caches" if args.fresh_cache else "")
    out = [Job("ours", OURS, first, OUR_LM, bench)]
    if args.fresh_cache:
        out.append(Job("ours-cached", OURS, "8 depformer steps, cached", OUR_LM, bench, base=False))
    out.append(Job("ours-mimi", OURS, "", MIMI, ["benchmarks/peers_ours.py", "mimi", *common]))
    for name in args.ours_also:
        what, extra, env = OURS_ALSO[name]
        argv = bench + extra  # a later --bits wins
        out.append(
            Job(f"ours-{name}", OURS, f"8 depformer steps, {what}", OUR_LM, argv, env, False)
        )
    for peer in args.peers:
        script = f"benchmarks/peers_{peer}.py"
        for d in args.depformer_steps:
            what = f"{d} depformer steps" + (" (as shipped)" if d == 16 else "")
            argv = [script, "lm", "--depformer-steps", str(d), *common]
            out.append(Job(f"{peer}-{d}", peer, what, LM, argv))
        out.append(Job(f"{peer}-mimi", peer, "", MIMI, [script, "mimi", *common]))
    return out


def run(job: Job, timeout: float) -> None:
    """Start the job's process and read its result (never raises: failures become results)."""
    env = {
        **os.environ,
        **job.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, *job.argv], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        job.result = {"status": "timed out", "why": f"timed out after {timeout:.0f} s"}
        return
    seconds = round(time.perf_counter() - t0, 1)
    result = _read(job, proc.stdout) if proc.returncode == 0 else None
    if result is None:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["no output"]
        why = f"failed (exit {proc.returncode}): {lines[-1].strip()[:300]}"
        result = {"status": "failed", "why": why}
    result["seconds"] = seconds
    job.result = result


def _read(job: Job, stdout: str) -> dict[str, Any] | None:
    if job.impl == OURS and job.argv[:2] == ["-m", "personaplex_tui"]:  # bench --json: one JSON
        try:
            r = json.loads(stdout)
        except json.JSONDecodeError:
            return None
        mlx = r["platform"].split(", ")[-1]
        label = f"{OURS}, {mlx} on {r['device']}, {r['quantization']}"
        measures = {"lm": r["lm_step_ms"], "full": r["step_ms"]}
        if (r.get("transcript") or {}).get("step_ms_on"):
            measures["full_stt"] = r["transcript"]["step_ms_on"]
        return {"status": "ok", "label": label, "measures": measures, "bench": r}
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None


def rows(job_list: list[Job]) -> list[dict[str, Any]]:
    """The table: per measure, ours first, then each peer with its ratios to ours."""
    ours = {
        m: s
        for j in job_list
        if j.impl == OURS and j.base and j.ok
        for m, s in j.result["measures"].items()
    }
    out = []
    for measure, title in MEASURES.items():
        for job in job_list:
            if not job.ok:
                if measure == job.measures[0]:  # reported once, where its numbers would be
                    out.append({"measure": title, "impl": job.impl, "what": job.what,
                                "label": NAMES[job.impl], "status": job.result.get("why", "failed")})  # fmt: skip
                continue
            stats = job.result["measures"].get(measure)
            if stats is None:
                continue
            row = {"measure": title, "impl": job.impl, "what": job.what,
                   "label": job.result["label"], "status": "ok", **stats}  # fmt: skip
            base = ours.get(measure)
            if base and job.impl != OURS:
                row["ratio_p50"] = round(stats["p50"] / base["p50"], 2)
                row["ratio_p99"] = round(stats["p99"] / base["p99"], 2)
            out.append(row)
    return out


def ready_rows(job_list: list[Job]) -> list[dict[str, Any]]:
    """Each of ours' benches: its load and warm-up in seconds, and the compiled kernel modules
    its cache held before and after (MLX's JIT cache; none off CUDA)."""
    out = []
    for job in job_list:
        if job.impl != OURS or not job.ok or "bench" not in job.result:
            continue
        r = job.result["bench"]
        cache = r.get("warmup", {}).get("kernel_cache", {})
        out.append({"label": job.result["label"], "what": job.what, "load_s": r["load_s"],
                    "warmup_s": r["warmup_s"], "ready_s": round(r["load_s"] + r["warmup_s"], 2),
                    "modules_before": cache.get("modules_before"),
                    "modules_after": cache.get("modules_after")})  # fmt: skip
    return out


def render_ready(ready: list[dict[str, Any]], markdown: bool) -> str:
    """The load + warm-up table, like `render`'s."""
    head = [
        "implementation",
        "",
        "load s",
        "warm-up s",
        "ready s",
        "MLX kernel modules cached (warm-up's start -> end)",
    ]
    lines = [[r["label"], r["what"], f"{r['load_s']:.1f}", f"{r['warmup_s']:.1f}",
              f"{r['ready_s']:.1f}", f"{r['modules_before']} -> {r['modules_after']}"]
             for r in ready]  # fmt: skip
    return _grid(head, lines, markdown, left=2)


def render(table: list[dict[str, Any]], markdown: bool) -> str:
    """The rows as a Markdown table or as aligned text (Rich, no colours)."""
    head = ["measure", "implementation", "", "p50", "p90", "p99", "max", "n", "p50 / ours",
            "p99 / ours", "note"]  # fmt: skip
    lines = []
    for r in table:
        cells = [r["measure"], r["label"], r["what"]]
        if r["status"] != "ok":
            cells += [""] * 7 + [r["status"]]
        else:
            cells += [f"{r[k]:.2f}" for k in ("p50", "p90", "p99", "max")] + [str(r["n"])]
            cells += [f"{r[k]:.2f}x" if k in r else "" for k in ("ratio_p50", "ratio_p99")] + [""]
        lines.append(cells)
    return _grid(head, lines, markdown, left=3)


def _grid(head: list[str], lines: list[list[str]], markdown: bool, left: int) -> str:
    """Markdown, or text aligned by Rich: the first `left` columns and the last to the left."""
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, name in enumerate(head):
        last = i == len(head) - 1 and left > 2
        t.add_column(name, justify="left" if i < left or last else "right", no_wrap=True)
    for cells in lines:
        t.add_row(*cells)
    console = Console(file=io.StringIO(), width=400, color_system=None, record=True)
    console.print(t)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.fresh_cache:
        return run_all(args)
    # Before persistent_kernel_cache, which keeps a folder already set; removed at the end.
    with tempfile.TemporaryDirectory(prefix="ppx-peers-kernels-") as fresh:
        for var in CACHE_VARS:
            os.environ[var] = str(Path(fresh) / var.lower())
        print(f"peers: empty kernel caches under {fresh}", file=sys.stderr, flush=True)
        return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    """Run every job in turn, print the tables (and write the JSON); 1 if any job failed."""
    # MLX's CUDA kernels, compiled at first use, kept on disk as `ppx-tui` keeps them: every
    # process inherits the folder, so the second and later runs start warm (no effect elsewhere).
    persistent_kernel_cache()
    job_list = jobs(args)
    missing: dict[str, dict[str, Any]] = {}
    stopped_by: int | None = None
    for i, job in enumerate(job_list, 1):
        try:
            print(f"peers: [{i}/{len(job_list)}] {job.key} ...", file=sys.stderr, flush=True)
            if job.impl in missing:  # its package is not installed: no need to try again
                job.result = missing[job.impl]
            else:
                run(job, args.timeout)  # sets the result only once its process has ended
            if job.result["status"] == "not installed":
                missing[job.impl] = job.result
            status = job.result["status"]
            print(f"peers: [{i}/{len(job_list)}] {job.key}: {status}", file=sys.stderr, flush=True)
        except KeyboardInterrupt as stop:  # Ctrl+C or `timeout`'s SIGTERM: report what finished
            stopped_by = signum_of(stop)
            for left in job_list[i - 1 :]:
                left.result = left.result or {"status": "not run",
                                              "why": "not run: the command was stopped"}  # fmt: skip
            print(f"peers: stopped during [{i}/{len(job_list)}] {job.key} by "
                  f"{signal_name(stopped_by)}; the tables hold what finished.",
                  file=sys.stderr, flush=True)  # fmt: skip
            break
    table = rows(job_list)
    if any(j.impl == OURS and j.result["status"] not in ("ok", "not run") for j in job_list):
        print("peers: ppx-tui's own benchmark failed; see its row.", file=sys.stderr)
    what = "tiny model (--small), float weights" if args.small else f"7B shapes, {args.bits}-bit"
    print(f"ms per 80 ms frame, random weights, {what}; {args.steps} timed steps "
          f"after {args.warmup_steps}; ratios: peer / ours (>1: ours is faster)")  # fmt: skip
    print(render(table, args.markdown))
    ready = ready_rows(job_list)
    if ready:
        print("\nours' load + warm-up until the first compiled step, seconds")
        print(render_ready(ready, args.markdown))
    if args.json:
        results = {j.key: {"argv": j.argv, "env": j.env, **j.result} for j in job_list}
        data = {"options": vars(args), "rows": table, "ready": ready, "results": results}
        try:
            Path(args.json).write_text(json.dumps(data, indent=2))
        except OSError as exc:  # the tables above are the results; say why the file is not
            print(f"peers: could not write {args.json}: {exc.strerror or exc}.", file=sys.stderr)
            return 1
    if stopped_by is not None:
        return exit_code_for(stopped_by)
    failed = [j for j in job_list if j.result["status"] not in ("ok", "not installed")]
    return 1 if failed else 0


def signum_of(stop: KeyboardInterrupt) -> int:
    """The signal behind a stop: `Stopped` under ppx-tui's policy names it; else Ctrl+C."""
    return stop.signum if isinstance(stop, Stopped) else SIGINT


if __name__ == "__main__":
    POLICY.install()  # SIGINT, SIGTERM, SIGHUP raise `Stopped` (a KeyboardInterrupt); later ones wait
    try:
        sys.exit(main())
    except KeyboardInterrupt as stop:
        signum = signum_of(stop)
        print(f"peers: {stopped_sentence(signum)}", file=sys.stderr)
        sys.exit(exit_code_for(signum))
