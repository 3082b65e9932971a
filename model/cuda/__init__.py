"""The optional CUDA accelerator: our own kernels, run through MLX's CUDA backend only.

The rest of `model/` reaches CUDA through this module alone: `Accelerator` (an LM's kernel
state: stacked weights, load-time checks, the temporal step and the depformer column, with
`TextDraw` when the kernel also draws the column's text token),
`fused_matvec` / `fused_gated_matvec` (one row times a quantized weight), `MIMI_TRANSFORMER`
and `MIMI_QUANTIZER` (Mimi's streaming transformer and its quantizer's encode, each as one
kernel, used by `model/mimi/`), `MIMI_SEANET` and `SeanetConv` (Mimi's SEANet convolutions, a
kernel each), `KERNELS` (each kernel's switch and the reason it is off, for reports),
`wanted_stream` (the temporal kernel's weight-stream plan, `PPX_STREAM` checked), `pinned_io`
(a session's frame and tokens through page-locked memory, `PPX_HOST_IO`) and `polls_written`
(whether a step's end is polled there, `PPX_HOST_WAIT`). On Metal and the CPU every kernel is
off and each entry point answers None: readers of those paths need not look inside. It uses
only `model.backend`, `model.derived`, `model.quantized` and `model.sampling`.
docs/cuda-kernels.md.
"""

from __future__ import annotations

import mlx.core as mx

from model.cuda.accelerator import Accelerator
from model.cuda.depformer import KERNEL as DEPFORMER
from model.cuda.depformer import TextDraw
from model.cuda.host_io import PinnedIO, pinned_io, polls_written
from model.cuda.kernel import Kernel
from model.cuda.matvec import KERNEL as MATVEC
from model.cuda.mimi_quantizer import KERNEL as MIMI_QUANTIZER
from model.cuda.mimi_transformer import KERNEL as MIMI_TRANSFORMER
from model.cuda.persistent import ModuleStack
from model.cuda.seanet import KERNEL as MIMI_SEANET
from model.cuda.seanet import SeanetConv
from model.cuda.temporal import KERNEL as TEMPORAL
from model.cuda.temporal import wanted_stream
from model.quantized import Quantized

KERNELS: tuple[Kernel, ...] = (
    MATVEC,
    TEMPORAL,
    DEPFORMER,
    MIMI_TRANSFORMER,
    MIMI_QUANTIZER,
    MIMI_SEANET,
)

__all__ = [
    "DEPFORMER",
    "KERNELS",
    "MATVEC",
    "MIMI_QUANTIZER",
    "MIMI_SEANET",
    "MIMI_TRANSFORMER",
    "TEMPORAL",
    "Accelerator",
    "Kernel",
    "ModuleStack",
    "PinnedIO",
    "SeanetConv",
    "TextDraw",
    "pinned_io",
    "polls_written",
    "wanted_stream",
]


def fused_matvec(x: mx.array, q: Quantized, residual: mx.array | None = None) -> mx.array | None:
    """`x @ W.T` (+ `residual`) by the fused kernel (None: it does not take this product)."""
    if not MATVEC.usable(x, q):
        return None
    if residual is None:
        return MATVEC.run(x, q, q.rows, mx.zeros((1,), dtype=x.dtype))
    return MATVEC.run(x, q, q.rows, residual.astype(x.dtype).reshape(-1))


def fused_gated_matvec(x: mx.array, q: Quantized) -> mx.array | None:
    """`silu(gate) * value` of `x @ W.T`'s halves by the fused kernel (None: it does not take
    this product)."""
    if not MATVEC.usable(x, q):
        return None
    return MATVEC.run(x, q, q.rows // 2, mx.zeros((2,), dtype=x.dtype))
