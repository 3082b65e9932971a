"""Where a step's wall time goes on the host: building the graph, encoding its kernels, waiting.

`python -m benchmarks.step_split [--bits 4] [--steps 300] [--small] [--without-seanet]` builds the
benchmark's random model, warms a session up and times full-duplex steps, then LM-only steps.
Each step's evaluation is split into `mx.async_eval` (MLX encodes and launches every kernel;
on a GPU it returns once they are queued) and the `mx.eval` after it (waiting for the GPU), so
per step (medians, ms):

- build: from the step's start to its evaluation (Python, the compiled graphs' replay; the
  session launches everything at its evaluation here, `launch_early = False`, unlike the app);
- encode: the kernels' encoding and launches on the host;
- wait: the GPU's work left once everything is launched (near zero: bound by the host);
- post: reading the outputs (the frame, the codes, the transcript piece).

`--without-seanet` replaces every SEANet convolution by zeros of its output's shape (outputs are
wrong; timing only): what the step would cost if Mimi's SEANets cost nothing, an upper bound on
what any SEANet speed-up can give. Measurement only: it changes nothing in the model.
docs/cuda-kernels.md §Mimi's SEANet convolutions has figures from an H200.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.conversation.session import Session  # noqa: E402
from personaplex_tui.benchmark import BenchOptions, warmed_session  # noqa: E402
from personaplex_tui.cuda_launches import launch_directly  # noqa: E402
from personaplex_tui.kernel_cache import (  # noqa: E402
    persistent_kernel_cache,
    precompiled_kernel_cache,
)


def _without_seanet() -> None:
    """Every convolution but the replicate-padded and depthwise ones (Mimi's resampling) returns
    zeros of its output's shape and keeps its state."""
    from model.mimi import conv

    conv1d, transposed = conv.StreamingConv1d.__call__, conv.StreamingConvTranspose1d.__call__

    def zeros1d(self, x, state, pre_elu=False):
        if self._replicate:
            return conv1d(self, x, state, pre_elu)
        b, t, _ = x.shape
        return mx.zeros((b, t // self._stride, self.weight.shape[1]), x.dtype), state

    def zeros_t(self, x, state, pre_elu=False):
        if self._depthwise:
            return transposed(self, x, state, pre_elu)
        b, t, _ = x.shape
        return mx.zeros((b, t * self._stride, self._out), x.dtype), state

    conv.StreamingConv1d.__call__ = zeros1d
    conv.StreamingConvTranspose1d.__call__ = zeros_t


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--small", action="store_true", help="the tests' small model")
    parser.add_argument("--without-seanet", action="store_true")
    args = parser.parse_args(argv)
    persistent_kernel_cache()
    precompiled_kernel_cache()
    launch_directly()  # before MLX launches its first kernel, as the app
    if args.without_seanet:
        _without_seanet()
    marks: dict[str, float] = {}

    def split_eval(self, *outputs):  # MLX's wait, in two calls (not the polled one)
        arrays = (outputs, self._key, [c.state for c in self._caches])
        arrays += (self._enc_state, self._dec_state)
        marks["t0"] = time.perf_counter()
        mx.async_eval(arrays)
        marks["t1"] = time.perf_counter()
        mx.eval(arrays)
        marks["t2"] = time.perf_counter()

    Session._eval = split_eval  # measurement only: the same arrays, evaluated in two calls
    opts = BenchOptions(
        random_weights=True, bits=args.bits, user_transcript=False, small=args.small
    )
    model, session, audio = warmed_session(opts, args.steps, 60)
    # every launch in the one evaluation, so that "build" is Python only (the app launches the
    # encode and the LM step as each is built: `Session.launch_early`)
    session.launch_early = False
    rng = np.random.default_rng(0)
    card = model.lm.config.card
    steps = {
        "full-duplex": lambda i: session.step(audio[i]),
        "LM only": lambda i: session.step_codes(rng.integers(0, card, 8)),
    }
    label = "without SEANets" if args.without_seanet else "the shipped graphs"
    for name, step in steps.items():
        rows = []
        for i in range(args.steps):
            start = time.perf_counter()
            step(i)
            end = time.perf_counter()
            t0, t1, t2 = marks["t0"], marks["t1"], marks["t2"]
            rows.append((t0 - start, t1 - t0, t2 - t1, end - t2, end - start))
        build, encode, wait, post, total = (
            1000 * statistics.median(c) for c in zip(*rows, strict=True)
        )
        print(
            f"{label}, {name} step (ms, medians of {args.steps}): build {build:.3f}, "
            f"encode {encode:.3f}, wait {wait:.3f}, post {post:.3f}, total {total:.3f}"
        )


if __name__ == "__main__":
    main()
