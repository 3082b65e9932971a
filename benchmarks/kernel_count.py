"""Kernels a lazy (compiled) graph launches on an MLX GPU backend, counted from its exported graph.

`count(*outputs)` reads `mx.export_to_dot`: every primitive is one kernel except views (reshapes,
slices, broadcasts: no kernel) and concatenations (one copy per input on CUDA and Metal). On a GPU
that is the real graph. On the CPU the `mx.fast` ops (RMSNorm, LayerNorm, RoPE, attention) are
expanded into their reference formulas at graph-building time; `gpu_like_fast_ops()` swaps them,
while a graph is traced, for one single-node stand-in each, as the GPU builds them (attention with
a mask array stays expanded: CUDA has no fused kernel for it either), so that CPU counts estimate
GPU ones. Stand-in graphs compute nonsense: trace them only to count.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

# Primitives that launch no kernel.
VIEWS = {
    "Broadcast", "BroadcastAxes", "Reshape", "Slice", "Squeeze", "ExpandDims", "Transpose",
    "AsStrided", "StopGradient", "Depends", "Split", "Flatten", "Unflatten", "View",
}  # fmt: skip

_NODE = re.compile(r'\{ (\d+) \[label ="([^"]+)"')
_EDGE = re.compile(r'^"?(\w+)"? -> "?(\w+)"?$', re.M)


def breakdown(outputs: object, fast: collections.Counter | None = None) -> collections.Counter:
    """Kernels per primitive name in the graph that produces `outputs` (any tree of arrays;
    views left out). `fast`: what `gpu_like_fast_ops` counted while the graph was traced."""
    arrays = [a for _, a in tree_flatten(outputs) if isinstance(a, mx.array)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "graph.dot")
        mx.export_to_dot(path, *arrays)
        text = Path(path).read_text()
    labels = dict(_NODE.findall(text))
    inputs = collections.Counter(dst for _, dst in _EDGE.findall(text) if dst in labels)
    counts: collections.Counter = collections.Counter()
    for node, name in labels.items():
        if name in VIEWS:
            continue
        counts[name] += max(1, inputs[node]) if name == "Concatenate" else 1
    for name, n in (fast or {}).items():  # stand-ins are AddMM nodes: give them their names
        counts["AddMM"] -= n
        counts[name] += n
    return +counts


def count(outputs: object) -> int:
    """Kernels launched to compute `outputs` (see `breakdown`)."""
    return sum(breakdown(outputs).values())


def _one_node(c: mx.array, a: mx.array, b: mx.array) -> mx.array:
    """One AddMM node shaped like a @ b, depending on c (a stand-in for a fused kernel)."""
    return mx.addmm(c, a, b)


@contextlib.contextmanager
def gpu_like_fast_ops() -> Iterator[collections.Counter]:
    """While tracing on the CPU: each `mx.fast` op becomes one node, as on a GPU (see above).
    Yields the count of stand-ins made, by name (for `breakdown`)."""
    fast = mx.fast
    saved = {n: getattr(fast, n) for n in ("rms_norm", "layer_norm", "rope")}
    saved_sdpa = fast.scaled_dot_product_attention
    made: collections.Counter = collections.Counter()

    def norm(name):
        def stand_in(x, weight, *rest, **kw):
            made[name] += 1
            w = weight if weight is not None else mx.ones((x.shape[-1],), x.dtype)
            return _one_node(x, x[..., :1], w.reshape(1, -1).astype(x.dtype))

        return stand_in

    def rope(x, *args, **kw):
        made["RoPE"] += 1
        return _one_node(x, x[..., :1], x[..., :1, :])

    def sdpa(q, k, v, *, scale, mask=None, **kw):
        if isinstance(mask, mx.array):
            return saved_sdpa(q, k, v, scale=scale, mask=mask, **kw)
        made["ScaledDotProductAttention"] += 1
        return _one_node(k[:, :1, : q.shape[2], :], q[..., :1], v[:, :1, :1, :])

    fast.rms_norm, fast.layer_norm, fast.rope = norm("RMSNorm"), norm("LayerNorm"), rope
    fast.scaled_dot_product_attention = sdpa
    try:
        yield made
    finally:
        for name, fn in saved.items():
            setattr(fast, name, fn)
        fast.scaled_dot_product_attention = saved_sdpa


def estimating() -> contextlib.AbstractContextManager:
    """`gpu_like_fast_ops()` on the CPU; on a GPU (whose graphs are the real ones) nothing,
    yielding None."""
    return gpu_like_fast_ops() if mx.default_device() == mx.cpu else contextlib.nullcontext()
