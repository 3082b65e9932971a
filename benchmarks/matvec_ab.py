"""The fused quantized mat-vec (`model/cuda/matvec.py`) against MLX's kernels, on a CUDA GPU.

Two measurements, both in one process so that the machine's drift hits both sides alike:
1. `--pass`: 32 temporal layers of 4 projections (qkv, out + residual, gated FFN in, FFN out +
   residual) and two RMSNorms each, random quantized weights of the 7B shape, one compiled
   function; median ms over 20 evaluations.
2. the LM step and the full-duplex step of a random 7B model, `--rounds` rounds alternating
   the two implementations (order flipped every round), 120 LM-only and 100 full steps each.

    python -m benchmarks.matvec_ab --bits 8 4 --rounds 5
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import mlx.core as mx
import numpy as np

from model import SessionSettings, cuda, random_model
from model.config import config_7b
from model.lm.layers import gated_matvec, matvec
from model.quantized import Quantized
from personaplex_tui import benchmark as bench
from personaplex_tui.kernel_cache import persistent_kernel_cache
from personaplex_tui.soak_meter import random_voice

MODES = ("ours", "mlx")


def use(mode: str) -> None:
    """Route quantized mat-vecs through our kernel ("ours") or MLX's ops ("mlx")."""
    if mode == "mlx":
        os.environ[cuda.MATVEC.env_var] = "mlx"
    else:
        os.environ.pop(cuda.MATVEC.env_var, None)


def median_ms(fn, runs: int = 20) -> float:
    mx.eval(fn())
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def random_quantized(rows: int, inputs: int, bits: int, seed: int) -> Quantized:
    w = mx.random.normal((rows, inputs), key=mx.random.key(seed)) * inputs**-0.5
    q = Quantized(*mx.quantize(w.astype(mx.bfloat16), 64, bits), group_size=64, bits=bits)
    mx.eval(q.weight, q.scales, q.biases)
    return q


def temporal_pass(bits: int) -> None:
    cfg = config_7b().lm.temporal
    d, hidden = cfg.d_model, cfg.dim_feedforward
    layers = [
        (
            random_quantized(3 * d, d, bits, 4 * i),
            random_quantized(d, d, bits, 4 * i + 1),
            random_quantized(2 * hidden, d, bits, 4 * i + 2),
            random_quantized(d, hidden, bits, 4 * i + 3),
        )
        for i in range(cfg.num_layers)
    ]
    halves = [
        tuple(
            Quantized(g.weight[rows], g.scales[rows], g.biases[rows], g.group_size, g.bits)
            for rows in (slice(0, hidden), slice(hidden, None))
        )
        for _, _, g, _ in layers
    ]
    norm = mx.ones((d,), dtype=mx.bfloat16)

    def run(x: mx.array) -> mx.array:
        for (qkv, out, gate, down), split in zip(layers, halves, strict=True):
            a = matvec(mx.fast.rms_norm(x, norm, 1e-8), qkv)[..., :d]
            x = matvec(a, out, x)
            h = gated_matvec(mx.fast.rms_norm(x, norm, 1e-8), gate, split)
            x = matvec(h, down, x)
        return x

    x = mx.random.normal((1, 1, d)).astype(mx.bfloat16)
    gb = sum(a.nbytes for layer in layers for q in layer for a in (q.weight, q.scales, q.biases))
    for mode in MODES:
        use(mode)
        ms = median_ms(functools.partial(mx.compile(run), x))
        print(f"{bits}-bit temporal pass, {mode:4s}: {ms:.3f} ms ({gb / 1e9 / ms:.2f} TB/s)")


def steps(bits: int, rounds: int) -> None:
    model = random_model(config_7b(), bits=bits, seed=0)
    mx.eval(model.lm.parameters())
    voice = random_voice(model, 50, 0)
    audio = bench._audio(140, 0)
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, list[float]]] = {m: {"lm": [], "full": []} for m in MODES}
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            use(mode)
            graphs = model.step_graphs()
            graphs._fns.clear()  # retrace with this mode
            graphs._run.clear()
            session = model.session(
                SessionSettings(voice=None, seed=0), voice=voice, system_tokens=list(range(10, 30))
            )
            session.warm_up()
            for pcm in audio[:20]:
                session.step(pcm)
            full = [session.step(pcm).timings.total_ms for pcm in audio[20:120]]
            lm = []
            for _ in range(120):
                t = time.perf_counter()
                session.step_codes(rng.integers(0, model.lm.config.card, 8))
                lm.append(1000 * (time.perf_counter() - t))
            results[mode]["lm"].append(statistics.median(lm))
            results[mode]["full"].append(statistics.median(full))
            print(
                f"{bits}-bit round {r} {mode:4s}: LM p50 {statistics.median(lm):.2f} ms, "
                f"full step p50 {statistics.median(full):.2f} ms",
                flush=True,
            )
    for mode in MODES:
        lm, full = results[mode]["lm"], results[mode]["full"]
        print(
            f"{bits}-bit {mode:4s}: LM p50 median of rounds {statistics.median(lm):.2f} ms "
            f"{[round(v, 2) for v in lm]}, full {statistics.median(full):.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4], choices=(4, 8))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pass-only", action="store_true", help="only the temporal pass")
    args = parser.parse_args()
    persistent_kernel_cache()
    use("ours")
    if not cuda.MATVEC.enabled():
        raise SystemExit("The fused mat-vec runs on NVIDIA GPUs only (MLX's CUDA backend).")
    for bits in args.bits:
        temporal_pass(bits)
        if not args.pass_only:
            steps(bits, args.rounds)


if __name__ == "__main__":
    main()
