"""Where the temporal kernel's time goes, phase by phase, on a CUDA GPU.

The kernel is built with its profiling marks (`PPX_PROFILE` in src/common.cuh): every block notes
the SM's clock and the GPU's global timer when it starts, when it arrives at and leaves each grid
barrier, and once inside the phases that normalise x first (after that prologue). Per phase
(summed over the layers, microseconds): the span from the last block leaving the barrier before
to the last block arriving at its own (`span`), the barrier itself from the last arrival to the
last departure (`barrier`), and per block the work before the mat-vec (`prologue`) and the
whole phase's work (mean and max over the blocks, from the SM clock).

Variants built from the same source, timed in alternating rounds (median ms per call):
- `base`: the kernel as it runs;
- `marks`: with the marks (their own cost);
- `keys-l1`: the attention's keys read through L1 (`ppx_key_scores`' loads, and the row per
  lane of head sizes it does not take);
- `no-barrier`: grid barriers replaced by block barriers (wrong numbers; the barriers' whole
  cost, skew included);
- `fma-only`: one FMA per code on the raw packed words instead of the dequantization (wrong
  numbers; the same loads, the same x in shared memory);
- `loads-only`: the codes' words folded into one FMA per chunk (wrong numbers; what is left when
  the arithmetic is gone);
- `direct`: the mat-vecs' weights read straight into registers, no weight stream;
- `sScK`, `sScK+`: the weight stream with S stages of K chunks per lane and row, `+` with each
  phase's first items asked for before its barrier (`base` is the default plan).

    python -m benchmarks.kernel_profile --bits 4 8 --positions 100 3500
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from model import random_model
from model.config import config_7b
from model.cuda import temporal
from model.cuda.gpu_facts import sm_count

STREAM_VARIANTS = [(2, 4, 0), (2, 4, 1), (3, 2, 1), (4, 2, 1), (3, 3, 1), (5, 2, 1), (3, 2, 0)]
PHASES = ("qkv", "attention", "combine", "out_proj", "linear_in", "linear_out")
WITH_PROLOGUE = (0, 3, 4, 5)  # phases that normalise or load x before their mat-vec

DOT = """    const float d0 = ppx_chunk_dot<BITS, DN>(q0, xf);
    const float d1 = ppx_chunk_dot<BITS, DN>(q1, xf);"""
FMA_ONLY = """    float d0 = 0.f, d1 = 0.f;
#pragma unroll
    for (int j = 0; j < EPC; j++) {
      d0 = fmaf(__uint_as_float((&q0.x)[j * 4 / EPC]), xf[j], d0);
      d1 = fmaf(__uint_as_float((&q1.x)[j * 4 / EPC]), xf[j], d1);
    }"""
LOADS_ONLY = """    const float d0 = __uint_as_float(q0.x ^ q0.y ^ q0.z ^ q0.w) * xf[0];
    const float d1 = __uint_as_float(q1.x ^ q1.y ^ q1.z ^ q1.w) * xf[0];"""


class Variant(temporal.TemporalKernel):
    """The temporal kernel with its source changed for one experiment."""

    def __init__(self, name: str, marks: bool, header: tuple[str, str] | None = None,
                 body: tuple[str, str] | None = None, sources: Path | None = None,
                 body2: tuple[str, str] | None = None,
                 stream: tuple[int, int, int] | None = None, defines: str = "") -> None:  # fmt: skip
        super().__init__()
        self.stream_wanted = stream
        if sources:  # another version's src/ files (common.cuh, temporal.cuh, temporal.cu)
            self.header = (sources / "common.cuh").read_text() + (
                sources / "temporal.cuh"
            ).read_text()
            self.body = (sources / "temporal.cu").read_text()
        self.name = f"ppx_temporal_{name.replace('-', '_')}"
        self.marks = marks
        self.slots = 0
        self.base_words = 0
        if header:  # in ppx_qdot2 and, indented further, in the weight stream
            assert header[0] in self.header, header[0]
            self.header = self.header.replace(*header)
            deeper = [t.replace("\n", "\n    ").replace("    ", "        ", 1) for t in header]
            self.header = self.header.replace(*deeper)
        for change in (body, body2):
            if change:
                assert change[0] in self.body, change[0]
                self.body = self.body.replace(*change)
        self.header = defines + self.header

    def bind(self, lm: Any) -> Variant:
        """Size the profile area for `lm` (before the first run)."""
        self.base_words = super().work_size(lm)
        self.slots = 2 + 3 * 6 * lm.transformer.config.num_layers
        if self.marks:  # before common.cuh, which tests them
            defines = (
                f"#define PPX_PROFILE {self.base_words}\n#define PPX_PROFILE_SLOTS {self.slots}\n"
            )
            self.header = defines + self.header
        return self

    def stream(self, lm: Any, weights: Any) -> tuple[int, int, int, int]:
        if self.stream_wanted is None:
            return super().stream(lm, weights)
        cfg = lm.transformer.config
        return temporal.stream_plan(cfg.d_model, cfg.dim_feedforward, cfg.d_model // cfg.num_heads,
                                    lm.dtype, weights.bits, weights.group_size,
                                    self.stream_wanted)  # fmt: skip

    def work_size(self, lm: Any) -> int:
        extra = 2 * self.slots * (sm_count() or 1) if self.marks else 0
        return self.base_words + extra


def variants(baselines: list[Path] = ()) -> dict[str, Variant]:
    """The experiments; each of `baselines` (folders of another version's src/ files) is a
    variant named after its folder."""
    before = {p.name: Variant(p.name, False, sources=p) for p in baselines}
    return before | {
        "base": Variant("base", False),
        "marks": Variant("marks", True),
        "keys-l1": Variant("keys-l1", False, header=("__ldcg(kp + c)", "__ldca(kp + c)"),
                           body=("const uint4 u = __ldcg(kp + v);", "const uint4 u = __ldca(kp + v);")),
        "no-barrier": Variant("no-barrier", False, defines="#define PPX_NO_GRID_BARRIER\n"),
        "fma-only": Variant("fma-only", True, header=(DOT, FMA_ONLY)),
        "loads-only": Variant("loads-only", True, header=(DOT, LOADS_ONLY)),
        "direct": Variant("direct", False, stream=(0, 0, 0)),
    } | {
        f"s{n}c{c}{'+' if a else ''}": Variant(f"s{n}c{c}{'_ahead' if a else ''}", False,
                                               stream=(n, c, a))
        for n, c, a in STREAM_VARIANTS
    }  # fmt: skip


def phases(work: np.ndarray, kernel: Variant, blocks: int, layers: int) -> dict[str, Any]:
    """Per phase, summed over the layers (us): span, barrier, prologue and work per block."""
    words = work.view(np.uint32)[kernel.base_words :]
    clk = words[: kernel.slots * blocks].reshape(kernel.slots, blocks).astype(np.int64)
    ns = words[kernel.slots * blocks : 2 * kernel.slots * blocks].reshape(kernel.slots, blocks)
    ns = (ns.astype(np.int64) - int(ns[0].min())) % (1 << 32)
    wrap = 1 << 32
    nbar = 6 * layers
    total_ns = int(ns[1 + 3 * nbar].max() - ns[0].min())
    total_clk = float(np.median((clk[1 + 3 * nbar] - clk[0]) % wrap))
    ghz = total_clk / max(total_ns, 1)
    out: dict[str, Any] = {"total_us": total_ns / 1e3, "sm_ghz": round(ghz, 3)}
    rows = {p: {"span": 0.0, "barrier": 0.0, "prologue": 0.0, "work_mean": 0.0,
                "work_max": 0.0, "wait_min": 0.0} for p in PHASES}  # fmt: skip
    for b in range(nbar):
        row = rows[PHASES[b % 6]]
        prev_d = 0 if b == 0 else 2 + 3 * (b - 1)
        arr, dep, mid = 1 + 3 * b, 2 + 3 * b, 3 + 3 * b
        row["span"] += (ns[arr].max() - ns[prev_d].max()) / 1e3
        row["barrier"] += (ns[dep].max() - ns[arr].max()) / 1e3
        work_clk = (clk[arr] - clk[prev_d]) % wrap
        row["work_mean"] += work_clk.mean() / ghz / 1e3
        row["work_max"] += work_clk.max() / ghz / 1e3
        row["wait_min"] += ((clk[dep] - clk[arr]) % wrap).min() / ghz / 1e3
        if b % 6 in WITH_PROLOGUE:
            row["prologue"] += ((clk[mid] - clk[prev_d]) % wrap).mean() / ghz / 1e3
    out["phases"] = {p: {k: round(v, 1) for k, v in r.items()} for p, r in rows.items()}
    return out


def agreement(lm: Any, stack: Any, ours: Variant, other: Variant, x: mx.array, pos: mx.array,
              position: int) -> None:  # fmt: skip
    """Print how far `other`'s output and new keys/values are from `ours`' on the same rings."""
    cfg = lm.transformer.config
    results = []
    for kernel in (ours, other):
        caches = lm.make_cache()
        temporal._fill_rings(caches, 1000)
        out, _ = kernel.run(lm, stack, x, pos, [c.state for c in caches])
        slot = position % cfg.context
        rows = [c.state[i][:, :, slot : slot + 1].reshape(1, -1) for c in caches for i in (0, 1)]
        mx.eval(out, rows)
        results.append((out, rows))
    (out_a, rows_a), (out_b, rows_b) = results
    pairs = list(zip([out_a, *rows_a], [out_b, *rows_b], strict=True))
    same = all(mx.array_equal(a, b).item() for a, b in pairs)
    worst = 0.0
    for a, b in pairs:
        a32, b32 = a.astype(mx.float32), b.astype(mx.float32)
        err = (mx.linalg.norm(b32 - a32) / mx.maximum(mx.linalg.norm(a32), 1e-30)).item()
        worst = max(worst, err)
    print(f"  {other.name} against {ours.name}: bit-identical {same}, worst relative row "
          f"error {worst:.3g}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4])
    parser.add_argument("--positions", type=int, nargs="+", default=[100, 3500])
    parser.add_argument("--variants", nargs="+", default=list(variants()))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--baseline", type=Path, nargs="*", default=[],
                        help="folders of other versions' src/ files, compared and timed")  # fmt: skip
    args = parser.parse_args()
    for bits in args.bits:
        lm = random_model(config_7b(), bits=bits, seed=0).lm
        stack = lm.temporal_stack()
        assert stack is not None, "no temporal stack (not on CUDA, or the kernel is off)"
        cfg = lm.transformer.config
        print(f"{bits}-bit: the temporal kernel's load-time check: "
              f"{temporal.KERNEL.disabled_reason or 'passed'}", flush=True)  # fmt: skip
        every = variants(args.baseline)
        names = [*args.variants, *(p.name for p in args.baseline)]
        kernels = {k: v.bind(lm) for k, v in every.items() if k in names}
        for position in args.positions:
            caches = lm.make_cache()
            states = [c.state for c in caches]
            x = mx.random.normal((1, 1, cfg.d_model), key=mx.random.key(7)).astype(lm.dtype)
            pos = mx.array(position, dtype=mx.int32)
            for other in args.baseline:
                agreement(lm, stack, kernels["base"], kernels[other.name], x, pos, position)
            times: dict[str, list[float]] = {k: [] for k in kernels}
            works: dict[str, np.ndarray] = {}
            for r in range(args.rounds):
                order = list(kernels) if r % 2 == 0 else list(kernels)[::-1]
                for name in order:
                    kernel = kernels[name]
                    samples = []
                    for _ in range(args.iters):
                        t0 = time.perf_counter()
                        out, work = kernel.run(lm, stack, x, pos, states)
                        mx.eval(out, work)
                        samples.append(time.perf_counter() - t0)
                    times[name].append(round(1000 * statistics.median(samples), 3))
                    if kernel.marks:
                        works[name] = np.array(work)
            print(f"{bits}-bit, position {position}: ms per call {times}", flush=True)
            for name, work in works.items():
                prof = phases(work, kernels[name], sm_count() or 1, cfg.num_layers)
                print(f"  {name}: total {prof['total_us']:.1f} us, SM clock "
                      f"{prof['sm_ghz']} GHz", flush=True)  # fmt: skip
                print("    phase        span  barrier  prologue  work_mean  work_max  wait_min")
                for p, r in prof["phases"].items():
                    print(f"    {p:<11}" + "".join(f"{r[k]:>9.1f}" for k in
                          ("span", "barrier", "prologue", "work_mean", "work_max", "wait_min")))  # fmt: skip
        del lm, stack
        mx.clear_cache()


if __name__ == "__main__":
    main()
