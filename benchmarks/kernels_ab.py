"""The one-kernel temporal step and depformer against MLX's ops, on a CUDA GPU.

For each bit width, one random 7B model; each part is traced twice, once with its kernel and
once with MLX's ops (`PPX_TEMPORAL=mlx` / `PPX_DEPFORMER=mlx` while tracing), and the two
compiled functions are timed in `--rounds` rounds that alternate them (order flipped every
round), median ms per call over `--iters` evaluated calls:
- the temporal step at a full ring (3000 positions attended) and at position 100 (window 512);
- the depformer of one column, 8 steps, sampled (temperature 0.8, top-k 250) and greedy.

    python -m benchmarks.kernels_ab --bits 8 4 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import mlx.core as mx

from model import cuda, random_model
from model.config import config_7b
from model.sampling import SamplingParams
from personaplex_tui.kernel_cache import persistent_kernel_cache


def traced(env_var: str, mode: str, fn: Callable, *args: object) -> Callable:
    """`mx.compile(fn)`, traced now with the kernel on ("ours") or off ("mlx")."""
    if mode == "mlx":
        os.environ[env_var] = "mlx"
    try:
        compiled = mx.compile(lambda *a: fn(*a))
        mx.eval(compiled(*args))
    finally:
        os.environ.pop(env_var, None)
    return compiled


def rounds(calls: dict[str, Callable[[], object]], n_rounds: int, iters: int) -> dict:
    out: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(n_rounds):
        for name in list(calls) if r % 2 == 0 else list(calls)[::-1]:
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                mx.eval(calls[name]())
                times.append(time.perf_counter() - t0)
            out[name].append(round(1000 * statistics.median(times), 3))
    return out


def temporal(lm, offset: int, n_rounds: int, iters: int) -> dict:
    caches = lm.make_cache()
    for cache in caches:
        cache.offset = offset
    window = caches[0].step_window()
    x = mx.random.normal((1, 1, lm.config.temporal.d_model), key=mx.random.key(7))
    x = x.astype(lm.dtype)
    pos = mx.array(offset, dtype=mx.int32)

    def step(x, pos, states):
        return lm.forward_step(x, states, pos, window), states

    fns = {m: traced(cuda.TEMPORAL.env_var, m, step, x, pos, [c.state for c in caches])
           for m in ("ours", "mlx")}  # fmt: skip

    def call(mode: str) -> Callable[[], object]:
        def run():
            out, states = fns[mode](x, pos, [c.state for c in caches])
            for cache, state in zip(caches, states, strict=True):
                cache.state = list(state)
            return out, [c.state for c in caches]

        return run

    return rounds({m: call(m) for m in fns}, n_rounds, iters)


def depformer(lm, params: SamplingParams, n_rounds: int, iters: int) -> dict:
    h = mx.random.normal((1, 1, lm.config.temporal.d_model), key=mx.random.key(8))
    h = h.astype(lm.dtype)
    text, key = mx.array(3, dtype=mx.int32), mx.random.key(0)

    def column(h, text, key):
        return lm.depformer_step(h, text, n_steps=8, params=params, key=key)

    fns = {m: traced(cuda.DEPFORMER.env_var, m, column, h, text, key) for m in ("ours", "mlx")}
    return rounds({m: (lambda f=f: f(h, text, key)) for m, f in fns.items()}, n_rounds, iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args()
    persistent_kernel_cache()
    for bits in args.bits:
        lm = random_model(config_7b(), bits=bits, seed=0).lm
        print(f"{bits}-bit: temporal kernel {cuda.TEMPORAL.enabled()} "
              f"({cuda.TEMPORAL.disabled_reason}), depformer kernel "
              f"{cuda.DEPFORMER.enabled()} ({cuda.DEPFORMER.disabled_reason})", flush=True)  # fmt: skip
        for offset in (3500, 100):
            res = temporal(lm, offset, args.rounds, args.iters)
            print(f"  temporal step, position {offset}: {res}", flush=True)
        for params in (SamplingParams(0.8, 250), SamplingParams(0.0, 0)):
            res = depformer(lm, params, args.rounds, args.iters)
            print(f"  depformer, 8 steps, {params}: {res}", flush=True)
        del lm
        mx.clear_cache()


if __name__ == "__main__":
    main()
