"""What the peer benchmark's workers share: PersonaPlex's shapes, the timing loop, percentiles, output.

Every worker (`peers_ours`, `peers_torch`, `peers_mlx`) runs in its own process, started by
`benchmarks/peers.py`, and prints one line `PEER-RESULT {json}` on stdout: either measures (each
the same percentiles as `ppx-tui bench`) or a status ("not installed") with one sentence why.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from model.config import FRAME_SAMPLES, PersonaPlexConfig, config_7b, mimi_tiny, tiny

RESULT_PREFIX = "PEER-RESULT "
PARTS = ("lm", "mimi")


def shapes(small: bool) -> PersonaPlexConfig:
    """PersonaPlex 7B as published, or the tiny model `ppx-tui bench --small` builds."""
    return tiny(mimi=mimi_tiny()) if small else config_7b()


def percentiles(ms: list[float]) -> dict[str, float | int]:
    """p50/p90/p99/max/mean/n of milliseconds, computed as `personaplex_tui.benchmark.Stats.of`."""
    a = np.asarray(ms, dtype=np.float64)
    q = np.percentile(a, [50, 90, 99])
    names = ("p50", "p90", "p99", "max", "mean")
    out: dict[str, float | int] = {
        k: round(float(v), 3) for k, v in zip(names, (*q, a.max(), a.mean()), strict=True)
    }
    out["n"] = int(a.size)
    return out


def timed(step: Callable[[int], object], warmup: int, steps: int) -> list[float]:
    """Run `step(i)` `warmup` times untimed, then `steps` times timed: milliseconds per call.

    `step` must return only once its work is done (device synchronized, results on the host
    where the caller would need them)."""
    for i in range(warmup):
        step(i)
    out = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        step(i)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def codec_timed(
    encode: Callable[[int], object], decode: Callable[[object], object], warmup: int, steps: int
) -> tuple[list[float], list[float]]:
    """Stream `warmup + steps` frames: `codes = encode(i)`, then `decode(codes)`, each timed
    on its own (both must return only once done); milliseconds of the timed frames."""
    enc, dec = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        codes = encode(i)
        t1 = time.perf_counter()
        decode(codes)
        t2 = time.perf_counter()
        if i >= warmup:
            enc.append(1000 * (t1 - t0))
            dec.append(1000 * (t2 - t1))
    return enc, dec


def emit(label: str, measures: dict[str, list[float]], **info: Any) -> None:
    """Print the worker's result line: each measure's percentiles, a label and facts."""
    result = {
        "status": "ok",
        "label": label,
        "measures": {name: percentiles(ms) for name, ms in measures.items()},
        "info": info,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def emit_missing(package: str, error: BaseException) -> int:
    """Print the result line of a peer whose package cannot be imported; the exit status (0)."""
    result = {"status": "not installed", "why": f"{package} is not installed ({error})"}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def worker_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every worker takes (peers.py passes them through)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("part", choices=PARTS, help="the LM step (and full step), or Mimi per frame")
    p.add_argument(
        "--small", action="store_true", help="the tiny shapes of `ppx-tui bench --small`"
    )
    p.add_argument("--bits", type=int, choices=(4, 8, 16), default=4, help="LM weights (16: bf16)")
    p.add_argument("--depformer-steps", type=int, choices=(8, 16), default=8)
    p.add_argument("--steps", type=int, default=300, help="timed steps or frames")
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    return p


def noise_frames(n: int, seed: int) -> np.ndarray:
    """[n, 1920] float32 noise at speech level (a codec's cost does not depend on content)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, FRAME_SAMPLES)) * 0.1).astype(np.float32)


def user_codes(n: int, codebooks: int, card: int, seed: int) -> np.ndarray:
    """[n, codebooks] random Mimi codes: the user's audio tokens fed to the LM each step."""
    return np.random.default_rng(seed).integers(0, card, (n, codebooks)).astype(np.int64)
