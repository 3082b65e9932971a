"""The temporal transformer's one-position step (all its layers) as one persistent CUDA kernel.

It runs PersonaPlex's temporal transformer (32 layers of 4096) and, with the same source compiled
for other constants, the Kyutai STT's (16 layers of 2048; `model/stt/model.py`).

As MLX ops a step is ~300 kernels (per layer: two norms, four mat-vecs, RoPE, two cache writes,
attention); most of its time is launch latency and host encoding. This kernel keeps one block
per SM resident and separates the phases of a layer with grid-wide barriers (see
`model/cuda/persistent.py`):

1. every block RMS-normalises x; the grid computes q/k/v two rows per warp (a RoPE pair), rotates
   q and k and writes k and v into the layer's ring slot -- barrier;
2. the grid computes attention partials, one (head, run of cached positions) per warp: running
   max, sum and weighted values (flash-decoding) -- barrier;
3. 128 warps combine the partials of each head -- barrier;
4. the grid computes `x + out_proj(attention)` -- barrier;
5. every block normalises x'; the grid computes `silu(gate) * value` -- barrier;
6. the grid computes `x' + linear_out(hidden)` -- barrier.

The ring caches are written in place: the kernel gets them as inputs (MLX allocates a custom
kernel's outputs anew, and copying every layer's ring per step is what the step must never do) and writes
the new slot through them, so the step returns the same arrays as its new ring states. Slots
attended are 0..min(pos, context - 1): exactly those written (see `model.lm.ring_mask`), so one
compiled kernel serves every window. Intermediate values are rounded to the activation dtype
where MLX's ops round them. `verify` compares the kernel with MLX's ops at load (a few steps on
the model's weights) and turns it off, with the reason, if they differ. `PPX_TEMPORAL=mlx` turns
it off (docs/cuda-kernels.md §The temporal step). Measured on an H200 at a full ring: 3.9 ms
against 6.2-6.9 ms for MLX's ops, at 8 and 4 bits (`python -m benchmarks.kernels_ab`), and since
the denormal codes and the attention's wider loads 3.0 ms at 4 bits (the kernel alone, phase by
phase: `python -m benchmarks.kernel_profile`). The mat-vecs can stream their weights through
shared memory (`stream_plan`; docs/cuda-kernels.md §The weight stream), on for 4-bit weights.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model.cuda import persistent
from model.cuda.gpu_facts import shared_memory_optin
from model.derived import stack_into
from model.quantized import BITS, affine
from model.sampling import split_key

THREADS = 512  # per block, one per SM (__launch_bounds__); H100 8-bit: 384 4.96, 512 4.56, 640 4.70, 1024 5.3 ms
UNROLL = {8: 4, 4: 8}  # 16-byte chunks per lane in flight (two rows each); 4-bit: 4 4.53, 8 4.05 ms
DTYPES = (mx.bfloat16, mx.float16)  # x and the hidden state live in shared memory in this type
# The weight stream (src/temporal.cuh; docs/cuda-kernels.md §The weight stream): stages, 16-byte
# chunks per lane and row in a stage, and whether a phase's first items are asked for before the
# barrier and prologue in front of it. Fewer stages where the GPU's shared memory is smaller; none
# (weights read straight into registers) where it holds fewer than two (`benchmarks/stream_ab.py`,
# `benchmarks/kernel_profile.py --variants direct s3c2+ ...` measure it). Measured on an H100
# (docs/cuda-kernels.md §The weight stream): 3 stages of 2 chunks, asked for ahead, is the fastest
# plan at 4 bits (the kernel 2.84-3.75 ms against 3.03-3.82 direct, by position); at 8 bits no
# plan beat the registers, so STREAM_BITS keeps the stream to 4-bit weights.
STREAM_STAGES, STREAM_CHUNKS, STREAM_AHEAD = 3, 2, 1
STREAM_BITS = (4,)
STREAM_ENV_VAR = "PPX_STREAM"  # "stages,chunks,ahead" (e.g. "2,4,1"; "0" for none) overrides them


def wanted_stream(bits: int) -> tuple[int, int, int]:
    """The plan asked for at `bits`: `PPX_STREAM` ("stages,chunks,ahead", or "0"/"off" for none)
    where set, else STREAM_STAGES, STREAM_CHUNKS and STREAM_AHEAD for STREAM_BITS and none for
    other widths. A malformed value is an error."""
    raw = os.environ.get(STREAM_ENV_VAR, "").strip().lower()
    if not raw:
        if bits not in STREAM_BITS:
            return 0, 0, 0
        return STREAM_STAGES, STREAM_CHUNKS, STREAM_AHEAD
    if raw in ("0", "off", "none"):
        return 0, 0, 0
    parts = raw.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"{STREAM_ENV_VAR}={raw!r}: expected stages,chunks,ahead such as 2,4,1 (or off)."
        )
    stages, chunks, ahead = (int(p) for p in parts)
    return stages, chunks, ahead


@dataclass(frozen=True)
class TemporalStack(persistent.StackedWeights):
    """The temporal transformer's weights as the kernel reads them (the modules hold views).

    qa/sa/ba: every d_model-input projection (per layer: in_proj, out_proj, linear_in rows);
    qb/sb/bb: every `linear_out`; norms: norm1/norm2 weights in the activation dtype.
    """


def _linears(layer: Any) -> list[Any]:
    return [
        layer.self_attn.in_proj,
        layer.self_attn.out_proj,
        layer.gating.linear_in,
        layer.gating.linear_out,
    ]


def _shared_bytes(d: int, hidden: int, head_dim: int, bits: int) -> int:
    """Static shared memory of the kernel (at most 48 KiB): x, a mat-vec's input, chunk sums,
    each warp's query, RoPE's cosines and sines."""
    chunk = 128 // bits
    return (
        2 * d
        + max(4 * d, 2 * hidden)
        + 4 * max(d, hidden) // chunk
        + 4 * THREADS // 32 * head_dim
        + 4 * head_dim
    )


def _stream_words(dtype: mx.Dtype, bits: int, group: int, chunks: int) -> int | None:
    """16-byte words of one warp's stage (`ppx_stream_shape`); None where the scales of a chunk
    column are not whole 16-byte pieces."""
    groups_per_column = 32 * (128 // bits) // group
    piece_bytes = groups_per_column * dtype.size
    if groups_per_column * group != 32 * (128 // bits) or piece_bytes % 16:
        return None
    return 2 * chunks * 32 + chunks * 4 * piece_bytes // 16


def stream_plan(
    d: int,
    hidden: int,
    head_dim: int,
    dtype: mx.Dtype,
    bits: int,
    group: int,
    want: tuple[int, int, int] | None = None,
) -> tuple[int, int, int, int]:
    """(stages, chunks per stage, ahead, dynamic shared bytes) of the weight stream on this GPU:
    as many of `want`'s stages as fit beside the static shared memory, none (0, 0, 0, 0) where
    fewer than two fit, `want` has none, or the shared memory per block is not known. `want`:
    (stages, chunks, ahead), `wanted_stream(bits)` unless given."""
    want_stages, chunks, ahead = want or wanted_stream(bits)
    optin = shared_memory_optin()
    words = _stream_words(dtype, bits, group, chunks) if want_stages and chunks else None
    if optin is None or words is None or (d // group) % 8 or (hidden // group) % 8:
        return 0, 0, 0, 0
    per_stage = THREADS // 32 * words * 16
    room = optin - _shared_bytes(d, hidden, head_dim, bits) - 1024  # a KiB spare
    stages = min(want_stages, room // per_stage)
    if stages < 2:
        return 0, 0, 0, 0
    return stages, chunks, ahead, stages * per_stage


def _fill_rings(caches: list[Any], seed: int) -> None:
    """Random keys and values in every slot of `caches` (a ring that has wrapped)."""
    for i, c in enumerate(caches):
        k_key, v_key = split_key(mx.random.key(seed + i))
        shape, dtype = c.keys.shape, c.keys.dtype
        c.state = [
            mx.random.normal(shape, key=k_key).astype(dtype),
            mx.random.normal(shape, key=v_key).astype(dtype),
        ]


class TemporalKernel(persistent.PersistentKernel):
    """The temporal transformer's step as one kernel (`run`), on `TemporalStack`s (`stack`).

    `lm` is any model with `transformer` (a `model.lm.model.Transformer`, whose `config` gives
    the shapes), `dtype`, `make_cache()`, `out_norm` and `text_linear`: PersonaPlex's LM and the
    Kyutai STT's (`model.stt.model.SttLM`, the same layers at other widths)."""

    env_var = "PPX_TEMPORAL"
    what = "the temporal kernel"
    path = "model/cuda/temporal.py"
    name = "ppx_temporal"
    source_name = "temporal"
    outputs = ("out", "work")
    threads = THREADS

    def inputs(self, consts: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """x, the position, the scalars, the stacked weights, then the rings (k0.., v0..), whose
        pointers a macro gathers; the rings are read in place, never copied."""
        layers = consts["NL"]
        pointers = " ".join(
            f"kc[{i}] = const_cast<T*>(k{i}); vc[{i}] = const_cast<T*>(v{i});"
            for i in range(layers)
        )
        names = ["x", "pos", "params", "qa", "sa", "ba", "qb", "sb", "bb", "norms"]
        names += [f"k{i}" for i in range(layers)] + [f"v{i}" for i in range(layers)]
        # the rings must be the arrays themselves, never copies
        options = {"macros": {"PPX_KV_POINTERS": pointers}, "ensure_row_contiguous": False}
        return names, options | {"shared_memory": consts["STREAM_BYTES"]}

    def supports(self, lm: Any) -> str | None:
        """Why the kernel cannot run `lm`'s temporal transformer (None: it can)."""
        cfg = lm.transformer.config
        layers = lm.transformer.layers
        if not layers:
            return "the transformer has no layers"
        linears = [x for layer in layers for x in _linears(layer)]
        if any(not affine(x) or x.bits not in BITS for x in linears):
            return "its projections are not 4- or 8-bit affine quantized"
        if len({(x.bits, x.group_size) for x in linears}) != 1:
            return "its projections are quantized in different ways"
        if lm.dtype not in DTYPES:
            return f"its activations are {lm.dtype} (the kernel takes bfloat16 or float16)"
        bits, group = linears[0].bits, linears[0].group_size
        hidden = cfg.dim_feedforward
        head_dim = cfg.d_model // cfg.num_heads
        chunk = 128 // bits
        if (
            head_dim % 32
            or head_dim % 8
            or cfg.d_model % group
            or hidden % group
            or group % chunk
            or cfg.d_model % 2
            or _shared_bytes(cfg.d_model, hidden, head_dim, bits) > 48 * 1024
        ):
            return "its shapes are not ones it handles"
        return None

    def stack(self, lm: Any) -> TemporalStack:
        """The kernel's arrays for `lm`'s temporal transformer; the modules' weights become views."""
        layers = lm.transformer.layers
        parts = ("weight", "scales", "biases")
        first = [x for layer in layers for x in _linears(layer)[:3]]
        second = [layer.gating.linear_out for layer in layers]
        qa, sa, ba = (stack_into(first, p) for p in parts)
        qb, sb, bb = (stack_into(second, p) for p in parts)
        norms = mx.concatenate(
            [n.alpha.reshape(-1) for layer in layers for n in (layer.norm1, layer.norm2)]
        ).astype(lm.dtype)
        mx.eval(norms)
        head = layers[0].self_attn.in_proj
        eps = layers[0].norm1.eps
        return TemporalStack(qa, sa, ba, qb, sb, bb, norms, head.bits, head.group_size, eps)

    def stack_sources(self, lm: Any) -> tuple[mx.array, ...]:
        """The arrays `self.stack(lm)` reads (to tell when a stack is stale)."""
        out: list[mx.array] = []
        for layer in lm.transformer.layers:
            for lin in _linears(layer):
                out += [lin[p] for p in ("weight", "scales", "biases") if p in lin]
            out += [layer.norm1.alpha, layer.norm2.alpha]
        return tuple(out)

    def work_size(self, lm: Any) -> int:
        cfg = lm.transformer.config
        head_dim = cfg.d_model // cfg.num_heads
        runs = -(-cfg.context // 32)
        return (
            persistent.SYNC_WORDS
            + 4 * cfg.d_model
            + cfg.dim_feedforward
            + cfg.num_heads * runs * (head_dim + 2)
        )

    def run(
        self,
        lm: Any,
        weights: TemporalStack,
        x: mx.array,
        pos: mx.array,
        states: list[list[mx.array]],
    ) -> tuple[mx.array, mx.array]:
        """The temporal transformer's output for one position: x [1, 1, D] at `pos` (int32 scalar
        array); writes keys and values into the ring `states` in place. Returns (out [1, 1, D],
        the work buffer: word 1 is the barrier's error flag)."""
        cfg = lm.transformer.config
        head_dim = cfg.d_model // cfg.num_heads
        stages, chunks, ahead, stream_bytes = self.stream(lm, weights)
        params = [weights.eps, head_dim**-0.5 * math.log2(math.e), math.log2(cfg.max_period)]
        consts: list[tuple[str, Any]] = [
            ("T", lm.dtype),
            ("BITS", weights.bits),
            ("G", weights.group_size),
            ("D", cfg.d_model),
            ("HID", cfg.dim_feedforward),
            ("NH", cfg.num_heads),
            ("DH", head_dim),
            ("NL", cfg.num_layers),
            ("CTX", cfg.context),
            ("NT", THREADS),
            ("U", UNROLL[weights.bits]),
            ("SYNC", persistent.SYNC_WORDS),
            ("NS", stages),
            ("CPI", chunks),
            ("PRE", ahead),
            ("STREAM_BYTES", stream_bytes),
        ]
        keys = [state[0] for state in states]
        values = [state[1] for state in states]
        out, work = persistent.launch(
            self.compiled(consts),
            [
                x.reshape(-1).astype(lm.dtype),
                pos.reshape(1).astype(mx.int32),
                mx.array(params, dtype=mx.float32),
                *weights.projections,
                weights.norms,
                *keys,
                *values,
            ],
            [(cfg.d_model,), (self.work_size(lm),)],
            [lm.dtype, mx.float32],
            THREADS,
        )
        return out.reshape(1, 1, cfg.d_model), work

    def stream(self, lm: Any, weights: TemporalStack) -> tuple[int, int, int, int]:
        """The weight stream's plan for `lm` on this GPU (`stream_plan`)."""
        cfg = lm.transformer.config
        return stream_plan(
            cfg.d_model,
            cfg.dim_feedforward,
            cfg.d_model // cfg.num_heads,
            lm.dtype,
            weights.bits,
            weights.group_size,
        )

    def verify(self, lm: Any, weights: TemporalStack) -> float:
        """Step the kernel with `weights` beside MLX's ops (each with its own rings) and raise
        ValueError where they differ; returns the worst relative row error seen.

        Positions 0-2 on empty rings, then two positions past the end of a full ring of random
        keys and values (every slot attended, the slot written wrapped around). At each step,
        every layer's new key and value, the output after the final norm and the text logits must
        agree per row (`persistent.compare`), and the logits' argmax must be the same.
        """
        cfg = lm.transformer.config
        ours, theirs = lm.make_cache(), lm.make_cache()
        positions = [0, 1, 2, cfg.context + 5, cfg.context + 6]
        worst = 0.0
        for n, p in enumerate(positions):
            if p == cfg.context + 5:  # the same wrapped ring on both sides
                _fill_rings(ours, 1000)
                _fill_rings(theirs, 1000)
                for c in (*ours, *theirs):
                    c.offset = p
            x = mx.random.normal((1, 1, cfg.d_model), key=mx.random.key(10 + n)).astype(lm.dtype)
            pos = mx.array(p, dtype=mx.int32)
            got, work = self.run(lm, weights, x, pos, [c.state for c in ours])
            states = [list(c.state) for c in theirs]
            # the ring written by a select: a scatter would wait seconds for NVRTC on a fresh GPU
            slot_mask = mx.array(np.arange(cfg.context) == p % cfg.context).reshape(1, 1, -1, 1)
            want = lm.transformer.step(x, states, pos, theirs[0].window_at(p), slot_mask)
            for c, st in zip(theirs, states, strict=True):
                c.state = st
            mx.eval(got, want, work, [c.state for c in ours], [c.state for c in theirs])
            for c in (*ours, *theirs):
                c.offset += 1
            if np.array(work[:2]).view(np.uint32)[1]:
                raise ValueError("its grid barrier timed out (blocks not resident together)")
            slot = p % cfg.context
            for layer, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                for i, what in enumerate(("key", "value")):
                    # slices: an int index would be a gather, JIT-compiled on a fresh GPU
                    row_a = a.state[i][:, :, slot : slot + 1].reshape(1, -1)
                    row_b = b.state[i][:, :, slot : slot + 1].reshape(1, -1)
                    what = f"layer {layer} {what}s at position {p}"
                    worst = max(worst, persistent.compare(row_a, row_b, what))
            h_got, h_want = lm.out_norm(got), lm.out_norm(want)
            worst = max(worst, persistent.compare(h_got, h_want, f"outputs at position {p}"))
            logits_got, logits_want = lm.text_linear(h_got), lm.text_linear(h_want)
            worst = max(
                worst, persistent.compare(logits_got, logits_want, f"logits at position {p}")
            )
            persistent.same_argmax(logits_got, logits_want, f"text logits at position {p}")
        return worst


KERNEL = TemporalKernel()
