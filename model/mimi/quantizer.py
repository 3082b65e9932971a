"""Mimi's split residual vector quantizer: 1 semantic codebook + acoustic codebooks in residual.

`codebooks[0]` is the semantic codebook (its own 512->256 projections), `codebooks[1:]` the
acoustic ones, quantized in residual after the acoustic input projection. Codebooks are the
centroids moshi derives from its EMA buffers (`embedding_sum / max(cluster_usage, 1e-5)`).
On CUDA, `encode` of one latent runs as one kernel (`model/cuda/mimi_quantizer.py`,
docs/cuda-kernels.md §Mimi's quantizer) once `prepare_kernel` has checked it.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .. import cuda
from ..config import MimiConfig
from ..lm.layers import place_in_slots


class SplitResidualQuantizer(nn.Module):
    def __init__(self, cfg: MimiConfig):
        super().__init__()
        d, cb, n = cfg.dimension, cfg.codebook_dim, cfg.num_codebooks
        self.semantic_input_proj = mx.zeros((cb, d))
        self.semantic_output_proj = mx.zeros((d, cb))
        self.acoustic_input_proj = mx.zeros((cb, d))
        self.acoustic_output_proj = mx.zeros((d, cb))
        self.codebooks = mx.zeros((n, cfg.codebook_size, cb))
        self._bins = cfg.codebook_size
        self._kernel = cuda.ModuleStack(cuda.MIMI_QUANTIZER)  # its stack, once checked
        self.prepare()

    def prepare(self) -> None:
        """Derives the lookup tables from the weights (evaluated); call after loading them."""
        n, _, cb = self.codebooks.shape
        # Matmul right operands stored contiguous ([in, out]), the fastest layout for CPU BLAS.
        self._input_proj = mx.contiguous(
            mx.concatenate([self.semantic_input_proj, self.acoustic_input_proj]).T
        )
        # Nearest entry = argmax of x . c - |c|^2 / 2: one matmul with the bias added in it.
        self._codebooks_t = [mx.contiguous(self.codebooks[i].T) for i in range(n)]
        self._neg_half_norms = [-0.5 * mx.sum(c * c, axis=-1) for c in self.codebooks]
        self._entries = [self.codebooks[i] for i in range(n)]
        # Each codebook entry already passed through its output projection: decoding is a sum
        # of table rows.
        semantic = self.codebooks[0] @ self.semantic_output_proj.T
        acoustic = self.codebooks[1:].reshape(-1, cb) @ self.acoustic_output_proj.T
        self._table = mx.concatenate([semantic, acoustic])
        self._offsets = mx.arange(n, dtype=mx.int32) * self._bins
        self._cb = cb
        mx.eval(
            self._input_proj,
            self._codebooks_t,
            self._neg_half_norms,
            self._entries,
            self._table,
            self._offsets,
        )

    def _nearest(self, x: mx.array, i: int) -> mx.array:
        """uint32 index of the entry of codebook i nearest to each row of x (first of ties)."""
        return mx.argmax(mx.addmm(self._neg_half_norms[i], x, self._codebooks_t[i]), axis=-1)

    def prepare_kernel(self) -> bool:
        """On CUDA: the quantizer kernel's tables for the current weights, checked once (outside
        compiled graphs). Returns whether `encode` of one latent runs on the kernel."""
        return self._kernel.prepare(self)

    def on_kernel(self) -> bool:
        """Whether `encode` of one latent runs on the CUDA kernel (prepared for these weights)."""
        return self._kernel.current(self) is not None

    def encode(self, x: mx.array) -> mx.array:
        """[batch, steps, dimension] -> codes [batch, steps, num_codebooks] (int32)."""
        stack = self._kernel.current(self) if x.shape[:2] == (1, 1) else None
        if stack is not None:
            codes, _ = cuda.MIMI_QUANTIZER.run(self, stack, x)
            return codes.reshape(1, 1, -1)
        projected = x @ self._input_proj
        semantic, residual = projected[..., : self._cb], projected[..., self._cb :]
        n = len(self._entries)
        codes = [self._nearest(semantic, 0)]
        for i in range(1, n):
            code = self._nearest(residual, i)
            codes.append(code)
            if i + 1 < n:
                residual = residual - self._entries[i][code]
        # Codes < 2^31: int32 has the same bits, and a view (no kernel) keeps the last kernel
        # of the placing chain like the others, where an `astype` would make it a module of its
        # own (MLX splits a long chain into kernels that are alike: they share one JIT module).
        return place_in_slots(codes).view(mx.int32)

    def decode(self, codes: mx.array) -> mx.array:
        """codes [batch, steps, num_codebooks] -> [batch, steps, dimension]."""
        return self._table[codes + self._offsets].sum(axis=-2)
