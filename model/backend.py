"""Which MLX backend runs the model: choices that are faster on one backend than on another."""

from __future__ import annotations

import mlx.core as mx

# MLX's CUDA backend multiplies one vector by at most this many quantized rows with its mat-vec
# kernel; beyond that it runs a GEMM (CUTLASS, JIT-compiled) that also copies the scales and
# biases at every call.
CUDA_MATVEC_ROWS = 16384


def on_cuda() -> bool:
    """True when arrays are computed on an NVIDIA GPU through MLX's CUDA backend."""
    cuda = getattr(mx, "cuda", None)
    return cuda is not None and cuda.is_available() and mx.default_device() == mx.gpu


def matvec_rows() -> int | None:
    """Quantized projections with more output rows than this are run in two halves (None: all
    in one)."""
    return CUDA_MATVEC_ROWS if on_cuda() else None
