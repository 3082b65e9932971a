"""Streaming transcription: one frame of Mimi codes in, one text token and the end-of-turn
probabilities out, through a bounded ring KV cache (memory stays flat however long it runs).

Frame convention: that of the PyPI `moshi` package's `LMGen` (what Kyutai's PyTorch and MLX STT
scripts run, and the parity oracle). The step that receives frame 0 runs on the initial tokens
(frame 0 itself is never read, as `LMGen` replaces it by them); the step that receives frame
n >= 1 runs on the column [text token of step n-1, the n_q codes of frame n] at position n, and
returns text token n, which has seen every frame up to n. So each frame costs one forward, the
text of a frame is ready in the step that receives it, and a word appears about
`audio_delay_seconds` after it is spoken (the model was trained to trail the audio that much).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import mlx.core as mx

from model.errors import AudioInputError
from model.lm.kv_cache import KVState, Window
from model.stt.model import SttLM, initial_column


@dataclass
class SttStep:
    """The lazy outputs of one step."""

    text_token: mx.array  # int32 scalar
    end_of_turn: mx.array  # float32 [extra_heads]: each head's probability of class 0
    head_probs: mx.array  # float32 [extra_heads, extra_heads_dim]: every class


class SttStream:
    """A transcription stream over one `SttLM` (build one per audio stream; `reset` to reuse).

    `step` is lazy: evaluate its outputs together with `state_arrays()` (one evaluation per step,
    which a caller can share with other work of the same frame). Graphs are compiled once per
    attention window and hold the weights as constants.
    """

    def __init__(
        self,
        lm: SttLM,
        *,
        compile: bool = True,
        smallest_window: int | None = None,
        graphs: dict[Window, Callable] | None = None,
        eager_until_warm: Callable[[], bool] | None = None,
    ) -> None:
        self.lm = lm
        self._compile = compile
        # `graphs`: a dict shared by the streams of one model, so a new stream compiles nothing
        self._graphs: dict[Window, Callable] = {} if graphs is None else graphs
        self._smallest = smallest_window
        # True while a window whose graph `warm_window` has not built is to run eagerly
        self._eager_until_warm = eager_until_warm or (lambda: False)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next step is frame 0 again."""
        self.caches = self.lm.make_cache(self._smallest)
        cfg = self.lm.config
        self._initial = initial_column(cfg.n_q, cfg.text_initial, cfg.audio_initial)
        self._text = mx.array(cfg.text_initial, dtype=mx.int32)
        self.frames = 0

    def state_arrays(self) -> list[mx.array]:
        """Arrays to evaluate with a step's outputs (the rings and the last text token)."""
        return [self._text, *(a for c in self.caches for a in c.state)]

    def step(self, codes: mx.array) -> SttStep:
        """Feed the codes of the next frame ([n_q] ints, lazy is fine) and get its outputs."""
        n_q = self.lm.config.n_q
        if codes.shape != (n_q,):
            raise AudioInputError(
                f"The STT model reads {n_q} codes per frame, not an array of {list(codes.shape)}."
            )
        if self.frames == 0:
            column = self._initial
        else:
            column = mx.concatenate([self._text.reshape(1), codes.astype(mx.int32)])
        window = self.caches[0].step_window()
        pos = mx.array(self.frames, dtype=mx.int32)
        states = [c.state for c in self.caches]
        (token, probs), states = self._graph(window)(column, pos, states)
        for cache, state in zip(self.caches, states, strict=True):
            cache.state = state
            cache.offset += 1
        self._text = token
        self.frames += 1
        return SttStep(token, probs[:, 0], probs)

    def warm_up(self) -> None:
        """Compile and run once the graph of every attention window the stream will reach (the
        ring's growing windows, then the full one), so none compiles mid-conversation. It runs
        on rings of its own (on CUDA the kernel writes a ring in place): the stream's state is
        unchanged."""
        scratch = None
        for window in self.windows_to_warm():
            scratch = scratch or self.lm.make_cache(self._smallest)
            self.warm_window(window, scratch)

    def windows_to_warm(self) -> list[Window]:
        """The attention windows the stream will reach whose graph is not built yet, in order."""
        cache = self.caches[0]
        windows = [Window(n, True) for n in cache.windows]
        windows.append(Window(cache.context, False))
        return [w for w in windows if w not in self._graphs]

    def warm_window(self, window: Window, scratch: list | None = None) -> None:
        """Compile and run once the graph of `window` on scratch rings (`scratch`: caches of
        `lm.make_cache` to reuse; new ones otherwise); the stream's state is unchanged."""
        scratch = scratch or self.lm.make_cache(self._smallest)
        states = [list(c.state) for c in scratch]
        pos = mx.array(0, dtype=mx.int32)
        out, states = self._graph(window, warming=True)(self._initial, pos, states)
        mx.eval(out, states)

    def _graph(self, window: Window, warming: bool = False) -> Callable:
        if window not in self._graphs and not warming and self._eager_until_warm():
            return partial(self._run, window=window)
        if window not in self._graphs:
            run = partial(self._run, window=window)
            self._graphs[window] = mx.compile(run) if self._compile else run
        return self._graphs[window]

    def _run(
        self, column: mx.array, pos: mx.array, states: list[KVState], *, window: Window
    ) -> tuple[tuple[mx.array, mx.array], list[KVState]]:
        logits, probs = self.lm.forward_step(self.lm.embed(column), states, pos, window)
        token = mx.argmax(logits.reshape(-1)).astype(mx.int32)
        return (token, probs.reshape(probs.shape[-2:])), states
