"""The full-duplex step with the temporal kernel's weight stream on and off, alternated.

`python3 benchmarks/stream_ab.py [--plan 2 4 1] [--bits 4] [--steps 300] [--rounds 3]
[--transcript]` builds the benchmark's random 7B model, warms a session up and times
`Session.step` with the temporal kernel's mat-vecs streamed through shared memory (`--plan`:
stages, chunks, ahead; `model.cuda.temporal.STREAM_*`) and read straight into registers (0
stages) in alternating blocks of `--steps / 2` frames, the
same process and audio; `--transcript` does the same for a session that transcribes the user (the
STT's step is the same kernel). Per round: p50 and p99 of each (ms). docs/cuda-kernels.md §The
weight stream has the figures. Measurement only: it changes nothing in the model.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.launch_early_ab import ab_arguments, ab_sessions, timed_block  # noqa: E402


def graph_tables(session) -> list[dict]:
    """The tables of compiled step graphs `session` uses (its own, and its listener's): a
    compiled graph holds the kernel it was traced with, so each mode keeps its own graphs."""
    tables = [session._graphs._fns]
    listen = getattr(session, "_listen", None)
    if listen is not None:
        tables.append(listen.listener.graphs)
    return tables


class Modes:
    """Switches the temporal kernel's stages and the session's compiled graphs with them."""

    def __init__(self, session, temporal, plans: dict[str, tuple[int, int, int]]) -> None:
        self.tables, self.temporal, self.plans = graph_tables(session), temporal, plans
        self.kept: dict[str, list[dict]] = {}
        self.current: str | None = None

    def use(self, mode: str) -> None:
        if self.current is not None:
            self.kept[self.current] = [dict(t) for t in self.tables]
        for table, kept in zip(
            self.tables, self.kept.get(mode, [{}] * len(self.tables)), strict=True
        ):
            table.clear()
            table.update(kept)
        t = self.temporal
        t.STREAM_STAGES, t.STREAM_CHUNKS, t.STREAM_AHEAD = self.plans[mode]  # at STREAM_BITS
        self.current = mode


def main(argv: list[str] | None = None) -> int:
    args = ab_arguments(
        __doc__.splitlines()[0],
        argv,
        lambda ap: ap.add_argument(
            "--plan", type=int, nargs=3, default=[2, 4, 1], help="stages chunks ahead"
        ),
    )
    from model.cuda import temporal

    os.environ.pop(temporal.STREAM_ENV_VAR, None)  # it would override both modes' plans
    if args.bits not in temporal.STREAM_BITS:  # (8 bits: the shipped plan streams 4-bit only)
        temporal.STREAM_BITS = (*temporal.STREAM_BITS, args.bits)
    shipped = (temporal.STREAM_STAGES, temporal.STREAM_CHUNKS, temporal.STREAM_AHEAD)
    sessions, audio, half = ab_sessions(args)
    stages = {"stream": tuple(args.plan), "direct": (0, 0, 0)}
    plans = stages | {"shipped": shipped}  # the last only to go back to
    modes = {name: Modes(s, temporal, plans) for name, s in sessions.items()}
    for name, session in sessions.items():  # both kernels compiled before any block is timed
        for mode in stages:
            modes[name].use(mode)
            timed_block(session, audio[:10])
    for round_ in range(args.rounds):
        for name, session in sessions.items():
            ms: dict[str, list[float]] = {m: [] for m in stages}
            for mode in (*stages, *reversed(stages)):
                modes[name].use(mode)
                ms[mode] += timed_block(session, audio[:half])
            print(
                f"round {round_}, user transcript {name}: "
                + " | ".join(
                    f"{mode} p50 {statistics.median(v):.3f} p99 {np.percentile(v, 99):.3f} ms"
                    for mode, v in ms.items()
                ),
                flush=True,
            )
    for m in modes.values():
        m.use("shipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
