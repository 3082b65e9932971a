"""The PersonaPlex language model: 17-stream embedding, temporal transformer, text head, depformer.

Module attributes are named like the original checkpoint's keys, so a parameter's path is its
canonical name, e.g. `transformer.layers.0.self_attn.in_proj.weight` (docs/checkpoint-layouts.md
§Names inside the LM).
Everything here is lazy: nothing reads back to the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from model import cuda, quantized
from model.config import LMConfig, TransformerConfig
from model.derived import Derived, current, is_fresh
from model.lm.kv_cache import SMALLEST_WINDOW, KVState, RingKVCache, Window
from model.lm.layers import (
    Attention,
    GatedFFN,
    RMSNorm,
    StepAttention,
    embed_or_zero,
    prepare_modules,
    stack_scalars,
)
from model.lm.stacked import (
    embed_stacked,
    linear_rows,
    stack_linears,
    stack_tables,
    stacked_sources,
)
from model.sampling import GREEDY, SamplingParams, draw, gumbel_noise, sample_with_noise


class TransformerLayer(nn.Module):
    """Pre-norm layer of the temporal transformer: attention then gated FFN, no layer scale."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = Attention(cfg.d_model, cfg.num_heads, cfg.max_period)
        self.norm1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.gating = GatedFFN(cfg.d_model, cfg.dim_feedforward)

    def __call__(self, x: mx.array, cache: RingKVCache) -> mx.array:
        x = self.self_attn(self.norm1(x), cache, residual=x)
        return self.gating(self.norm2(x), residual=x)

    def step(self, x: mx.array, state: KVState, *args: object) -> mx.array:
        """One position; `args` as `Attention.step` takes them after the ring state."""
        x = self.self_attn.step(self.norm1(x), state, *args, residual=x)
        return self.gating(self.norm2(x), residual=x)


class Transformer(nn.Module):
    """The temporal transformer (causal, RoPE, sliding context through ring KV caches)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.layers = [TransformerLayer(cfg) for _ in range(cfg.num_layers)]

    def make_cache(
        self, dtype: mx.Dtype, batch: int = 1, smallest_window: int | None = None
    ) -> list[RingKVCache]:
        cfg = self.config
        smallest = SMALLEST_WINDOW if smallest_window is None else smallest_window
        return [
            RingKVCache(cfg.num_heads, cfg.head_dim, cfg.context, dtype, batch, smallest)
            for _ in self.layers
        ]

    def __call__(self, x: mx.array, caches: list[RingKVCache]) -> mx.array:
        """Several positions at once (the prompt prefill). On CUDA, where the quantized
        projections of several rows multiply temporarily dequantized weights
        (`quantized.dequantized`), each layer is evaluated before the next is built, so that only
        one layer's temporaries exist at a time (the whole graph at once made the peak memory
        grow by the dequantized model's size: 15 -> 24 GB at 8 bits)."""
        layer_by_layer = x.shape[1] > 1 and quantized.dequantizes_rows()
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer(x, cache)
            if layer_by_layer:
                mx.eval(x, cache.state)
        return x

    def step(
        self,
        x: mx.array,
        states: list[KVState],
        pos: mx.array,
        window: Window,
        slot_mask: mx.array | None = None,
    ) -> mx.array:
        """One position `pos` attending `window` of the rings (slots past `pos` hidden, see
        `model.lm.ring_mask`).

        `states`: each layer's ring state ([keys, values], see `RingKVCache`), updated in place.
        `slot_mask`: the slot `pos` writes as a bool mask [1, 1, context, 1], written by a
        select instead of a scatter (see `step_write`; the load-time kernel checks).
        """
        cfg = self.config
        if slot_mask is not None:
            index = slot_mask
        else:
            slot = (pos % cfg.context).astype(mx.int32).reshape(1, 1, 1, 1)
            index = mx.broadcast_to(slot, (x.shape[0], cfg.num_heads, 1, cfg.head_dim))
        written = _slots(window.length) <= pos if window.masked else None
        for layer, state in zip(self.layers, states, strict=True):
            x = layer.step(x, state, pos, index, window, written)
        return x


class DepformerLayer(nn.Module):
    """Depformer layer: every linear has one set of weights per step."""

    def __init__(self, cfg: TransformerConfig, num_steps: int):
        super().__init__()
        self.self_attn = StepAttention(cfg.d_model, cfg.num_heads, num_steps)
        self.norm1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.gating = [GatedFFN(cfg.d_model, cfg.dim_feedforward) for _ in range(num_steps)]

    def __call__(self, x: mx.array, step: int, kv: mx.array | None) -> tuple[mx.array, mx.array]:
        x, kv = self.self_attn(self.norm1(x), step, kv, residual=x)
        return self.gating[step](self.norm2(x), residual=x), kv


class Depformer(nn.Module):
    """The depth transformer that predicts one column's audio codebooks, one step at a time."""

    def __init__(self, cfg: TransformerConfig, num_steps: int):
        super().__init__()
        self.layers = [DepformerLayer(cfg, num_steps) for _ in range(cfg.num_layers)]

    def __call__(
        self, x: mx.array, step: int, kvs: list[mx.array | None]
    ) -> tuple[mx.array, list[mx.array | None]]:
        """Step `step` of a column; kvs: each layer's keys/values of the earlier steps."""
        out = []
        for layer, kv in zip(self.layers, kvs, strict=True):
            x, kv = layer(x, step, kv)
            out.append(kv)
        return x, out


Chooser = Callable[[int, mx.array], mx.array]


class LM(nn.Module):
    """PersonaPlex's LM. Parameters are float32 until a checkpoint (see `model.checkpoints.load`) sets them."""

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
        self._tables: Derived | None = None  # the 17 input tables stacked (`prepare`)
        self._dep_in: Derived | None = None  # the depformer_in linears stacked (`prepare`)
        self._cuda = cuda.Accelerator()  # the CUDA kernels' stacks and checks

    @property
    def dtype(self) -> mx.Dtype:
        """Activation dtype (that of the embeddings)."""
        return self.text_emb.weight.dtype

    def _as_activation(self, x: mx.array) -> mx.array:
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def make_cache(self, batch: int = 1, smallest_window: int | None = None) -> list[RingKVCache]:
        """Fresh ring KV caches of the temporal transformer, one per layer."""
        return self.transformer.make_cache(self.dtype, batch, smallest_window)

    def prepare(self) -> None:
        """Derive the fast paths' arrays from the current weights (idempotent, cheap when done).

        The 17 input embedding tables become views of one stacked table (plus a zero row for the
        id -1), the depformer_in linears views of one stacked projection, and the multi-linears
        and norms get their per-step / activation-dtype forms. Memory stays the same. On CUDA,
        the fused quantized mat-vec is checked for each kind of quantized weight, and where the
        one-kernel temporal step and depformer apply, their weights are stacked (the modules keep
        views) and the kernels checked against MLX's ops (`model.cuda.Accelerator`).
        """
        dtype = self.dtype
        self._cuda.stack_weights(self)  # before the modules derive their per-step views
        # on CUDA: our mat-vec kernel, or MLX's if it fails its check
        self._cuda.check_matvec(dtype, prepare_modules(self, dtype))
        tables = [self.text_emb, *self.emb]
        if not is_fresh(self._tables, stacked_sources(tables)):
            self._tables = stack_tables(tables, zero_row=True)
        if not is_fresh(self._dep_in, stacked_sources(self.depformer_in)):
            self._dep_in = stack_linears(self.depformer_in)
        self._cuda.check(self)  # on CUDA: the kernels, or MLX's ops where one fails

    @property
    def kernels(self) -> cuda.Accelerator:
        """The CUDA kernels' state for this model (stacks, checks; nothing off CUDA)."""
        return self._cuda

    def temporal_stack(self) -> object | None:
        """The temporal kernel's stacked weights, when prepared for the current weights."""
        return self._cuda.stack(cuda.TEMPORAL, self)

    def depformer_stack(self) -> object | None:
        """The depformer kernel's stacked weights, when prepared for the current weights."""
        return self._cuda.stack(cuda.DEPFORMER, self)

    # ---- temporal transformer -------------------------------------------------------------

    def embed(self, tokens: mx.array) -> mx.array:
        """Input embedding of columns of 17 token ids ([17] or [T, 17]) -> [1, T, D].

        text_emb[text] + sum of the 16 audio embeddings; -1 contributes zeros; the initial
        tokens (text_card, card) index the tables' extra rows.
        """
        tokens = tokens.reshape(-1, self.config.n_streams)
        x = embed_stacked(self._tables, [self.text_emb, *self.emb], tokens)
        if x is not None:
            return x
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
        self,
        x: mx.array,
        states: list[KVState],
        pos: mx.array,
        window: Window,
    ) -> tuple[mx.array, mx.array]:
        """One position `pos` (int32 device scalar) with fixed shapes, for `mx.compile`.

        `states`: the caches' ring states (`[c.state for c in caches]`), whose items this
        replaces with the written rings. `window` is `step_window(caches)` (one compiled graph
        per window); unwritten slots are hidden as `model.lm.ring_mask` says. The caller advances
        the caches' offsets (`advance`), which this leaves alone.
        """
        x = self._as_activation(x)
        # on CUDA one kernel, which writes the rings in place (states unchanged)
        out = self._cuda.temporal_step(self, x, pos, states)
        x = out if out is not None else self.transformer.step(x, states, pos, window)
        h = self.out_norm(x)
        return self.text_linear(h), h

    # ---- depformer ------------------------------------------------------------------------

    def depformer_inputs_flat(self, h: mx.array, n_steps: int) -> mx.array:
        """`depformer_in[k](h[:, -1:])` of steps 0..n_steps-1 side by side: [1, 1, n_steps * D]."""
        h = h[:, -1:]
        stacked = current(self._dep_in, stacked_sources(self.depformer_in))
        if stacked is not None:
            return linear_rows(stacked, self.depformer_in[0], h, n_steps)
        return mx.concatenate([self.depformer_in[k](h) for k in range(n_steps)], axis=-1)

    def _depformer_inputs(self, h: mx.array, n_steps: int) -> list[mx.array]:
        """`depformer_in[k](h)` for k < n_steps: one stacked matmul when prepared."""
        stacked = current(self._dep_in, stacked_sources(self.depformer_in))
        if stacked is None:
            return [self.depformer_in[k](h) for k in range(n_steps)]
        out = linear_rows(stacked, self.depformer_in[0], h, n_steps)
        d = self.config.depformer.d_model
        return [out[..., k * d : (k + 1) * d] for k in range(n_steps)]

    def _run_depformer(
        self, h: mx.array, text_token: mx.array, choose: Chooser, n_steps: int, valid_ids: bool
    ) -> tuple[list[mx.array], list[mx.array]]:
        """Steps 0..n_steps-1 of the depformer for one column; `choose(k, logits)` gives the
        token of step k (which is also step k+1's input). `valid_ids`: every input id is a real
        token (no -1), so embeddings are plain lookups."""
        h = h[:, -1:]
        inputs = self._depformer_inputs(h, n_steps)
        kvs: list[mx.array | None] = [None] * len(self.depformer.layers)
        prev = text_token.reshape(1, 1)
        tokens, logits = [], []
        for k in range(n_steps):
            table = (self.depformer_text_emb if k == 0 else self.depformer_emb[k - 1]).weight
            e = table[prev] if valid_ids else embed_or_zero(table, prev.astype(mx.int32))
            x, kvs = self.depformer(inputs[k] + e, k, kvs)
            step_logits = self.linears[k](x)
            prev = choose(k, step_logits).reshape(1, 1)  # any integer type (argmax: uint32)
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
        text_token: the text token the depformer sees (a real id, int scalar array). Where
        `provided[k]` (bool [dep_q]) is set, `forced[k]` (int [dep_q], a real id) replaces the
        sampled token, both as output and as step k+1's input (chosen with mx.where: no host
        sync). The Gumbel noise of all steps is drawn at once from `key`.
        """
        n = self._steps(n_steps)
        if (forced is None) != (provided is None):
            raise ValueError("forced and provided go together")
        noise = _noise(params, key, (n, self.config.card))
        return self._column(h, text_token, n, params, noise, forced, provided)

    def _column(
        self,
        h: mx.array,
        text_token: mx.array,
        n: int,
        params: SamplingParams,
        noise: mx.array | None,
        forced: mx.array | None,
        provided: mx.array | None,
    ) -> mx.array:
        """`depformer_step` once its noise is drawn: the kernel's column, else MLX's ops."""
        tokens = self._cuda.depformer_column(
            self,
            h,
            lambda: self.depformer_inputs_flat(h, n),
            text_token,
            n,
            params,
            noise,
            forced,
            provided,
        )
        if tokens is not None:  # on CUDA: one kernel for the column
            return tokens

        def choose(k: int, logits: mx.array) -> mx.array:
            step_noise = noise[k : k + 1] if noise is not None else None  # a view, no gather
            token = draw(logits.reshape(1, -1), params, step_noise)
            if forced is None or provided is None:
                return token
            return mx.where(provided[k], forced[k].astype(mx.int32), token.astype(mx.int32))

        tokens, _ = self._run_depformer(h, text_token, choose, n, valid_ids=True)
        return stack_scalars(tokens)

    def draw_column(
        self,
        h: mx.array,
        text_logits: mx.array,
        *,
        text_params: SamplingParams,
        text_key: mx.array | None,
        n_steps: int | None = None,
        params: SamplingParams = GREEDY,
        key: mx.array | None = None,
    ) -> tuple[mx.array, mx.array]:
        """The text token drawn from `text_logits` (text_card values) as `sample_token` draws it
        with `text_key`, then the audio tokens of the column that sees it (`depformer_step`):
        int32 [] and int32 [n_steps]. On CUDA one kernel does both (docs/cuda-kernels.md §The
        depformer)."""
        n = self._steps(n_steps)
        logits = text_logits.reshape(-1)
        text_noise = _noise(text_params, text_key, logits.shape)
        noise = _noise(params, key, (n, self.config.card))
        drawn = self._cuda.depformer_column_drawing_text(
            self,
            h,
            lambda: self.depformer_inputs_flat(h, n),
            cuda.TextDraw(logits, text_params, text_noise),
            n,
            params,
            noise,
        )
        if drawn is not None:
            return drawn
        text = sample_with_noise(logits, text_params, text_noise)
        return text, self._column(h, text, n, params, noise, None, None)

    def depformer_logits(
        self, h: mx.array, text_token: mx.array, tokens: mx.array, n_steps: int | None = None
    ) -> mx.array:
        """Teacher-forced depformer logits [n_steps, card] (float32): step k sees tokens[k-1]
        (any ids, -1 included)."""
        n = self._steps(n_steps)
        tokens = tokens.astype(mx.int32)
        _, logits = self._run_depformer(h, text_token, lambda k, _: tokens[k], n, valid_ids=False)
        return mx.stack(logits).astype(mx.float32)


def _noise(params: SamplingParams, key: mx.array | None, shape: tuple[int, ...]) -> mx.array | None:
    """The Gumbel noise of draws with `params` (None when greedy); a temperature needs a key."""
    if params.greedy:
        return None
    if key is None:
        raise ValueError("sampling with a temperature needs a key")
    return gumbel_noise(key, shape)


@functools.lru_cache(maxsize=16)
def _slots(n: int) -> mx.array:
    """0..n-1 as data (a constant in a compiled graph, where `mx.arange` is a kernel)."""
    return mx.array(np.arange(n, dtype=np.int32))


def step_window(caches: list[RingKVCache]) -> Window:
    """The window the next `LM.forward_step` attends (chosen on the host, one graph each)."""
    return caches[0].step_window()


def advance(caches: list[RingKVCache], n: int = 1) -> None:
    """Advance the host-side offsets after `LM.forward_step` (which leaves them alone)."""
    for cache in caches:
        cache.offset += n
