"""The STT language model: n_q + 1 input embeddings, the project's temporal transformer, text and
extra heads. No depformer: the audio is only read, never generated.

Module attributes are named like the PyTorch checkpoint's keys (`text_emb`, `emb.i`,
`transformer.layers.i...`, `out_norm`, `text_linear`, `extra_heads.i`). Everything is lazy.
On CUDA, once `prepare`d, a quantized model's transformer step runs as the project's one-kernel
temporal step, checked against MLX's ops at load (docs/cuda-kernels.md §The STT's step).
"""

from __future__ import annotations

import functools

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from model import cuda
from model.derived import Derived, current, is_fresh
from model.lm.kv_cache import RingKVCache, Window
from model.lm.layers import RMSNorm, embed_or_zero, prepare_modules
from model.lm.model import Transformer
from model.lm.stacked import (
    embed_stacked,
    linear_rows,
    stack_linears,
    stack_tables,
    stacked_sources,
)
from model.stt.config import SttConfig


class SttLM(nn.Module):
    """Kyutai's STT LM (moshi's `LMModel` with `dep_q = 0` and optional extra heads)."""

    def __init__(self, config: SttConfig) -> None:
        super().__init__()
        self.config = config
        d = config.transformer.d_model
        self.text_emb = nn.Embedding(config.text_card + 1, d)
        self.emb = [nn.Embedding(config.card + 1, d) for _ in range(config.n_q)]
        self.transformer = Transformer(config.transformer)
        self.out_norm = RMSNorm(d, config.transformer.norm_eps)
        self.text_linear = nn.Linear(d, config.text_card, bias=False)
        self.extra_heads = [
            nn.Linear(d, config.extra_heads_dim, bias=False) for _ in range(config.extra_heads)
        ]
        self._cuda = cuda.Accelerator((cuda.TEMPORAL,))  # no depformer: the temporal kernel only
        self._tables: Derived | None = None  # the n_q + 1 input tables stacked (`prepare`)
        self._heads: Derived | None = None  # the extra heads stacked (`prepare`)

    @property
    def dtype(self) -> mx.Dtype:
        return self.text_emb.weight.dtype

    def quantize(self, bits: int, group_size: int = 64) -> None:
        """Quantize the transformer's projections whose input size is a multiple of
        `group_size` (all of the published model's; embeddings, heads and a tiny test model's
        odd widths stay float), affine as the temporal kernel takes them."""

        def wanted(path: str, module: nn.Module) -> bool:
            fits = isinstance(module, nn.Linear) and module.weight.shape[1] % group_size == 0
            return fits and path.startswith("transformer.")

        nn.quantize(self, group_size, bits, class_predicate=wanted)

    def prepare(self) -> None:
        """Derive the per-step arrays from the current weights (`model.lm.layers`), stack the
        n_q + 1 input tables (one gather per step) and the extra heads (one product), and on
        CUDA stack a quantized transformer's weights for the temporal kernel and check it (and
        the fused mat-vec) against MLX's ops; a kernel that fails stays off. Idempotent; the
        modules keep their parameters as views of the stacks."""
        self._cuda.stack_weights(self)  # before the modules derive their per-step views
        tables = [self.text_emb, *self.emb]
        if not is_fresh(self._tables, stacked_sources(tables)):
            self._tables = stack_tables(tables, zero_row=True)
        if self.extra_heads and not is_fresh(self._heads, stacked_sources(self.extra_heads)):
            self._heads = stack_linears(self.extra_heads)
        self._cuda.check_matvec(self.dtype, prepare_modules(self, self.dtype))
        self._cuda.check(self)

    @property
    def kernels(self) -> cuda.Accelerator:
        """The CUDA kernels' state for this model (nothing off CUDA)."""
        return self._cuda

    def make_cache(self, smallest_window: int | None = None) -> list[RingKVCache]:
        """Fresh ring KV caches (one per layer) of `context` frames: memory stays flat."""
        return self.transformer.make_cache(self.dtype, 1, smallest_window)

    def embed(self, tokens: mx.array) -> mx.array:
        """Columns of n_q + 1 ids ([n_q + 1] or [T, n_q + 1], text first) -> [1, T, D].

        Plain sum of the text and audio embeddings; the id -1 contributes zeros. Prepared: one
        gather from the stacked tables and one sum."""
        tokens = tokens.reshape(-1, self.config.n_streams)
        x = embed_stacked(self._tables, [self.text_emb, *self.emb], tokens)
        if x is not None:
            return x
        x = embed_or_zero(self.text_emb.weight, tokens[:, 0])
        for i, table in enumerate(self.emb):
            x = x + embed_or_zero(table.weight, tokens[:, i + 1])
        return mx.expand_dims(x, 0)

    def heads(self, h: mx.array) -> tuple[mx.array, mx.array]:
        """Text logits [.., text_card] and extra-head probabilities [.., extra_heads, dim]
        (float32 softmax) of the normed transformer output h."""
        logits = self.text_linear(h)
        if not self.extra_heads:
            return logits, mx.zeros((*h.shape[:-1], 0, self.config.extra_heads_dim), mx.float32)
        heads = self.extra_heads
        stacked = current(self._heads, stacked_sources(heads))
        if stacked is not None:  # one product for every head
            flat = linear_rows(stacked, heads[0], h, len(heads))
            extra = flat.reshape(*h.shape[:-1], len(heads), self.config.extra_heads_dim)
        else:
            extra = mx.stack([head(h) for head in heads], axis=-2)
        return logits, mx.softmax(extra.astype(mx.float32), axis=-1)

    def forward(self, x: mx.array, caches: list[RingKVCache]) -> tuple[mx.array, mx.array]:
        """T embedded positions [1, T, D] at the caches' offset (host-side bookkeeping)."""
        x = x if x.dtype == self.dtype else x.astype(self.dtype)
        return self.heads(self.out_norm(self.transformer(x, caches)))

    def forward_step(
        self,
        x: mx.array,
        states: list[list[mx.array]],
        pos: mx.array,
        window: Window,
    ) -> tuple[mx.array, mx.array]:
        """One position `pos` (int32 device scalar) with fixed shapes (see `LM.forward_step`);
        the caller advances the caches' offsets."""
        x = x if x.dtype == self.dtype else x.astype(self.dtype)
        # on CUDA one kernel, which writes the rings in place (states unchanged)
        h = self._cuda.temporal_step(self, x, pos, states)
        h = h if h is not None else self.transformer.step(x, states, pos, window)
        return self.heads(self.out_norm(h))


@functools.lru_cache(maxsize=4)
def initial_column(n_q: int, text_initial: int, audio_initial: int) -> mx.array:
    """The column fed at the first step: every stream's initial token (moshi's `LMGen`)."""
    return mx.array(np.array([text_initial] + [audio_initial] * n_q, dtype=np.int32))
