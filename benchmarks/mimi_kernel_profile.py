"""Where the Mimi transformer kernel's time goes, phase by phase, and variants of it timed side by side.

The kernel is built with its profiling marks (`PPX_PROFILE` in src/common.cuh, as
`benchmarks/kernel_profile.py` does for the temporal kernel): every block notes the time at its
start, at its arrival at and departure from every grid barrier, and after each phase's prologue
(the LayerNorm, or loading the phase's input into shared memory). Printed per phase, summed over
the layers (us): span (last departure before to last arrival), the barrier (last arrival to last
departure), the prologue and the work per block (mean, max). Then each variant's GPU time per
call (calls chained in one evaluation, rounds alternated), on the same random full-size Mimi.
Variants that skip a barrier compute wrong numbers: they are timed, never used.

    python -m benchmarks.mimi_kernel_profile [--calls 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from model.config import MimiConfig
from model.cuda import mimi_transformer
from model.cuda.gpu_facts import sm_count
from model.mimi import MimiCodec

PHASES = ("qkv", "attention", "out_proj", "linear1", "linear2")


class Variant(mimi_transformer.MimiTransformerKernel):
    """The kernel with its source changed for one experiment (and its marks, if `marks`)."""

    def __init__(self, name: str, marks: bool = False, body: tuple[str, str] | None = None,
                 threads: int | None = None, source: Path | None = None) -> None:  # fmt: skip
        super().__init__()
        if source:  # another version's src/mimi.cu
            self.body = source.read_text()
        self.name = f"ppx_mimi_{name.replace('-', '_')}"
        self.marks = marks
        self.slots = 0
        self.base_words = 0
        if threads:
            self.threads = threads
        if body:
            assert body[0] in self.body, body[0]
            self.body = self.body.replace(*body)

    def bind(self, tr: Any) -> Variant:
        """Size the profile area for the transformer `tr` (before the first run)."""
        self.base_words = super().work_size(tr)
        self.slots = 4 + 3 * (5 * len(tr.layers) - 1)  # the last phase's mark: 3 + 3 * barriers
        if self.marks:  # before common.cuh, which tests them
            defines = (
                f"#define PPX_PROFILE {self.base_words}\n#define PPX_PROFILE_SLOTS {self.slots}\n"
            )
            self.header = defines + self.header
        return self

    def work_size(self, tr: Any) -> int:
        extra = 2 * self.slots * (sm_count() or 1) if self.marks else 0
        return self.base_words + extra


def phases(work: np.ndarray, kernel: Variant, blocks: int, layers: int) -> dict[str, Any]:
    """Per phase, summed over the layers (us): span, barrier, prologue, work per block."""
    words = work.view(np.uint32)[kernel.base_words :]
    ns = words[kernel.slots * blocks : 2 * kernel.slots * blocks].reshape(kernel.slots, blocks)
    ns = (ns.astype(np.int64) - int(ns[0].min())) % (1 << 32)
    nbar = 5 * layers - 1
    rows = {
        p: dict(span=0.0, barrier=0.0, prologue=0.0, work_mean=0.0, work_max=0.0) for p in PHASES
    }
    for b in range(nbar + 1):  # phase b ends at barrier b (the last at the kernel's end mark)
        row = rows[PHASES[b % 5]]
        prev = 0 if b == 0 else 2 + 3 * (b - 1)
        arr, mid = 1 + 3 * b, 3 + 3 * b
        row["span"] += (ns[arr].max() - ns[prev].max()) / 1e3
        if b < nbar:
            row["barrier"] += (ns[2 + 3 * b].max() - ns[arr].max()) / 1e3
        if b % 5 != 1:  # the attention has no prologue mark
            row["prologue"] += (ns[mid] - ns[prev]).mean() / 1e3
        work = ns[arr] - ns[prev]
        row["work_mean"] += work.mean() / 1e3
        row["work_max"] += work.max() / 1e3
    total = (ns[1 + 3 * nbar].max() - ns[0].min()) / 1e3
    return {"total_us": round(float(total), 1), "phases": {p: {k: round(float(v), 1) for k, v in r.items()}
                                                     for p, r in rows.items()}}  # fmt: skip


def variants(baseline: Path | None = None) -> dict[str, Variant]:
    before = {}
    if baseline:  # another version's src/mimi.cu, at its threads and at ours
        before = {
            "before-64": Variant("before_64", threads=64, source=baseline),
            "before": Variant("before", source=baseline),
        }
    return before | {
        "base": Variant("base"),
        "marks": Variant("marks", marks=True),
        "no-barrier": Variant("no-barrier", body=("ppx_grid_sync(sync, target);", "__syncthreads();")),
        "256-threads": Variant("t256", threads=256),
        "64-threads": Variant("t64", threads=64),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--baseline", type=Path, default=None, help="another version's mimi.cu")
    args = parser.parse_args()
    codec = MimiCodec.random(MimiConfig(), seed=0)
    tr = codec.model.encoder_transformer
    stack = mimi_transformer.KERNEL.stack(tr)
    d, ts = 512, tr._per_frame
    x = mx.random.normal((1, ts, d))
    chosen = variants(args.baseline)
    if args.variants:
        chosen = {k: v for k, v in chosen.items() if k in args.variants}
    for v in chosen.values():
        v.bind(tr)
    rings = [mx.zeros((1, 8, tr._context, 128)) for _ in tr.layers]
    offset = mx.array(1000, dtype=mx.int32)
    for name in ("marks",):
        if name not in chosen:
            continue
        k = chosen[name]
        for position in (10, 1000):  # the last of 10 calls in one evaluation (warm, as chained)
            works = [k.run(tr, stack, x, mx.array(position, dtype=mx.int32), rings)[1]
                     for _ in range(10)]  # fmt: skip
            mx.eval(works)
            work = works[-1]
            got = phases(np.array(work), k, sm_count() or 1, len(tr.layers))
            print(f"{name}, position {position}: total {got['total_us']} us")
            for phase, row in got["phases"].items():
                print(f"  {phase:10s} " + " ".join(f"{k_} {v:.1f}" for k_, v in row.items()))
    times: dict[str, list[float]] = {name: [] for name in chosen}
    for _ in range(args.rounds):
        for name, k in chosen.items():
            outs = [k.run(tr, stack, x, offset, rings)[0] for _ in range(3)]
            mx.eval(outs)
            t0 = time.perf_counter()
            outs = [k.run(tr, stack, x, offset, rings)[0] for _ in range(args.calls)]
            mx.eval(outs)
            times[name].append((time.perf_counter() - t0) * 1e3 / args.calls)
    for name, ts_ in times.items():
        print(f"{name:14s} ms per call: " + " ".join(f"{t:.3f}" for t in ts_))


if __name__ == "__main__":
    main()
