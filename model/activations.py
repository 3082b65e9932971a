"""GELU and SiLU as plain MLX ops, the same formulas as `mlx.nn`'s.

`mlx.nn.gelu` and `mlx.nn.silu` are `mx.compile`d (shapeless): called outside a compiled graph,
each builds a fused graph of its own, which MLX's CUDA backend JIT-compiles (seconds with NVRTC
on a fresh machine) before the first eager use: the load-time kernel checks and eager steps
waited for them. Inside a compiled step graph these trace to the same ops, so the step graphs'
fused kernels are unchanged. docs/cuda-kernels.md §Kernels on a fresh machine.
"""

from __future__ import annotations

import math

import mlx.core as mx


def gelu(x: mx.array) -> mx.array:
    """x * Phi(x), the exact GELU (`mlx.nn.gelu`, `torch.nn.GELU()`)."""
    return x * (1 + mx.erf(x / math.sqrt(2))) / 2


def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x) (`mlx.nn.silu`)."""
    return x * mx.sigmoid(x)
