"""The full-duplex step with its parts launched as each is built or all at the end, alternated.

`python3 benchmarks/launch_early_ab.py [--transcript] [--bits 4] [--steps 300] [--rounds 3]`
builds the benchmark's random 7B model (`--small`: the tests' tiny one, on any machine), warms a
session up and times `Session.step` with `launch_early` on and off in alternating blocks of
`--steps / 2` frames, the same process and audio; `--transcript` does the same for a second
session that transcribes the user (the bench's random STT of stt-1b's shape). Per round it
prints p50 and p99 of each order (ms). docs/driving-personaplex.md §The live step has the figures.
Measurement only: it changes nothing in the model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def timed_block(session, frames, call=None) -> list[float]:
    """Milliseconds of each `step` (or `call`, such as `session.step_codes`) over `frames`, the
    first five left out."""
    step = call or session.step
    ms = []
    for inputs in frames:
        start = time.perf_counter()
        step(inputs)
        ms.append(1000 * (time.perf_counter() - start))
    return ms[5:]


def ab_arguments(description: str, argv: list[str] | None, extra=None) -> argparse.Namespace:
    """The A/B scripts' common options (`extra(parser)` adds a script's own)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--bits", type=int, default=4, choices=(4, 8))
    ap.add_argument("--steps", type=int, default=300, help="frames per round and mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--transcript", action="store_true", help="also a transcribing session")
    ap.add_argument("--small", action="store_true", help="the tests' tiny model")
    if extra is not None:
        extra(ap)
    return ap.parse_args(argv)


def ab_sessions(args: argparse.Namespace) -> tuple[dict, list, int]:
    """({"off": a warmed session, "on": one that transcribes the user (`--transcript`)}, the
    audio frames, frames per block), MLX's kernels launched as the app launches them."""
    from personaplex_tui.benchmark import BenchOptions, transcribing_session, warmed_session
    from personaplex_tui.cuda_launches import launch_directly

    launch_directly()
    opts = BenchOptions(
        random_weights=not args.small, small=args.small, bits=args.bits, user_transcript=False
    )
    half = max(args.steps // 2, 10)
    model, plain, audio = warmed_session(opts, half + 20, 20)
    sessions = {"off": plain}
    if args.transcript:
        sessions["on"] = transcribing_session(model, opts, audio)
    return sessions, audio, half


def main(argv: list[str] | None = None) -> int:
    args = ab_arguments(__doc__.splitlines()[0], argv)
    sessions, audio, half = ab_sessions(args)
    for round_ in range(args.rounds):
        for name, session in sessions.items():
            ms: dict[bool, list[float]] = {False: [], True: []}
            for early in (False, True, False, True):
                session.launch_early = early
                ms[early] += timed_block(session, audio[:half])
            at_end, early = ms[False], ms[True]
            print(
                f"round {round_}, user transcript {name}: launched at the end p50 "
                f"{statistics.median(at_end):.3f} p99 {np.percentile(at_end, 99):.3f} ms | "
                f"launched early p50 {statistics.median(early):.3f} "
                f"p99 {np.percentile(early, 99):.3f} ms",
                flush=True,
            )
        for session in sessions.values():
            session.launch_early = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
