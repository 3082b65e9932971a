"""Mimi's streaming transformer (all layers, one codec frame's steps) as one persistent CUDA kernel.

Mimi's encoder and decoder each run an 8-layer transformer of width 512 on the codec frame's two
25 Hz steps. As MLX ops a call is about ten small kernels per layer (two LayerNorms, four
matmuls, RoPE, the cache shift, attention), launch-bound: the weights are 100 MB of float32, a
few tens of microseconds at HBM rates. This kernel keeps one block per SM resident (see
`model/cuda/persistent.py`) and runs, per layer:

1. every block LayerNorms x (the frame's TS rows); the grid computes q/k/v two rows per warp (a
   RoPE pair) for every step, rotates q and k and writes k and v into each step's ring slot --
   barrier;
2. one block per (head, step, run of ring slots) scores the slots the step may see, a thread
   per slot, and sums their values (flash-decoding's partials) -- barrier;
3. every block combines the partials; the grid computes `x + out_proj(attention)` -- barrier;
4. every block LayerNorms x'; the grid computes `gelu(linear1)` -- barrier;
5. the grid computes `x' + linear2(hidden)` -- barrier (none after the last layer).

Everything is float32, as MLX's ops run Mimi; the layer scales are folded into `out_proj` and
`linear2` as `model/mimi/transformer.py` folds them. The kernel's cache is a ring: position p in
slot p % context, each row [k | v] (the MLX path keeps the same rows in time order, shifted by
each step; a codec's state is one or the other for its whole stream, see
`MimiTransformer.step`). A step at positions p0..p0+TS-1 writes its rows, then the query at q sees
every slot whose position lies in 0..q: what moshi's ring attends to. The ring is written in
place, as the temporal kernel's (`model/cuda/temporal.py`). `verify` compares the kernel with
MLX's ops at load; `PPX_MIMI=mlx` turns it off (docs/cuda-kernels.md §Mimi's transformer).
Measured on an H200: 0.13-0.15 ms of GPU time per call against 1.4 ms for MLX's ops
(`python -m benchmarks.mimi_kernel_profile`, `python benchmarks/mimi_parts.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model.cuda import persistent

THREADS = 128  # per block, one per SM (__launch_bounds__); H200, GPU time per call: 64 0.13-0.15,
# 128 0.16-0.17, 192 0.19-0.21, 256 0.28-0.31 ms (before the attention's runs spread over blocks)
NSPLIT = 16  # the attention's runs of ring slots per (head, step), at most (src/mimi.cu)
# Rows must agree with MLX's ops to this fraction of their norm. Both sides are float32, but
# MLX's CUDA matmuls run float32 through TF32 tensor cores (10-bit mantissas, MLX_ENABLE_TF32 is
# on by default), about 1e-3 of a row per matmul; the kernel multiplies in full float32.
MIMI_ROW_TOLERANCE = 1e-2


@dataclass(frozen=True)
class MimiStack:
    """Mimi transformer's weights as the kernel reads them, float32, rows [out, in]:
    wa: per layer in_proj (q, k, v head by head), out_proj times layer_scale_1, linear1;
    wb: per layer linear2 times layer_scale_2; norms: per layer norm1 w, b, norm2 w, b."""

    wa: mx.array
    wb: mx.array
    norms: mx.array
    eps: float


def _dims(transformer: Any) -> dict[str, int]:
    layer = transformer.layers[0]
    attn = layer.self_attn
    return {
        "D": layer.linear1.weight.shape[0],
        "HID": layer.linear1.weight.shape[1],
        "NH": attn._heads,
        "DH": attn._head_dim,
        "NL": len(transformer.layers),
        "CTX": transformer._context,
        "TS": transformer._per_frame,
    }


def _ring_row(ring: mx.array, slot: int) -> mx.array:
    """[heads, 2 * head_dim] of one slot (a slice: no gather to JIT-compile)."""
    return ring[:, :, slot : slot + 1].reshape(ring.shape[1], -1)


class MimiTransformerKernel(persistent.PersistentKernel):
    """Mimi's transformer step as one kernel (`run`) on a `MimiStack` (`stack`); `lm` in the
    base class's methods is a `model.mimi.transformer.MimiTransformer`."""

    env_var = "PPX_MIMI"
    what = "the Mimi transformer kernel"
    path = "model/cuda/mimi_transformer.py"
    name = "ppx_mimi"
    source_name = "mimi"
    outputs = ("out", "work")
    threads = THREADS

    def inputs(self, consts: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """x, the offset, the scalars, the stacked weights, then the rings r0.., whose pointers a
        macro gathers (read and written in place, never copied)."""
        layers = consts["NL"]
        pointers = " ".join(f"ring[{i}] = const_cast<float*>(r{i});" for i in range(layers))
        names = ["x", "off", "params", "wa", "wb", "norms"] + [f"r{i}" for i in range(layers)]
        return names, {"macros": {"PPX_RING_POINTERS": pointers}, "ensure_row_contiguous": False}

    def supports(self, lm: Any) -> str | None:
        """Why the kernel cannot run this transformer (None: it can)."""
        if not lm.layers:
            return "the transformer has no layers"
        d = _dims(lm)
        if (
            d["D"] % 128
            or d["HID"] % 128
            or d["DH"] % 32
            or d["HID"] % 2
            or d["NH"] * d["DH"] != d["D"]
            or d["TS"] > 32
            or 4
            * (d["TS"] * max(d["D"], d["HID"]) + d["CTX"] + 10 * d["DH"] + 16 * d["NH"] * d["TS"])
            > 44 * 1024
        ):
            return "its shapes are not ones it handles"
        if lm.layers[0].linear1.weight.dtype != mx.float32:
            return "its weights are not float32"
        return None

    def stack(self, lm: Any) -> MimiStack:
        """The kernel's arrays for the transformer `lm` (copies: the modules keep their own)."""
        rows, second, norms = [], [], []
        for layer in lm.layers:
            attn = layer.self_attn
            out = attn.out_proj.weight * layer.layer_scale_1.scale
            rows += [attn.in_proj.weight.T, out.T, layer.linear1.weight.T]
            second.append((layer.linear2.weight * layer.layer_scale_2.scale).T)
            n1, n2 = layer.norm1, layer.norm2
            norms += [n1.weight, n1.bias, n2.weight, n2.bias]
        f32 = mx.float32
        wa = mx.concatenate([mx.contiguous(r.astype(f32)) for r in rows], axis=0)
        wb = mx.concatenate([mx.contiguous(r.astype(f32)) for r in second], axis=0)
        stacked = MimiStack(wa, wb, mx.concatenate(norms).astype(f32), lm.layers[0].norm1.eps)
        mx.eval(stacked.wa, stacked.wb, stacked.norms)
        return stacked

    def stack_sources(self, lm: Any) -> tuple[mx.array, ...]:
        """The arrays `stack(lm)` reads (to tell when a stack is stale)."""
        out: list[mx.array] = []
        for layer in lm.layers:
            attn = layer.self_attn
            out += [attn.in_proj.weight, attn.out_proj.weight, layer.linear1.weight]
            out += [layer.linear2.weight, layer.layer_scale_1.scale, layer.layer_scale_2.scale]
            out += [layer.norm1.weight, layer.norm1.bias, layer.norm2.weight, layer.norm2.bias]
        return tuple(out)

    def work_size(self, lm: Any) -> int:
        d = _dims(lm)
        partials = d["NH"] * d["TS"] * NSPLIT * (d["DH"] + 2)  # the attention's, at most
        return persistent.SYNC_WORDS + d["TS"] * (d["D"] + d["HID"]) + partials

    def consts(self, lm: Any) -> list[tuple[str, Any]]:
        d = _dims(lm)
        return [
            *d.items(),
            ("NSPLIT", NSPLIT),
            ("NT", self.threads),
            ("SYNC", persistent.SYNC_WORDS),
        ]

    def run(
        self, lm: Any, weights: MimiStack, x: mx.array, offset: mx.array, rings: list[mx.array]
    ) -> tuple[mx.array, mx.array]:
        """The transformer's output for one frame's steps x [1, TS, D] (float32) from position
        `offset` (int32 scalar array); writes keys and values into `rings` ([1, heads, context,
        2 * head_dim] each, slot = position % context) in place. Returns (out [1, TS, D], the
        work buffer: word 1 is the barrier's error flag)."""
        d = _dims(lm)
        attn = lm.layers[0].self_attn
        params = [weights.eps, attn._scale * math.log2(math.e), math.log2(attn._max_period)]
        out, work = persistent.launch(
            self.compiled(self.consts(lm)),
            [
                x.reshape(-1).astype(mx.float32),
                offset.reshape(1).astype(mx.int32),
                mx.array(params, dtype=mx.float32),
                weights.wa,
                weights.wb,
                weights.norms,
                *rings,
            ],
            [(d["TS"] * d["D"],), (self.work_size(lm),)],
            [mx.float32, mx.float32],
            self.threads,
        )
        return out.reshape(1, d["TS"], d["D"]), work

    def verify(self, lm: Any, weights: MimiStack) -> float:
        """Step the kernel beside MLX's ops (each with its own caches) and raise ValueError where
        they differ; returns the worst relative row error seen.

        Three frames from empty caches (positions 0-5), then two frames past the end of a full
        ring of random keys and values (the MLX side gets the same rows in time order). Each
        layer's new keys and values and the output rows must agree per row (`persistent.compare`
        at `MIMI_ROW_TOLERANCE`)."""
        d = _dims(lm)
        ts, ctx = d["TS"], d["CTX"]
        ours = [mx.zeros((1, d["NH"], ctx, 2 * d["DH"])) for _ in lm.layers]
        theirs = lm.init_state()
        starts = [0, ts, 2 * ts, 40 * ctx + 3, 40 * ctx + 3 + ts]
        worst = 0.0
        for n, p0 in enumerate(starts):
            if n == 3:  # a wrapped ring: the same rows on both sides (host-side: no gather)
                rng = np.random.default_rng(100)
                shape = (1, d["NH"], ctx, 2 * d["DH"])
                timed = [rng.standard_normal(shape, dtype=np.float32) for _ in lm.layers]
                slots = np.arange(p0 - ctx, p0) % ctx  # time order -> ring slots
                order = np.argsort(slots)
                # row-contiguous: a fancy index's result need not be, and the kernel reads the
                # rings by pointer, without their strides
                ours = [mx.array(np.ascontiguousarray(r[:, :, order])) for r in timed]
                theirs = (mx.array(p0, dtype=mx.int32), [mx.array(r) for r in timed])
                mx.eval(ours, theirs)
            x = mx.random.normal((1, ts, d["D"]), key=mx.random.key(10 + n))
            offset = mx.array(p0, dtype=mx.int32)
            got, work = self.run(lm, weights, x, offset, ours)
            full = lm.is_full(p0, ts)
            want, theirs = lm.mlx_step(x, theirs, full)
            mx.eval(got, want, work, ours, theirs)
            if np.array(work[:2]).view(np.uint32)[1]:
                raise ValueError("its grid barrier timed out (blocks not resident together)")
            for layer, (a, b) in enumerate(zip(ours, theirs[1], strict=True)):
                for t in range(ts):
                    row_a = _ring_row(a, (p0 + t) % ctx)
                    row_b = _ring_row(b, ctx - ts + t)
                    what = f"layer {layer} keys and values at position {p0 + t}"
                    worst = max(worst, persistent.compare(row_a, row_b, what, MIMI_ROW_TOLERANCE))
            what = f"outputs at positions {p0}-{p0 + ts - 1}"
            worst = max(worst, persistent.compare(got, want, what, MIMI_ROW_TOLERANCE))
        return worst


KERNEL = MimiTransformerKernel()
