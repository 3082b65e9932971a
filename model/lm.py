"""The PersonaPlex language model: 17-stream embedding, temporal transformer, text head, depformer.

Module attributes are named like the original checkpoint's keys (SPEC.md §3b), so a parameter's
path is its canonical name, e.g. `transformer.layers.0.self_attn.in_proj.weight`.
Everything here is lazy: nothing reads back to the host.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from model.config import LMConfig, TransformerConfig
from model.kv_cache import ColumnKVCache, RingKVCache
from model.layers import (
    Attention,
    GatedFFN,
    RMSNorm,
    StepAttention,
    embed_or_zero,
)
from model.sampling import GREEDY, SamplingParams, sample_token, split_key


class TransformerLayer(nn.Module):
    """Pre-norm layer of the temporal transformer: attention then gated FFN, no layer scale."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = Attention(cfg.d_model, cfg.num_heads, cfg.max_period)
        self.norm1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.gating = GatedFFN(cfg.d_model, cfg.dim_feedforward)

    def __call__(self, x: mx.array, cache: RingKVCache) -> mx.array:
        x = x + self.self_attn(self.norm1(x), cache)
        return x + self.gating(self.norm2(x))

    def step(
        self, x: mx.array, cache: RingKVCache, pos: mx.array, mask: mx.array | None
    ) -> mx.array:
        x = x + self.self_attn.step(self.norm1(x), cache, pos, mask)
        return x + self.gating(self.norm2(x))


class Transformer(nn.Module):
    """The temporal transformer (causal, RoPE, sliding context through ring KV caches)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.layers = [TransformerLayer(cfg) for _ in range(cfg.num_layers)]

    def make_cache(self, dtype: mx.Dtype, batch: int = 1) -> list[RingKVCache]:
        cfg = self.config
        return [
            RingKVCache(cfg.num_heads, cfg.head_dim, cfg.context, dtype, batch) for _ in self.layers
        ]

    def __call__(self, x: mx.array, caches: list[RingKVCache]) -> mx.array:
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer(x, cache)
        return x

    def step(self, x: mx.array, caches: list[RingKVCache], pos: mx.array, full: bool) -> mx.array:
        mask = None if full else mx.arange(self.config.context) <= pos
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.step(x, cache, pos, mask)
        return x


class DepformerLayer(nn.Module):
    """Depformer layer: every linear has one set of weights per step."""

    def __init__(self, cfg: TransformerConfig, num_steps: int):
        super().__init__()
        self.self_attn = StepAttention(cfg.d_model, cfg.num_heads, num_steps)
        self.norm1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.gating = [GatedFFN(cfg.d_model, cfg.dim_feedforward) for _ in range(num_steps)]

    def __call__(self, x: mx.array, step: int, cache: ColumnKVCache) -> mx.array:
        x = x + self.self_attn(self.norm1(x), step, cache)
        return x + self.gating[step](self.norm2(x))


class Depformer(nn.Module):
    """The depth transformer that predicts one column's audio codebooks, one step at a time."""

    def __init__(self, cfg: TransformerConfig, num_steps: int):
        super().__init__()
        self.layers = [DepformerLayer(cfg, num_steps) for _ in range(cfg.num_layers)]

    def __call__(self, x: mx.array, step: int, caches: list[ColumnKVCache]) -> mx.array:
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer(x, step, cache)
        return x


Chooser = Callable[[int, mx.array], mx.array]


class LM(nn.Module):
    """PersonaPlex's LM. Parameters are float32 until a checkpoint (see `model.checkpoint`) sets them."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        t, d = config.temporal, config.depformer
        self.text_emb = nn.Embedding(config.text_card + 1, t.d_model)
        self.emb = [nn.Embedding(config.card + 1, t.d_model) for _ in range(config.n_audio)]
        self.transformer = Transformer(t)
        self.out_norm = RMSNorm(t.d_model, t.norm_eps)
        self.text_linear = nn.Linear(t.d_model, config.text_card, bias=False)
        self.depformer_in = [
            nn.Linear(t.d_model, d.d_model, bias=False) for _ in range(config.dep_q)
        ]
        self.depformer_text_emb = nn.Embedding(config.text_card + 1, d.d_model)
        self.depformer_emb = [
            nn.Embedding(config.card + 1, d.d_model) for _ in range(config.dep_q - 1)
        ]
        self.depformer = Depformer(d, config.dep_q)
        self.linears = [nn.Linear(d.d_model, config.card, bias=False) for _ in range(config.dep_q)]

    @property
    def dtype(self) -> mx.Dtype:
        """Activation dtype (that of the embeddings)."""
        return self.text_emb.weight.dtype

    def _as_activation(self, x: mx.array) -> mx.array:
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def make_cache(self, batch: int = 1) -> list[RingKVCache]:
        """Fresh ring KV caches of the temporal transformer, one per layer."""
        return self.transformer.make_cache(self.dtype, batch)

    # ---- temporal transformer -------------------------------------------------------------

    def embed(self, tokens: mx.array) -> mx.array:
        """Input embedding of columns of 17 token ids ([17] or [T, 17]) -> [1, T, D].

        text_emb[text] + sum of the 16 audio embeddings; -1 contributes zeros; the initial
        tokens (text_card, card) index the tables' extra rows.
        """
        tokens = tokens.reshape(-1, self.config.n_streams)
        x = None
        for i, table in enumerate(self.emb):
            e = embed_or_zero(table.weight, tokens[:, i + 1])
            x = e if x is None else x + e
        text = embed_or_zero(self.text_emb.weight, tokens[:, 0])
        x = text if x is None else x + text
        return mx.expand_dims(x, 0)

    def forward(self, x: mx.array, caches: list[RingKVCache]) -> tuple[mx.array, mx.array]:
        """Run T positions at once (embedded columns or voice-prompt embeddings, [1, T, D]).

        Continues at the caches' offset (batched causal prefill through the ring, sliding window
        of `context`), advances it by T. Returns text logits [1, T, text_card] and the normed
        hidden state h [1, T, D] that feeds the depformer.
        """
        h = self.out_norm(self.transformer(self._as_activation(x), caches))
        return self.text_linear(h), h

    def forward_step(
        self, x: mx.array, caches: list[RingKVCache], pos: mx.array, full: bool
    ) -> tuple[mx.array, mx.array]:
        """One position `pos` (int32 device scalar) with fixed shapes, for `mx.compile`.

        `full` says whether every ring slot is valid after this write (`step_is_full`); the
        caller advances the caches' offsets (`advance`), which this leaves alone.
        """
        h = self.out_norm(self.transformer.step(self._as_activation(x), caches, pos, full))
        return self.text_linear(h), h

    # ---- depformer ------------------------------------------------------------------------

    def _run_depformer(
        self, h: mx.array, text_token: mx.array, choose: Chooser, n_steps: int
    ) -> tuple[list[mx.array], list[mx.array]]:
        """Steps 0..n_steps-1 of the depformer for one column; `choose(k, logits)` gives the
        token of step k (which is also step k+1's input)."""
        h = h[:, -1:]
        caches = [ColumnKVCache() for _ in self.depformer.layers]
        prev = text_token.reshape(1, 1).astype(mx.int32)
        tokens, logits = [], []
        for k in range(n_steps):
            table = self.depformer_text_emb if k == 0 else self.depformer_emb[k - 1]
            x = self.depformer_in[k](h) + embed_or_zero(table.weight, prev)
            step_logits = self.linears[k](self.depformer(x, k, caches))
            prev = choose(k, step_logits).reshape(1, 1)
            tokens.append(prev.reshape(()))
            logits.append(step_logits.reshape(-1))
        return tokens, logits

    def _steps(self, n_steps: int | None) -> int:
        n = self.config.dep_q if n_steps is None else n_steps
        if not 1 <= n <= self.config.dep_q:
            raise ValueError(f"n_steps must be in 1..{self.config.dep_q}, got {n}")
        return n

    def depformer_step(
        self,
        h: mx.array,
        text_token: mx.array,
        *,
        forced: mx.array | None = None,
        provided: mx.array | None = None,
        n_steps: int | None = None,
        params: SamplingParams = GREEDY,
        key: mx.array | None = None,
    ) -> mx.array:
        """Audio tokens of one column: int32 [n_steps] (8 = agent codebooks only, 16 = all).

        h: the temporal output for the column ([1, 1, D]; the last position is used);
        text_token: the text token the depformer sees (int scalar array). Where `provided[k]`
        (bool [dep_q]) is set, `forced[k]` (int [dep_q]) replaces the sampled token, both as
        output and as step k+1's input (chosen with mx.where: no host sync).
        """
        n = self._steps(n_steps)
        keys = split_key(key, n) if key is not None and not params.greedy else [None] * n
        if (forced is None) != (provided is None):
            raise ValueError("forced and provided go together")

        def choose(k: int, logits: mx.array) -> mx.array:
            token = sample_token(logits.reshape(-1), params, keys[k])
            if forced is None or provided is None:
                return token
            return mx.where(provided[k], forced[k].astype(mx.int32), token)

        tokens, _ = self._run_depformer(h, text_token, choose, n)
        return mx.stack(tokens)

    def depformer_logits(
        self, h: mx.array, text_token: mx.array, tokens: mx.array, n_steps: int | None = None
    ) -> mx.array:
        """Teacher-forced depformer logits [n_steps, card] (float32): step k sees tokens[k-1]."""
        n = self._steps(n_steps)
        tokens = tokens.astype(mx.int32)
        _, logits = self._run_depformer(h, text_token, lambda k, _: tokens[k], n)
        return mx.stack(logits).astype(mx.float32)


def step_is_full(caches: list[RingKVCache]) -> bool:
    """Whether every ring slot is valid once the next position is written (then no mask)."""
    return caches[0].offset + 1 >= caches[0].context


def advance(caches: list[RingKVCache], n: int = 1) -> None:
    """Advance the host-side offsets after `LM.forward_step` (which leaves them alone)."""
    for cache in caches:
        cache.offset += n
