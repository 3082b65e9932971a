"""A live conversation: prompt prefill, then `step(user_frame) -> Frame`, one frame every 80 ms.

The schedule is the reference's (SPEC.md §4), run one frame earlier: the reference feeds user
frame p and returns agent frame p-1; here the model runs on ring column p as soon as user frame
p's codes are known, which yields agent frame p in the same call with identical tokens (all the
inputs of column p are known then, and the agent's codebooks never depend on the depformer's
user steps, which are skipped). A step is one compiled graph — Mimi encode, the temporal
transformer, text sampling, the 8 agent depformer steps, Mimi decode — and one evaluation.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import numpy as np

from model.errors import AudioInputError
from model.kv_cache import Window
from model.lm import advance, step_window
from model.prompt_plan import PromptPlan, plan_prompt
from model.ring_mask import default_mode
from model.sampling import SamplingParams, sample_token
from model.step_stats import StepStats, step_stats
from model.types import Frame, StepTimings
from model.voices import VoicePrompt

if TYPE_CHECKING:
    from model.persona import PersonaPlex


@dataclass(frozen=True)
class SessionSampling:
    """Sampling of one session (temperature 0 = greedy)."""

    audio_temp: float = 0.8
    audio_top_k: int = 250
    text_temp: float = 0.7
    text_top_k: int = 25

    @property
    def audio(self) -> SamplingParams:
        return SamplingParams(self.audio_temp, self.audio_top_k)

    @property
    def text(self) -> SamplingParams:
        return SamplingParams(self.text_temp, self.text_top_k)


class Session:
    """One conversation with a loaded model. Not thread-safe: use it from one thread."""

    def __init__(
        self,
        model: PersonaPlex,
        *,
        voice: VoicePrompt | None,
        system_tokens: list[int],
        sampling: SessionSampling | None = None,
        seed: int | None = None,
        depformer_steps: int | None = None,
        measure_phases: bool = False,
        collect_stats: bool = False,
        compile: bool = True,
        ring_mask: str | None = None,
    ) -> None:
        self.model = model
        self.voice = voice
        self.system_tokens = list(system_tokens)
        self.sampling = sampling or SessionSampling()
        self.seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
        cfg = model.lm.config
        # Steps 0..7 are the agent's codebooks; 8..15 (the user's) never change them.
        self.depformer_steps = depformer_steps or cfg.n_q_agent
        if not cfg.n_q_agent <= self.depformer_steps <= cfg.dep_q:
            raise ValueError(f"depformer_steps must be in {cfg.n_q_agent}..{cfg.dep_q}")
        self.measure_phases = measure_phases
        self.collect_stats = collect_stats
        self._compile = compile
        self._hide = ring_mask or default_mode()
        self._n_q = cfg.n_q_agent
        model.lm.prepare()
        self._caches = model.lm.make_cache()
        self._fns: dict[tuple[str, Window | None, bool], Any] = {}
        self.last_stats: StepStats | None = None
        self.prefill_ms = 0.0
        self.reset()

    # -- set-up -------------------------------------------------------------------------------

    @property
    def frame_size(self) -> int:
        return self.model.mimi.frame_size

    @property
    def sample_rate(self) -> int:
        return self.model.mimi.sample_rate

    @property
    def position(self) -> int:
        """Temporal positions run so far (prefill included)."""
        return self._caches[0].offset

    def reset(self) -> None:
        """Start over: clear every cache and run the prompt phase again (batched)."""
        start = time.perf_counter()
        lm, cfg = self.model.lm, self.model.lm.config
        for cache in self._caches:
            cache.reset()
        codec = self.model.mimi
        self._enc_state = codec.model.init_encode_state()
        self._dec_state = codec.model.init_decode_state()
        self._key = mx.random.key(self.seed)
        voice = self.voice
        plan: PromptPlan = plan_prompt(
            cfg,
            self.system_tokens,
            voice_frames=voice.frames if voice else 0,
            voice_cache=voice.cache if voice else None,
        )
        x = lm.embed(mx.array(plan.columns, dtype=mx.int32))
        if voice is not None:
            x = mx.concatenate([voice.embeddings[None].astype(x.dtype), x], axis=1)
        logits, h = lm.forward(x, self._caches)
        self._key, text_key, audio_key = mx.random.split(self._key, 3)
        text = sample_token(logits[0, -1], self.sampling.text, text_key)
        forced = mx.array(plan.next_forced, dtype=mx.int32)
        provided = mx.array(plan.next_provided)
        agent = lm.depformer_step(
            h[:, -1:],
            text,
            forced=forced,
            provided=provided,
            n_steps=self._n_q,
            params=self.sampling.audio,
            key=audio_key,
        )
        self._text = text
        self._agent = agent
        self._user_acoustic = forced[self._n_q + 1 :]
        self._text_host = -1
        mx.eval(
            self._text,
            self._agent,
            self._user_acoustic,
            self._key,
            [c.state for c in self._caches],
            self._enc_state,
            self._dec_state,
        )
        self._text_host = int(self._text.item())
        self.frames = 0
        self._mimi_frames = 0  # frames through Mimi since the reset (its caches fill up)
        self.prompt_positions = plan.positions
        self.prefill_ms = 1000 * (time.perf_counter() - start)

    def _graphs_ahead(self) -> list[tuple[Window, bool]]:
        """(attention window, Mimi caches full) of every step graph the next steps will use."""
        cache, full_after = self._caches[0], self.model.mimi.model.full_after
        offset, frames, keys = cache.offset, self._mimi_frames, []
        while True:
            key = (cache.window_at(offset), full_after(frames))
            if key not in keys:
                keys.append(key)
            if not key[0].masked and key[1]:
                return keys
            offset, frames = offset + 1, frames + 1

    def warm_up(self) -> None:
        """Compile every step graph the conversation will use, now.

        The ring fills during the first minutes of a conversation (Mimi's caches in the first
        seconds) and each attention window gets its own graph: without this, each would be
        compiled when first reached, mid-sentence. Runs every graph once on the current state
        and drops the results: the only write, ring slot `position`, is the one the next step
        overwrites. Nothing else changes.
        """
        if not self._compile:
            return
        pos = mx.array(self.position, dtype=mx.int32)
        key = mx.random.key(0)
        pcm = mx.zeros((self.frame_size,), dtype=mx.float32)
        user = mx.zeros((self._n_q,), dtype=mx.int32)
        state = [c.state for c in self._caches]
        lm = (self._text, self._agent, self._user_acoustic)
        windows = []
        for window, mimi_full in self._graphs_ahead():
            if self.measure_phases:
                for name, args in (
                    ("encode", (pcm, self._enc_state)),
                    ("decode", (user, self._dec_state)),
                ):
                    mx.eval(self._fn(name, None, mimi_full)(*args))
                if window not in windows:
                    mx.eval(self._fn("temporal", window)(self._user_column(user), pos), state)
            else:
                enc, dec = self._enc_state, self._dec_state
                fused = self._fn("fused", window, mimi_full)
                mx.eval(fused(pcm, enc, dec, *lm, pos, key), state)
                if window not in windows:
                    mx.eval(self._fn("codes", window)(user, *lm, pos, key), state)
            windows.append(window)

    # -- the step -----------------------------------------------------------------------------

    def _user_column(self, user: mx.array) -> mx.array:
        return mx.concatenate(
            [self._text.reshape(1), self._agent, user[:1], self._user_acoustic]
        ).astype(mx.int32)

    def _encode(self, pcm: mx.array, enc_state: Any, *, mimi_full: bool) -> tuple[mx.array, Any]:
        return self.model.mimi.model.encode_step(pcm, enc_state, mimi_full)

    def _decode(self, codes: mx.array, dec_state: Any, *, mimi_full: bool) -> tuple[mx.array, Any]:
        return self.model.mimi.model.decode_step(codes, dec_state, mimi_full)

    def _temporal(self, column: mx.array, pos: mx.array, *, window: Window):
        lm = self.model.lm
        return lm.forward_step(lm.embed(column), self._caches, pos, window, self._hide)

    def _depformer(self, logits: mx.array, h: mx.array, key: mx.array):
        text_key, audio_key = mx.random.split(key, 2)
        text = sample_token(logits.reshape(-1), self.sampling.text, text_key)
        audio = self.model.lm.depformer_step(
            h,
            text,
            n_steps=self.depformer_steps,
            params=self.sampling.audio,
            key=audio_key,
        )
        return text, audio[: self._n_q]

    def _fused(
        self, pcm, enc_state, dec_state, text, agent, user_ac, pos, key, *, window, mimi_full
    ):
        """Mimi encode -> temporal -> text + agent depformer -> Mimi decode, as one graph."""
        user, enc_state = self._encode(pcm, enc_state, mimi_full=mimi_full)
        column = mx.concatenate([text.reshape(1), agent, user[:1], user_ac]).astype(mx.int32)
        logits, h = self._temporal(column, pos, window=window)
        next_text, next_agent = self._depformer(logits, h, key)
        codes = mx.concatenate([agent[:1], next_agent[1:]])
        out, dec_state = self._decode(codes, dec_state, mimi_full=mimi_full)
        stats = step_stats(logits, h) if self.collect_stats else ()
        return out, codes, user, next_text, next_agent, enc_state, dec_state, stats

    def _codes(self, user, text, agent, user_ac, pos, key, *, window):
        """The LM part of a step only: user codes in, next text and agent codes out."""
        column = mx.concatenate([text.reshape(1), agent, user[:1], user_ac]).astype(mx.int32)
        logits, h = self._temporal(column, pos, window=window)
        next_text, next_agent = self._depformer(logits, h, key)
        return mx.concatenate([agent[:1], next_agent[1:]]), next_text, next_agent

    def _fn(self, name: str, window: Window | None = None, mimi_full: bool = False):
        """The (compiled) function `name`: one graph per attention window (LM functions) and
        per state of Mimi's caches (filling or full; Mimi functions)."""
        key = (name, window, mimi_full)
        if key not in self._fns:
            state = [c.state for c in self._caches]
            fn = {
                "fused": partial(self._fused, window=window, mimi_full=mimi_full),
                "codes": partial(self._codes, window=window),
                "temporal": partial(self._temporal, window=window),
                "encode": partial(self._encode, mimi_full=mimi_full),
                "depformer": self._depformer,
                "decode": partial(self._decode, mimi_full=mimi_full),
            }[name]
            if self._compile:
                uses_cache = name in ("fused", "temporal", "codes")
                fn = mx.compile(fn, inputs=state, outputs=state) if uses_cache else mx.compile(fn)
            self._fns[key] = fn
        return self._fns[key]

    def step(self, pcm: np.ndarray) -> Frame:
        """Hear one 80 ms frame of the user (1920 float samples), return the agent's frame."""
        pcm = np.asarray(pcm, dtype=np.float32)
        if pcm.shape != (self.frame_size,):
            raise AudioInputError(
                f"A step takes one frame of {self.frame_size} samples, not {list(pcm.shape)}."
            )
        start = time.perf_counter()
        window = step_window(self._caches)
        mimi_full = self.model.mimi.model.full_after(self._mimi_frames)
        pos = mx.array(self._caches[0].offset, dtype=mx.int32)
        self._key, key = mx.random.split(self._key)
        timings = StepTimings()
        if self.measure_phases:
            graphs = (window, mimi_full)
            out, codes, user, text, agent, stats = self._step_phased(pcm, pos, key, graphs, timings)
        else:
            out, codes, user, text, agent, self._enc_state, self._dec_state, stats = self._fn(
                "fused", window, mimi_full
            )(
                mx.array(pcm),
                self._enc_state,
                self._dec_state,
                self._text,
                self._agent,
                self._user_acoustic,
                pos,
                key,
            )
            self._eval(out, codes, user, text, agent, stats)
        advance(self._caches)
        self._mimi_frames += 1
        frame_text = self._text_host
        self._text, self._agent, self._user_acoustic = text, agent, user[1:]
        self._text_host = int(text.item())
        timings.total_ms = 1000 * (time.perf_counter() - start)
        if stats:
            self.last_stats = StepStats.read(stats)
        frame = Frame(
            index=self.frames,
            pcm=np.array(out),
            text_id=frame_text,
            text=self.model.piece(frame_text),
            agent_codes=np.array(codes),
            user_codes=np.array(user),
            timings=timings,
        )
        self.frames += 1
        return frame

    def step_codes(self, user_codes: np.ndarray) -> tuple[int, np.ndarray]:
        """The LM alone: the user's 8 Mimi codes for one frame in, (text id, agent codes) out.

        For callers that run their own codec (and for benchmarking the LM step); it advances
        the same conversation as `step`, whose Mimi streams it does not touch.
        """
        user = mx.array(np.asarray(user_codes, dtype=np.int32).reshape(self._n_q))
        window = step_window(self._caches)
        pos = mx.array(self._caches[0].offset, dtype=mx.int32)
        self._key, key = mx.random.split(self._key)
        codes, text, agent = self._fn("codes", window)(
            user, self._text, self._agent, self._user_acoustic, pos, key
        )
        self._eval(codes, text, agent)
        advance(self._caches)
        frame_text = self._text_host
        self._text, self._agent, self._user_acoustic = text, agent, user[1:]
        self._text_host = int(text.item())
        self.frames += 1
        return frame_text, np.array(codes)

    def _eval(self, *outputs: Any) -> None:
        mx.eval(
            outputs,
            self._key,
            [c.state for c in self._caches],
            self._enc_state,
            self._dec_state,
        )

    def _step_phased(self, pcm, pos, key, graphs: tuple[Window, bool], timings: StepTimings):
        """The same step, evaluated phase by phase to time each one (a few syncs more)."""

        def timed(attr: str, fn, *args):
            t0 = time.perf_counter()
            result = fn(*args)
            mx.eval(result)
            setattr(timings, attr, 1000 * (time.perf_counter() - t0))
            return result

        user, self._enc_state = timed(
            "encode_ms", self._fn("encode", None, graphs[1]), mx.array(pcm), self._enc_state
        )
        column = self._user_column(user)
        logits, h = timed("temporal_ms", self._fn("temporal", graphs[0]), column, pos)
        mx.eval([c.state for c in self._caches])
        text, agent = timed("depformer_ms", self._fn("depformer"), logits, h, key)
        codes = mx.concatenate([self._agent[:1], agent[1:]])
        decode = self._fn("decode", None, graphs[1])
        out, self._dec_state = timed("decode_ms", decode, codes, self._dec_state)
        stats = step_stats(logits, h) if self.collect_stats else ()
        self._eval(out, codes, user, text, agent, stats)
        return out, codes, user, text, agent, stats
