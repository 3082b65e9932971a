"""The compiled graphs of a conversation step, built once per model and shared by all its sessions.

A step is three pure functions, evaluated together: Mimi encode (pcm -> user codes), the LM step
(user codes -> the agent's next text and codes, through the temporal transformer, text sampling
and the depformer) and Mimi decode (codes -> pcm). Their state (Mimi's streaming state, the
rings of the temporal transformer) goes in and comes out as arrays, so one compiled graph
serves every session of the model: a new session, or a reset, traces and compiles nothing.
Graphs differ by what changes their shapes or constants: the attention window (`Window`), the
state of Mimi's caches (filling or full), the session's `LMStepSpec` (sampling parameters,
depformer steps, statistics on or off) and how unwritten ring slots are hidden (`model.lm.ring_mask`,
read when a graph is looked up).

On a fresh GPU, where MLX must JIT-compile the compiled graphs' kernels (seconds each), a model
can serve its graphs eagerly meanwhile (`eager_until_warm`): the same functions, uncompiled, run
MLX's prebuilt kernels, so a conversation can start before the compiled graphs are ready
(`Session.warm_up(defer=True)`, docs/cuda-kernels.md §Talking before the kernels are compiled).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from model.conversation.step_stats import step_stats
from model.derived import same_arrays
from model.lm.kv_cache import KVState, Window
from model.lm.model import LM
from model.lm.ring_mask import default_mode
from model.mimi import MimiCodec
from model.sampling import SamplingParams, split_key


@dataclass(frozen=True)
class LMStepSpec:
    """What an LM step graph bakes in, besides its window."""

    text: SamplingParams
    audio: SamplingParams
    depformer_steps: int  # 8 (the agent's codebooks) .. 16
    agent_codebooks: int  # codebooks returned (8)
    stats: bool = False  # also return `step_stats`


@dataclass
class GraphTiming:
    """The first use of one graph: tracing + compiling it, then its first evaluation."""

    graph: str
    trace_ms: float
    first_run_ms: float


@dataclass
class StepGraphs:
    """Compiled step functions of one model (`compile=False`: the same functions, eager)."""

    lm: LM
    mimi: MimiCodec
    compile: bool = True
    # True: a graph that has not run through `warm` yet is served as its eager function
    eager_until_warm: bool = False
    traces: int = 0  # Python traces run so far (each compiles one graph)
    timings: list[GraphTiming] = field(default_factory=list)
    _fns: dict[tuple, Callable] = field(default_factory=dict)
    _run: set[tuple] = field(default_factory=set)
    _weights: tuple = ()
    _compiled_only: int = 0

    # -- the graphs ---------------------------------------------------------------------------

    def encode(self, full: bool) -> Callable:
        """(pcm [frame], state) -> (codes [n_q] int32, state); `full`: Mimi's caches are full."""
        return self._get(("encode", full), partial(self.mimi.model.encode_step, full=full))

    def encode_all(self, full: bool, quantizer: Any) -> Callable:
        """`encode` with another quantizer (the STT's 32 codebooks; `model.stt.listener`):
        (pcm, state) -> (codes [its codebooks], state), whose first codes are `encode`'s."""
        fn = partial(self.mimi.model.encode_step, full=full, quantizer=quantizer)
        return self._get(("encode_all", full, id(quantizer)), fn)

    def decode(self, full: bool) -> Callable:
        """(codes [n_q], state) -> (pcm [frame], state)."""
        return self._get(("decode", full), partial(self.mimi.model.decode_step, full=full))

    def lm_step(self, spec: LMStepSpec, window: Window) -> Callable:
        """(user, text, agent, user_acoustic, pos, key, ring states) ->
        ((codes, next_text, next_agent, stats, next_key), ring states). See `_lm_step`."""
        fn = partial(self._lm_step, spec=spec, window=window)
        return self._get(("lm", spec, window, default_mode()), fn)

    def temporal(self, window: Window) -> Callable:
        """(column [17], pos, ring states) -> ((logits, h), ring states): the temporal part."""
        fn = partial(self._temporal, window=window)
        return self._get(("temporal", window, default_mode()), fn)

    def depformer(self, spec: LMStepSpec) -> Callable:
        """(logits, h, key) -> (next_text, next_agent): text sampling and the depformer."""
        return self._get(("depformer", spec), partial(self._depformer, spec=spec))

    # -- bookkeeping --------------------------------------------------------------------------

    def warm(self, name: str, fn: Callable, *args: Any, call: Callable | None = None) -> None:
        """Run `fn(*args)` (or `call(fn, *args)`) and evaluate the result, unless graph `fn`
        ran once already.

        For `Session.warm_up`: the first use of a graph traces and compiles it (the call) and
        loads or JIT-compiles its GPU kernels (the evaluation); both are timed in `timings`.
        """
        key = self._key_of(fn)
        if key in self._run:
            return
        t0 = time.perf_counter()
        out = call(fn, *args) if call else fn(*args)
        t1 = time.perf_counter()
        mx.eval(out)
        t2 = time.perf_counter()
        self._run.add(key)
        self.timings.append(
            GraphTiming(name, round(1000 * (t1 - t0), 3), round(1000 * (t2 - t1), 3))
        )

    def has_run(self, fn: Callable) -> bool:
        """Whether graph `fn` (one of these) ran once already: `warm` would skip it."""
        return self._key_of(fn) in self._run

    def _key_of(self, fn: Callable) -> tuple:
        return next(k for k, f in self._fns.items() if f is fn)

    def keys(self) -> set[tuple]:
        """The graphs built so far: ("encode" | "decode", full), ("lm", spec, window, ring mask
        mode), ("temporal", window, ring mask mode), ("depformer", spec)."""
        return set(self._fns)

    def refresh(self) -> None:
        """Forget every graph if a weight was replaced since they were built (graphs hold the
        weights they were traced with as constants). Call it when a session starts."""
        weights = _leaves(self.lm, self.mimi)
        if not same_arrays(weights, self._weights):
            self._fns.clear()
            self._run.clear()
            self._weights = weights

    @contextmanager
    def compiled_only(self) -> Iterator[None]:
        """Inside, the getters return the compiled graphs even while `eager_until_warm`
        (to warm them)."""
        self._compiled_only += 1
        try:
            yield
        finally:
            self._compiled_only -= 1

    def _get(self, key: tuple, fn: Callable) -> Callable:
        if key not in self._fns:
            self._fns[key] = mx.compile(self._counted(fn)) if self.compile else fn
        if self.eager_until_warm and not self._compiled_only and key not in self._run:
            return fn  # the same function, eager (MLX's prebuilt kernels: nothing to compile)
        return self._fns[key]

    def _counted(self, fn: Callable) -> Callable:
        def traced(*args: Any) -> Any:
            self.traces += 1
            return fn(*args)

        return traced

    # -- the functions ------------------------------------------------------------------------

    def _temporal(
        self, column: mx.array, pos: mx.array, states: list[KVState], *, window: Window
    ) -> tuple[tuple[mx.array, mx.array], list[KVState]]:
        lm = self.lm
        return lm.forward_step(lm.embed(column), states, pos, window), states

    def _depformer(
        self, logits: mx.array, h: mx.array, key: mx.array, *, spec: LMStepSpec
    ) -> tuple[mx.array, mx.array]:
        text_key, audio_key = split_key(key)
        text, audio = self.lm.draw_column(
            h,
            logits,
            text_params=spec.text,
            text_key=text_key,
            n_steps=spec.depformer_steps,
            params=spec.audio,
            key=audio_key,
        )
        return text, audio[: spec.agent_codebooks]

    def _lm_step(
        self,
        user: mx.array,
        text: mx.array,
        agent: mx.array,
        user_acoustic: mx.array,
        pos: mx.array,
        key: mx.array,
        states: list[KVState],
        *,
        spec: LMStepSpec,
        window: Window,
    ) -> tuple[tuple, list[KVState]]:
        """The LM part of a step: this frame's user codes in, the agent's next tokens out.

        The input column is the previous step's text and agent tokens, the user's semantic code of
        this frame and acoustic codes of the previous one (docs/driving-personaplex.md §Delays);
        the output codes are the agent's frame to decode (semantic code from the previous step).
        `key` is the session's random key: the step draws from the second half of its split and
        returns the first as the session's next key.
        """
        next_key, key = split_key(key)
        column = input_column(text, agent, user, user_acoustic)
        (logits, h), states = self._temporal(column, pos, states, window=window)
        next_text, next_agent = self._depformer(logits, h, key, spec=spec)
        codes = mx.concatenate([agent[:1], next_agent[1:]])
        stats = step_stats(logits, h) if spec.stats else ()
        return (codes, next_text, next_agent, stats, next_key), states


def input_column(
    text: mx.array, agent: mx.array, user: mx.array, user_acoustic: mx.array
) -> mx.array:
    """The 17 tokens a step runs on (text, agent codebooks, user semantic + acoustic)."""
    return mx.concatenate([text.reshape(1), agent, user[:1], user_acoustic]).astype(mx.int32)


def _leaves(lm: LM, mimi: MimiCodec) -> tuple[mx.array, ...]:
    return tuple(a for _, a in tree_flatten((lm.parameters(), mimi.model.parameters())))
