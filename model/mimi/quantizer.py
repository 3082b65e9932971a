"""Mimi's split residual vector quantizer: 1 semantic codebook + acoustic codebooks in residual.

`codebooks[0]` is the semantic codebook (its own 512->256 projections), `codebooks[1:]` the
acoustic ones, quantized in residual after the acoustic input projection. Codebooks are the
centroids moshi derives from its EMA buffers (`embedding_sum / max(cluster_usage, 1e-5)`).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import MimiConfig


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
        self.prepare()

    def prepare(self) -> None:
        """Derives the lookup tables from the weights; call after loading them."""
        n = self.codebooks.shape[0]
        cb = self.codebooks.shape[2]
        # Matmul right operands stored contiguous ([in, out]), the fastest layout for CPU BLAS.
        self._input_proj = mx.contiguous(
            mx.concatenate([self.semantic_input_proj, self.acoustic_input_proj]).T
        )
        self._codebooks_t = mx.contiguous(self.codebooks.transpose(0, 2, 1))
        self._half_norms = 0.5 * mx.sum(self.codebooks * self.codebooks, axis=-1)
        # Each codebook entry already passed through its output projection: decoding is a sum
        # of table rows.
        semantic = self.codebooks[0] @ self.semantic_output_proj.T
        acoustic = self.codebooks[1:].reshape(-1, cb) @ self.acoustic_output_proj.T
        self._table = mx.concatenate([semantic, acoustic])
        self._offsets = mx.arange(n, dtype=mx.int32) * self._bins
        self._cb = cb

    def _nearest(self, x: mx.array, i: int) -> mx.array:
        return mx.argmin(self._half_norms[i] - x @ self._codebooks_t[i], axis=-1).astype(mx.int32)

    def encode(self, x: mx.array) -> mx.array:
        """[batch, steps, dimension] -> codes [batch, steps, num_codebooks] (int32)."""
        projected = x @ self._input_proj
        semantic, residual = projected[..., : self._cb], projected[..., self._cb :]
        codes = [self._nearest(semantic, 0)]
        for i in range(1, self.codebooks.shape[0]):
            code = self._nearest(residual, i)
            codes.append(code)
            if i + 1 < self.codebooks.shape[0]:
                residual = residual - self.codebooks[i][code]
        return mx.stack(codes, axis=-1)

    def decode(self, codes: mx.array) -> mx.array:
        """codes [batch, steps, num_codebooks] -> [batch, steps, dimension]."""
        return self._table[codes + self._offsets].sum(axis=-2)
