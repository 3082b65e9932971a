"""The LM step alone with its graph built while the GPU runs the previous step, or when called, alternated.

`python3 benchmarks/build_ahead_ab.py [--bits 4] [--steps 300] [--rounds 3]` builds the benchmark's
random 7B model (`--small`: the tests' tiny one, on any machine), warms a session up and times
`Session.step_codes` on random user codes with `builds_ahead` on and off in alternating blocks of
`--steps / 2` calls, the same process, as `bench` times the LM step. First it steps two sessions
of one seed, one each way, through the same codes and says whether every token agrees. Per round
it prints p50 and p99 of each way (ms). docs/cuda-kernels.md §The next LM step built while the
GPU runs this one has the figures. Measurement only: it changes nothing in the model.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.launch_early_ab import ab_arguments, ab_sessions, timed_block  # noqa: E402


def same_tokens(session, rows) -> bool:
    """Step `session` from a reset through `rows` each way; whether every token agrees."""
    runs = []
    for ahead in (False, True):
        session.builds_ahead = ahead
        session.reset()
        runs.append([session.step_codes(codes) for codes in rows])
    return all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(*runs, strict=True))


def main(argv: list[str] | None = None) -> int:
    args = ab_arguments(__doc__.splitlines()[0], argv)
    sessions, _, half = ab_sessions(args)
    session = sessions["off"]
    card = session.model.lm.config.card
    rng = np.random.default_rng(0)
    rows = rng.integers(0, card, (max(half, 200), 8))
    print(f"the same tokens each way over {len(rows)} steps: {same_tokens(session, rows)}")
    for round_ in range(args.rounds):
        ms: dict[bool, list[float]] = {False: [], True: []}
        for ahead in (False, True, False, True):
            session.builds_ahead = ahead
            ms[ahead] += timed_block(session, rows[:half], session.step_codes)
        print(
            f"round {round_}: built when called p50 {statistics.median(ms[False]):.3f} "
            f"p99 {np.percentile(ms[False], 99):.3f} ms | built ahead p50 "
            f"{statistics.median(ms[True]):.3f} p99 {np.percentile(ms[True], 99):.3f} ms",
            flush=True,
        )
    session.builds_ahead = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
