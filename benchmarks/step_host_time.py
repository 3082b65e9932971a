"""Where the host's time goes in one full-duplex `Session.step`: each graph's build, each launch, the wait.

`python3 benchmarks/step_host_time.py [--bits 4] [--steps 300] [--transcript] [--lm] [--small]
[--cprofile N]` warms the benchmark's random 7B session (`--small`: the tests' tiny model, on any
machine) and runs `Session.step` unchanged, with timers wrapped around what it calls: the encode
graph's call (its build), `mx.async_eval` (MLX's launches of what is ready), the LM step graph's
call, the decode graph's call and the final `_eval` (the last launches and the wait for the GPU);
on a CUDA GPU also the page-locked buffer's input copy, the write-back's build and the polled wait
inside `_eval`. What is left of the step is the host's own work: reading the frame back, the
bookkeeping (and Python's garbage collections, timed through `gc.callbacks`). Prints the median of
each part over the steps, and over the slowest 5 % of them (where the tail's time goes), in ms, and
which steps those are. `--lm` does the same for the LM step alone (`Session.step_codes` on random
user codes, as `bench` times it). `--cprofile N` then profiles as many unwrapped steps and prints
the N functions with the most time of their own (MLX's nanobind calls count in their callers' own
time). Measurement only: the step's code is not changed, and its results are those of an
unwrapped step.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.launch_early_ab import ab_arguments, ab_sessions  # noqa: E402

PARTS = (
    "input: copied in",  # through the page-locked buffer (CUDA only)
    "encode: build",
    "launch (async_eval #1: encode)",
    "LM step: build",
    "launch (async_eval #2: LM)",
    "decode: build",
    "write-back: build",  # CUDA only
    "eval: last launches + wait",
)
# `Session.step_codes`: its one `async_eval` is `_eval`'s own
LM_PARTS = ("input: copied in", "LM step: build", "write-back: build", "eval: launches + wait")
# inside `_eval`, so part of its time (CUDA only): its own launches, then the polled wait
NESTED = (
    "  of it, MLX's launches",
    "  of it, the polled wait",
    "  of it, the next LM step's build",
    "  of it, the next write-back's build",
)
# `step_codes` builds the next call's graph and write-back inside `_eval`, as these parts
AHEAD = {"LM step: build": NESTED[2], "write-back: build": NESTED[3]}


class TimedGraphs:
    """A session's `StepGraphs` whose LM step and decode graphs are timed when called."""

    def __init__(self, graphs: Any, timed: Callable[[str, Callable], Callable]) -> None:
        object.__setattr__(self, "_graphs", graphs)
        object.__setattr__(self, "_timed", timed)
        # one timed stand-in per graph, so that a graph looked up twice is the same object (as
        # `Session.step_codes` requires of a step built ahead)
        object.__setattr__(self, "_stand_ins", {})

    def _timed_graph(self, name: str, fn: Callable) -> Callable:
        if fn not in self._stand_ins:
            self._stand_ins[fn] = self._timed(name, fn)
        return self._stand_ins[fn]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graphs, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._graphs, name, value)

    def lm_step(self, spec: Any, window: Any) -> Callable:
        return self._timed_graph("LM step: build", self._graphs.lm_step(spec, window))

    def decode(self, full: bool) -> Callable:
        return self._timed_graph("decode: build", self._graphs.decode(full))


class StepTimer:
    """Wraps one session's calls with timers; `parts` holds each call's ms per step."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.parts: dict[str, list[float]] = defaultdict(list)
        self._async = 0
        self._real_async_eval = mx.async_eval
        self._gc_ms = 0.0  # Python's garbage collections inside the step (a part of the rest)
        self._gc_t0 = 0.0
        self._lm = False  # timing `step_codes`
        self._in_eval = False  # inside `_eval`: a graph built there is the next step's
        gc.callbacks.append(self._gc_event)
        encode, ev = session._encode, session._eval
        session._encode = lambda full: self._timed("encode: build", encode(full))
        session._eval = self._timed_eval(ev)
        # this session's view of the model's graphs (which its other sessions share)
        self._graphs = session._graphs
        session._graphs = TimedGraphs(session._graphs, self._timed)
        io = session._io  # the page-locked buffer (CUDA only): its calls as methods of its own
        if io is not None:
            io.frame_in = self._timed("input: copied in", io.frame_in)
            io.codes_in = self._timed("input: copied in", io.codes_in)
            io.written_back = self._timed("write-back: build", io.written_back)
            io.wait_written = self._timed(NESTED[1], io.wait_written)

    def _timed_eval(self, ev: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            name = "eval: launches + wait" if self._lm else "eval: last launches + wait"
            self._in_eval = True
            try:
                return self._timed(name, ev)(*args, **kwargs)
            finally:
                self._in_eval = False

        return run

    def _timed(self, name: str, fn: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            part = AHEAD.get(name, name) if self._in_eval else name
            self.parts[part].append(1000 * (time.perf_counter() - t0))
            return out

        return run

    def _async_eval(self, *args: Any) -> None:
        self._async += 1
        # a third is `_eval`'s own (the polled wait launches the rest), timed within its part;
        # `step_codes` has only that one
        if self._lm or self._async > 2:
            name = NESTED[0]
        else:
            name = f"launch (async_eval #{self._async}: {('encode', 'LM')[self._async - 1]})"
        self._timed(name, self._real_async_eval)(*args)

    def unwrap(self) -> None:
        """The session's own calls back, unwrapped."""
        for name in ("_encode", "_eval"):  # the methods again
            del self.session.__dict__[name]
        self.session._graphs = self._graphs
        io = self.session._io
        if io is not None:
            for name in ("frame_in", "codes_in", "written_back", "wait_written"):
                del io.__dict__[name]
        gc.callbacks.remove(self._gc_event)

    def _gc_event(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self._gc_ms += 1000 * (time.perf_counter() - self._gc_t0)

    def step(self, pcm: Any) -> Any:
        """One `Session.step`, its time and its parts noted; returns its frame."""
        return self._run(self.session.step, pcm, lm=False)

    def step_codes(self, codes: Any) -> Any:
        """One `Session.step_codes` (the LM step alone), its time and parts noted; returns
        what it returns."""
        return self._run(self.session.step_codes, codes, lm=True)

    def _run(self, call: Callable, inputs: Any, lm: bool) -> Any:
        self._async = 0
        self._gc_ms = 0.0
        self._lm = lm
        mx.async_eval = self._async_eval
        try:
            t0 = time.perf_counter()
            out = call(inputs)
            total = 1000 * (time.perf_counter() - t0)
        finally:
            mx.async_eval = self._real_async_eval
        self.parts["step"].append(total)
        self.parts["gc"].append(self._gc_ms)
        return out


def report(
    title: str, parts: dict[str, list[float]], skip: int = 5, names: tuple[str, ...] = PARTS
) -> None:
    """The median of each part over all steps, then over the slowest 5 % (where a tail's time
    goes: the host's builds and launches, or the wait for the GPU). `names`: the step's parts
    (`LM_PARTS` for `step_codes`); a part not timed in every step is left out."""
    steps = parts["step"][skip:]
    slow = [i for i, ms in enumerate(steps) if ms >= float(np.percentile(steps, 95))]
    print(f"{title}: {len(steps)} steps, median ms per part: all steps | the slowest 5 %")
    accounted = [0.0, 0.0]
    for part in (*names, *NESTED):
        values = parts.get(part, [])[skip:]
        if len(values) != len(steps):
            continue
        row = [statistics.median(values), statistics.median(values[i] for i in slow)]
        if part not in NESTED:
            accounted = [a + r for a, r in zip(accounted, row, strict=True)]
        print(f"  {part:34s} {row[0]:7.3f} | {row[1]:7.3f}")
    total = [statistics.median(steps), statistics.median(steps[i] for i in slow)]
    rest = [t - a for t, a in zip(total, accounted, strict=True)]
    print(f"  {'the rest (read-back, bookkeeping)':34s} {rest[0]:7.3f} | {rest[1]:7.3f}")
    gcs = parts.get("gc", [])[skip:]
    if len(gcs) == len(steps):  # Python's collections, within the rest
        means = [statistics.fmean(gcs), statistics.fmean(gcs[i] for i in slow)]
        print(f"  {'  of it, Python gc (mean)':34s} {means[0]:7.3f} | {means[1]:7.3f}")
    print(f"  {'step':34s} {total[0]:7.3f} | {total[1]:7.3f}  (p99 {np.percentile(steps, 99):.3f})")
    gaps = np.diff(slow)  # a periodic stall shows as one gap between the slow steps
    print(f"  the slowest 5 % are steps {slow[:12]}{' ...' if len(slow) > 12 else ''}", end="")
    print(f"; gaps between them: median {np.median(gaps):.0f}" if len(gaps) else "")


def profiled(session: Any, audio: list, top: int, lm: bool = False) -> None:
    """cProfile over unwrapped steps (`lm`: `step_codes` over rows of user codes): the host's
    functions by their own time, ms per step."""
    call = session.step_codes if lm else session.step
    profile = cProfile.Profile()
    profile.enable()
    for inputs in audio:
        call(inputs)
    profile.disable()
    stats = pstats.Stats(profile)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    print(
        f"  cProfile, {len(audio)} steps, the top {top} by own time (ms per step, calls per step):"
    )
    for (path, line, fn), (_cc, calls, own, cum, _callers) in rows[:top]:
        where = f"{Path(path).name}:{line}" if line else path
        print(
            f"    {1000 * own / len(audio):7.3f} own {1000 * cum / len(audio):7.3f} cum "
            f"{calls / len(audio):6.1f}x  {fn} ({where})"
        )


def main(argv: list[str] | None = None) -> int:
    def extra(ap: Any) -> None:
        ap.add_argument(
            "--cprofile",
            type=int,
            default=0,
            metavar="N",
            help="also profile --steps unwrapped steps and print the top N functions",
        )
        ap.add_argument("--lm", action="store_true", help="also the LM step alone (step_codes)")

    args = ab_arguments(__doc__.splitlines()[0], argv, extra)
    sessions, audio, half = ab_sessions(args)
    runs = [(f"user transcript {name}", session, False) for name, session in sessions.items()]
    if args.lm:
        plain = sessions["off"]
        card = plain.model.lm.config.card
        codes = list(np.random.default_rng(0).integers(0, card, (half, 8)).astype(np.int32))
        runs.append(("LM step alone (step_codes)", plain, True))
    for title, session, lm in runs:
        session.launch_early = True
        timer = StepTimer(session)
        inputs = codes if lm else audio[:half]
        timed = timer.step_codes if lm else timer.step
        for _ in range(2 * max(args.rounds, 1)):  # --steps steps per round
            for one in inputs:
                timed(one)
        report(title, timer.parts, names=LM_PARTS if lm else PARTS)
        timer.unwrap()
        if args.cprofile:
            profiled(session, 2 * inputs, args.cprofile, lm)
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
