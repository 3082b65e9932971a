"""MLX-affine quantized weights and MLX's own products with them, on every backend.

`Quantized` is a weight as `mx.quantized_matmul` takes it. `mlx_matmul` is MLX's product; on
CUDA a product of several rows (the prompt prefill) multiplies a temporarily dequantized weight
with cuBLAS instead (`dequantized`). The one-row fast path on CUDA is `model.cuda`'s fused
mat-vec, chosen in `model.lm.layers.matvec` (docs/cuda-kernels.md §The fused quantized mat-vec).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from model.backend import on_cuda

ROWS_ENV_VAR = "PPX_QUANTIZED_ROWS"  # `qmm`: several rows through MLX's quantized GEMM on CUDA
BITS = (4, 8)  # what the fused kernels take
DTYPES = (mx.bfloat16, mx.float16, mx.float32)


@dataclass(frozen=True)
class Quantized:
    """A quantized weight [N, K] (MLX affine layout) as `mx.quantized_matmul` takes it."""

    weight: mx.array  # uint32 [N, K * bits / 32]
    scales: mx.array  # [N, K / group_size]
    biases: mx.array  # [N, K / group_size]
    group_size: int
    bits: int

    @property
    def rows(self) -> int:
        return self.weight.shape[0]

    @property
    def inputs(self) -> int:
        return self.weight.shape[1] * 32 // self.bits


def dequantizes_rows() -> bool:
    """Products of several rows multiply dequantized weights (CUDA, unless `PPX_QUANTIZED_ROWS`
    is `qmm`)."""
    return on_cuda() and os.environ.get(ROWS_ENV_VAR, "").strip().lower() != "qmm"


def mlx_matmul(x: mx.array, q: Quantized) -> mx.array:
    """`x @ W.T` with MLX's ops."""
    if x.size > q.inputs and dequantizes_rows():
        return x @ dequantized(q).T
    return mx.quantized_matmul(
        x, q.weight, q.scales, q.biases, transpose=True, group_size=q.group_size, bits=q.bits
    )


def dequantized(q: Quantized) -> mx.array:
    """The weight [N, K] in the scales' dtype (a temporary: made at each use, freed after).

    On CUDA a product of several rows (the prompt prefill) multiplies this with cuBLAS: MLX's
    quantized GEMM is a CUTLASS kernel compiled on first use, 40 s or more on a machine's first
    run (4-bit), while dequantizing is a precompiled kernel. `PPX_QUANTIZED_ROWS=qmm` goes back
    to MLX's quantized GEMM."""
    return mx.dequantize(q.weight, q.scales, q.biases, group_size=q.group_size, bits=q.bits)


def of_linear(linear: Any, arrays: tuple[mx.array, ...] | None = None) -> Quantized:
    """The quantized weight of an affine quantized linear (`nn.QuantizedLinear`, a quantized
    multi-linear): its own arrays, or `arrays` (weight, scales, biases: row blocks of them)."""
    weight, scales, biases = arrays or (linear.weight, linear.scales, linear.biases)
    return Quantized(weight, scales, biases, linear.group_size, linear.bits)


def affine(linear: object) -> bool:
    """`linear` is an MLX-affine quantized linear without a bias (what the fused paths handle)."""
    return (
        isinstance(linear, nn.QuantizedLinear)
        and getattr(linear, "mode", "affine") == "affine"
        and "bias" not in linear
    )
