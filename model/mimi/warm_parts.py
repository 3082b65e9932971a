"""Mimi's first encode graph cut into parts that compile alone: the same fused kernels, so that
separate processes can JIT-compile them side by side (personaplex_tui/jit_workers.py).

The whole graph's kernels come one after another (about ten CUDA modules, 4-6 s each on a fresh
machine); each part here is compiled with `mx.compile` on inputs of the shapes the whole graph
gives it (computed eagerly first), so its fused kernels are the whole graph's (docs/cuda-kernels.md,
"Kernels on a fresh machine").
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx

from .codec import MimiCodec
from .quantizer import SplitResidualQuantizer

ENCODE_PARTS = ("encoder", "mask", "attend", "feed", "down", "codes")
# "tail" (= "down" then "codes" in one graph): for a quantizer of another size (the listener's)
PARTS = (*ENCODE_PARTS, "tail")


def compile_encode_part(
    codec: MimiCodec, part: str, quantizer: SplitResidualQuantizer | None = None
) -> None:
    """Compile and run one part of the first encode step (`full=False`) on zeros; `quantizer`:
    the tail's, as `MimiModel.encode_step`'s (the listener's 32 codebooks; None: Mimi's)."""
    if part not in PARTS:
        raise ValueError(f"unknown encode part {part!r}; known: {', '.join(PARTS)}")
    m = codec.model
    state = m.init_encode_state()
    x = mx.zeros((1, codec.frame_size, 1), dtype=mx.float32)
    if part == "encoder":
        mx.eval(mx.compile(m.encoder)(x, state["encoder"]))
        return
    x, _ = m.encoder(x, state["encoder"])
    transformer = m.encoder_transformer
    offset, caches = state["transformer"]
    t = x.shape[1]
    layer = transformer.layers[0]  # every layer runs the same kernels
    if part == "mask":
        out = mx.compile(lambda o: transformer.step_mask(o, t))(offset)
    elif part == "attend":
        mask = transformer.step_mask(offset, t)
        out = mx.compile(layer.attend_step)(x, caches[0], offset, mask)
    elif part == "feed":
        out = mx.compile(layer.feed_forward_step)(x)
    else:  # the transformer's output downsampled ("down"), quantized ("codes"), or both
        y = mx.zeros_like(x)  # the transformer's output: its shape, its dtype (no values needed)
        if part == "down":
            out = mx.compile(m.downsample)(y, state["downsample"])
        elif part == "codes":
            z, _ = m.downsample(y, state["downsample"])
            out = mx.compile((quantizer or m.quantizer).encode)(z)
        else:
            tail = partial(m.quantize_step, quantizer=quantizer)
            out = mx.compile(tail)(y, state["downsample"])
    mx.eval(out)
