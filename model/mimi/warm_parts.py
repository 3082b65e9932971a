"""Mimi's first encode graph cut into parts that compile alone: the same fused kernels, so that
separate processes can JIT-compile them side by side (personaplex_tui/jit_workers.py).

The whole graph's kernels come one after another (about ten CUDA modules, 4-6 s each on a fresh
machine); each part here is compiled with `mx.compile` on inputs of the shapes the whole graph
gives it (computed eagerly first), so its fused kernels are the whole graph's (docs/cuda-kernels.md,
"Kernels on a fresh machine").
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx

from .codec import MimiCodec

ENCODE_PARTS = ("encoder", "mask", "attend", "feed", "tail")


def compile_encode_part(codec: MimiCodec, part: str) -> None:
    """Compile and run one part of the first encode step (`full=False`) on zeros."""
    if part not in ENCODE_PARTS:
        raise ValueError(f"unknown encode part {part!r}; known: {', '.join(ENCODE_PARTS)}")
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
    mask = transformer.step_mask(offset, t)
    runs: dict[str, Callable[[], object]] = {
        "mask": lambda: mx.compile(lambda o: transformer.step_mask(o, t))(offset),
        "attend": lambda: mx.compile(layer.attend_step)(x, caches[0], offset, mask),
        "feed": lambda: mx.compile(layer.feed_forward_step)(x),
    }
    if part in runs:
        mx.eval(runs[part]())
        return
    y, _ = transformer.step(x, state["transformer"])

    def tail(y: mx.array, down: object) -> tuple[mx.array, object]:
        z, down = m.downsample(y, down)
        return m.quantizer.encode(z).reshape(-1), down

    mx.eval(mx.compile(tail)(y, state["downsample"]))
