"""Seconds until a fresh conversation with the user's transcript on can talk (deferred compiling).

The bench's fresh-machine "ready" figure is for the LM and Mimi alone; the app's default also
runs the Kyutai STT. This script does what the bench's load and deferred warm-up do (JIT helpers,
kernels compiled ahead, the 7B of random weights) and adds a random STT listener of the real
shape, quantized as the app quantizes it on CUDA, then times 40 full steps with the transcript
on while the helpers are still compiling. Run it with new, empty cache folders to measure a fresh
machine (docs/cuda-kernels.md §Talking before the kernels are compiled):

    MLX_PTX_CACHE_DIR=/tmp/a CUDA_CACHE_PATH=/tmp/b PPX_CUDA_KERNEL_CACHE=/tmp/c \\
        python -m benchmarks.ready_with_transcript [--small]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

T0 = time.perf_counter()

from personaplex_tui.benchmark import (  # noqa: E402
    BenchOptions,
    Stats,
    _audio,
    _compile_ahead,
    bench_session,
    build_model,
)
from personaplex_tui.jit_workers import start_jit_workers  # noqa: E402
from personaplex_tui.user_transcript import stt_bits  # noqa: E402


def since_start() -> float:
    return round(time.perf_counter() - T0, 2)


def main() -> None:
    from model.backend import on_cuda
    from model.stt.random_listener import random_listener, tiny_stt_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the tiny test models (any machine)")
    args = parser.parse_args()
    opts = BenchOptions(
        random_weights=not args.small, small=args.small, bits=4, user_transcript=True
    )
    helpers = start_jit_workers(asdict(opts))
    _compile_ahead(opts)
    model, voice, tokens = build_model(opts)
    config = tiny_stt_config() if args.small else None
    bits = None if args.small else stt_bits(None, on_cuda())
    model.listener = random_listener(model, config, bits=bits, seed=0)
    print(f"loaded, with the STT: {since_start()} s (JIT helpers: {helpers is not None})")
    session = bench_session(model, voice, tokens, opts, transcribe_user=True)
    session.warm_up(defer=True)
    print(f"ready: {since_start()} s (steps run uncompiled: {session.steps_eagerly})")
    times, heard = [], []
    for pcm in _audio(40, 0):
        t = time.perf_counter()
        frame = session.step(pcm)
        times.append(1000 * (time.perf_counter() - t))
        heard.append(frame.user_text_id)
    print(f"40 full steps with the transcript by {since_start()} s: first {times[0]:.0f} ms, then")
    print(f"  {Stats.of(times[1:])}")
    print(f"a transcript token every step: {all(h is not None for h in heard)}")
    if helpers is not None:
        print(f"JIT helpers: {helpers.stop()}")


if __name__ == "__main__":
    main()
