"""Where the depformer kernel's time goes, phase by phase, on a CUDA GPU.

The kernel is built with its profiling marks (`PPX_PROFILE` in src/common.cuh): every block notes
the SM's clock and the GPU's global timer when it starts, when it arrives at and leaves each grid
barrier, and when it ends. A column of S steps has S * (4 * NL + 1) barriers; per step and layer
the phases `qkv` (the norm and the step's packed q/k/v; in a step's first layer also the step's
input, after the previous step's draw; in the column's first, the text token's draw when the
kernel draws it), `attn+out` (every block's attention over the steps so far, then out_proj),
`linear_in` (norm, gate and value), `linear_out`; then the step's `logits`; the last step's draw
comes after the last barrier (`last draw`). Per kind of phase, summed over the column
(microseconds): the span from the last block leaving the barrier before to the last block
arriving at its own, and the barrier from that last arrival to the last departure. The first
phase is also shown alone. Each call's time is given with and without the marks (their own cost).

    python3 benchmarks/depformer_profile.py --bits 4 --steps 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from model import random_model  # noqa: E402
from model.config import config_7b  # noqa: E402
from model.cuda.depformer import DepformerKernel, TextDraw  # noqa: E402
from model.cuda.gpu_facts import sm_count  # noqa: E402
from model.sampling import SamplingParams, gumbel_noise, split_key  # noqa: E402

KINDS = ("qkv", "attn+out", "linear_in", "linear_out")


class Marked(DepformerKernel):
    """The depformer kernel with its profiling marks, after the work buffer's layout."""

    name = "ppx_depformer_marks"

    def __init__(self, lm: Any, weights: Any) -> None:
        super().__init__()
        cfg = lm.config
        self.per_step = 4 * cfg.depformer.num_layers + 1
        self.slots = 2 + 3 * cfg.dep_q * self.per_step
        self.base = self.work_size(lm, weights)
        self.header = (
            f"#define PPX_PROFILE {self.base}\n#define PPX_PROFILE_SLOTS {self.slots}\n"
            + self.header
        )

    def extra_words(self, lm: Any) -> int:
        return 2 * self.slots * (sm_count() or 1)


def phase_name(b: int, per_step: int) -> str:
    """The kind of the phase that barrier b of a column ends."""
    j = b % per_step
    return "logits" if j == per_step - 1 else KINDS[j % 4]


def phases(work: np.ndarray, kernel: Marked, n_steps: int, blocks: int) -> dict[str, Any]:
    """Per kind of phase, summed over the column (us): span and barrier; and the first phase."""
    words = work.view(np.uint32)[kernel.base :]
    slots = kernel.slots
    ns = words[slots * blocks : 2 * slots * blocks].reshape(slots, blocks).astype(np.int64)
    ns = (ns - int(ns[0].min())) % (1 << 32)  # the global timer's low word, from the first start
    nbar = n_steps * kernel.per_step
    rows = {k: {"span": 0.0, "barrier": 0.0, "count": 0} for k in (*KINDS, "logits")}
    first = 0.0
    for b in range(nbar):
        arr, dep = 1 + 3 * b, 2 + 3 * b
        before = int(ns[0].max()) if b == 0 else int(ns[2 + 3 * (b - 1)].max())
        span = (int(ns[arr].max()) - before) / 1e3
        row = rows[phase_name(b, kernel.per_step)]
        row["span"] += span
        row["barrier"] += (int(ns[dep].max()) - int(ns[arr].max())) / 1e3
        row["count"] += 1
        if b == 0:
            first = span
    end = 1 + 3 * nbar
    last_draw = (int(ns[end].max()) - int(ns[2 + 3 * (nbar - 1)].max())) / 1e3
    total = int(ns[end].max()) / 1e3
    return {
        "total_us": round(total, 1),
        "phases": {k: {m: round(v, 1) for m, v in r.items()} for k, r in rows.items()},
        "first_phase_us": round(first, 1),
        "last_draw_us": round(last_draw, 1),
    }


def profile(bits: int, n_steps: int, iters: int, blocks: int) -> None:
    """Print the timings and the profile of one random 7B depformer at `bits`."""
    lm = random_model(config_7b(), bits=bits, seed=0).lm
    cfg = lm.config
    plain = DepformerKernel()
    weights = plain.stack(lm)
    marked = Marked(lm, weights)
    keys = split_key(mx.random.key(1), 4)
    h = mx.random.normal((1, 1, cfg.temporal.d_model), key=keys[0]).astype(lm.dtype)
    dep_in = lm.depformer_inputs_flat(h, n_steps)
    params = SamplingParams(0.8, 250)
    noise = gumbel_noise(keys[1], (n_steps, cfg.card))
    text_logits = mx.random.normal((cfg.text_card,), key=keys[2]).astype(lm.dtype)
    text = TextDraw(text_logits, SamplingParams(0.7, 25), gumbel_noise(keys[3], (cfg.text_card,)))
    given = mx.array(3, dtype=mx.int32)

    def text_given(k: DepformerKernel) -> tuple[mx.array, ...]:
        return k.run(lm, weights, dep_in, given, n_steps, params, noise)

    def text_drawn(k: DepformerKernel) -> tuple[mx.array, ...]:
        return k.run_drawing_text(lm, weights, dep_in, text, n_steps, params, noise)

    for case, call in (("text token given", text_given), ("text token drawn", text_drawn)):
        times = {}
        for label, kernel in (("plain", plain), ("marked", marked)):
            mx.eval(call(kernel))
            samples = []
            for _ in range(iters):
                t0 = time.perf_counter()
                mx.eval(call(kernel))
                samples.append(time.perf_counter() - t0)
            times[label] = round(1e3 * statistics.median(samples), 3)
        profiles = []
        for _ in range(5):
            work = call(marked)[-1]
            mx.eval(work)
            profiles.append(phases(np.array(work), marked, n_steps, blocks))
        print(f"{bits}-bit, {n_steps} steps, {case}: ms per call {times}", flush=True)
        print(f"  kernel {[p['total_us'] for p in profiles]} us (marks, five calls)")
        for kind in (*KINDS, "logits"):
            spans = [p["phases"][kind]["span"] for p in profiles]
            bars = [p["phases"][kind]["barrier"] for p in profiles]
            n = profiles[0]["phases"][kind]["count"]
            print(
                f"  {kind:10s} x{n:3d}: span {statistics.median(spans):7.1f} us, "
                f"barrier {statistics.median(bars):6.1f} us"
            )
        first = statistics.median(p["first_phase_us"] for p in profiles)
        last = statistics.median(p["last_draw_us"] for p in profiles)
        print(f"  first phase {first:.1f} us, last draw {last:.1f} us", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()
    for bits in args.bits:
        profile(bits, args.steps, args.iters, sm_count() or 1)
        mx.clear_cache()


if __name__ == "__main__":
    main()
