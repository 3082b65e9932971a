"""One column of the LM as a single lazy, compiled computation: temporal step, text sampling, depformer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import mlx.core as mx

from model.kv_cache import KVState, RingKVCache, Window
from model.lm import LM, advance, step_window
from model.ring_mask import default_mode
from model.sampling import SamplingParams, sample_token


@dataclass(frozen=True)
class ColumnInputs:
    """What one step is given, as device arrays of fixed shapes.

    tokens: int32 [17], the input column (the previous column's tokens);
    text_forced / text_provided: int32 [] / bool [], the text token of this column if known;
    audio_forced / audio_provided: int32 [dep_q] / bool [dep_q], this column's known codebooks.
    """

    tokens: mx.array
    text_forced: mx.array
    text_provided: mx.array
    audio_forced: mx.array
    audio_provided: mx.array

    @classmethod
    def free(cls, tokens: mx.array, dep_q: int) -> ColumnInputs:
        """Nothing forced: sample the text and every codebook."""
        return cls(
            tokens=tokens.astype(mx.int32),
            text_forced=mx.array(0, dtype=mx.int32),
            text_provided=mx.array(False),
            audio_forced=mx.zeros((dep_q,), dtype=mx.int32),
            audio_provided=mx.zeros((dep_q,), dtype=mx.bool_),
        )


class ColumnStepper:
    """Runs columns through `lm` with its caches, one compiled graph per step, nothing synced.

    Calling it returns (text_token int32 [], audio_tokens int32 [n_steps]) unevaluated and
    advances the caches by one position; the caller evaluates (`mx.eval`/`mx.async_eval`).
    One graph is compiled per attention window (`RingKVCache.step_window`: a few bucket lengths
    while the ring fills, then the whole ring unmasked), on first use. The rings go in and out
    of the graphs as arrays; the graphs capture the LM's weights: build a new stepper for new
    weights, sampling parameters or `n_steps`.
    """

    def __init__(
        self,
        lm: LM,
        caches: list[RingKVCache],
        *,
        text: SamplingParams,
        audio: SamplingParams,
        n_steps: int = 16,
        compile: bool = True,
        ring_mask: str | None = None,
    ):
        self.lm = lm
        self.caches = caches
        self.text = text
        self.audio = audio
        self.n_steps = n_steps
        self.hide = ring_mask or default_mode()
        self._compile = compile
        self._fns: dict[Window, Callable[..., tuple[mx.array, mx.array]]] = {}
        lm.prepare()

    def _fn(self, window: Window) -> Callable[..., tuple[mx.array, mx.array]]:
        if window not in self._fns:
            fn = partial(self._column, window=window)
            self._fns[window] = mx.compile(fn) if self._compile else fn
        return self._fns[window]

    def _column(
        self,
        tokens: mx.array,
        text_forced: mx.array,
        text_provided: mx.array,
        audio_forced: mx.array,
        audio_provided: mx.array,
        pos: mx.array,
        key: mx.array,
        states: list[KVState],
        *,
        window: Window,
    ) -> tuple[tuple[mx.array, mx.array], list[KVState]]:
        lm = self.lm
        logits, h = lm.forward_step(lm.embed(tokens), states, pos, window, self.hide)
        text_key, audio_key = mx.random.split(key, 2)
        text = sample_token(logits.reshape(-1), self.text, text_key)
        text = mx.where(text_provided, text_forced, text)
        audio = lm.depformer_step(
            h,
            text,
            forced=audio_forced,
            provided=audio_provided,
            n_steps=self.n_steps,
            params=self.audio,
            key=audio_key,
        )
        return (text, audio), states

    def __call__(self, inputs: ColumnInputs, key: mx.array) -> tuple[mx.array, mx.array]:
        pos = mx.array(self.caches[0].offset, dtype=mx.int32)
        (text, audio), states = self._fn(step_window(self.caches))(
            inputs.tokens,
            inputs.text_forced,
            inputs.text_provided,
            inputs.audio_forced,
            inputs.audio_provided,
            pos,
            key,
            [cache.state for cache in self.caches],
        )
        for cache, state in zip(self.caches, states, strict=True):
            cache.state = list(state)  # the old buffers are the graph's alone: written in place
        advance(self.caches)
        return text, audio
