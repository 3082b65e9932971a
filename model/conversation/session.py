"""A live conversation: prompt prefill, then `step(user_frame) -> Frame`, one frame every 80 ms.

The schedule is the reference's, run one frame earlier (docs/driving-personaplex.md §The live
step, §One frame earlier): the reference feeds user frame p and returns agent frame p-1; here the
model runs on ring column p as soon as user frame p's codes are known, which yields agent frame p
in the same call with identical tokens (all the inputs of column p are known then, and the agent's
codebooks never depend on the depformer's user steps, which are skipped). A step is three compiled
graphs — Mimi encode; the temporal transformer, text sampling and the 8 agent depformer steps;
Mimi decode — with one wait for the results: the encode (and the STT step), then the LM step, are launched
as soon as each is built, the decode at the wait (docs/driving-personaplex.md §The live step).
The graphs belong to the model (`model.conversation.step_graphs`): every session of it shares them.
When the model has a `Listener` (`model.stt.listener`), the encode codes the STT's 32 codebooks,
the first 8 of which PersonaPlex hears unchanged, and the STT step on all of them joins the same
evaluation: each frame also carries the user's text token and the end-of-turn probabilities.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import mlx.core as mx
import numpy as np

from model import cuda
from model.array_checks import codes_in_range, float_audio
from model.checkpoints.voices import VoicePrompt
from model.checks import seed_value
from model.config import SamplingConfig
from model.conversation.built_step import BuiltLMStep
from model.conversation.phased_step import step_phased
from model.conversation.prompt_plan import PromptPlan, check_prompt, plan_prompt
from model.conversation.step_graphs import LMStepSpec, StepGraphs
from model.conversation.step_stats import StepStats
from model.conversation.tokenizer import TextTokenizer
from model.conversation.types import Frame, StepTimings
from model.conversation.warm_jobs import compiled_warm_jobs
from model.errors import AudioInputError, SessionThreadError, SettingValueError
from model.lm.kv_cache import Window
from model.lm.model import LM, advance, step_window
from model.mimi import MimiCodec
from model.sampling import SamplingParams, sample_token, split_key

# progress(done, total, name) of `Session.warm_up`
WarmProgress = Callable[[int, int, str], None]


class SessionModel(Protocol):
    """What a session needs of its model (a `PersonaPlex`, which makes the sessions)."""

    lm: LM
    mimi: MimiCodec
    tokenizer: TextTokenizer

    def piece(self, token: int) -> str: ...

    def step_graphs(self, compile: bool = True) -> StepGraphs: ...


class Session:
    """One conversation with a loaded model. Not thread-safe: use it from one thread."""

    def __init__(
        self,
        model: SessionModel,
        *,
        voice: VoicePrompt | None,
        system_tokens: list[int],
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        depformer_steps: int | None = None,
        measure_phases: bool = False,
        collect_stats: bool = False,
        compile: bool = True,
        transcribe_user: bool = True,
    ) -> None:
        self.model = model
        self.voice = voice
        self._stream = mx.default_stream(mx.default_device())  # this thread's (see _check_thread)
        cfg = model.lm.config
        self.system_tokens = check_prompt(cfg, system_tokens, voice.frames if voice else 0)
        self.sampling = sampling or SamplingConfig()
        if not isinstance(self.sampling, SamplingConfig):
            raise SettingValueError(
                f"sampling must be a SamplingConfig, not {type(self.sampling).__name__}."
            )
        self.seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed_value(seed)
        # Steps 0..7 are the agent's codebooks; 8..15 (the user's) never change them.
        steps = cfg.n_q_agent if depformer_steps is None else depformer_steps
        whole = isinstance(steps, (int, np.integer)) and not isinstance(steps, bool)
        if not (whole and cfg.n_q_agent <= steps <= cfg.dep_q):
            raise SettingValueError(
                f"depformer_steps must be a whole number in {cfg.n_q_agent}..{cfg.dep_q}, "
                f"not {depformer_steps!r}."
            )
        self.depformer_steps = int(steps)
        self.measure_phases = measure_phases
        self.collect_stats = collect_stats
        # launch the encode and the STT step, then the LM step, each as soon as it is built, so
        # that the GPU runs them while the rest of the step is built (False: all at the end, at
        # the one wait; kept for A/B timing, benchmarks/launch_early_ab.py)
        self.launch_early = True
        self._compile = compile
        self._n_q = cfg.n_q_agent
        model.lm.prepare()
        self._graphs = model.step_graphs(compile)
        self._graphs.refresh()
        self._spec = LMStepSpec(
            text=SamplingParams(self.sampling.text_temperature, self.sampling.text_top_k),
            audio=SamplingParams(self.sampling.audio_temperature, self.sampling.audio_top_k),
            depformer_steps=self.depformer_steps,
            agent_codebooks=self._n_q,
            stats=collect_stats,
        )
        self._caches = model.lm.make_cache()
        listener = getattr(model, "listener", None) if transcribe_user else None
        self._listen = listener.stream() if listener is not None else None
        # False: steps skip the STT (turn-based listening transcribes the user live instead)
        self.transcribe_steps = True
        # the step's frame and tokens through page-locked memory on CUDA (None elsewhere:
        # MLX's arrays as before); docs/cuda-kernels.md §The step's I/O through page-locked memory
        self._io = cuda.pinned_io(self.frame_size)
        self.polls_written = cuda.polls_written()  # docs/cuda-kernels.md §The step's end polled
        # while polling, `step_codes` builds the next LM step's graph as the GPU runs this one
        # (False: each when called; kept for A/B timing)
        self.builds_ahead = True
        self._ahead: BuiltLMStep | None = None
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

    def _check_thread(self) -> None:
        """Refuse a call from a thread other than the one that made the session: its arrays
        belong to that thread's default MLX stream (MLX's default streams are per thread), so
        the stream tells. (Such a step failed inside MLX and left the session unusable for good;
        two threads stepping it at once crashed the process.)"""
        if mx.default_stream(mx.default_device()) != self._stream:
            raise SessionThreadError(
                "A session can only be used on the thread that made it, with the default MLX "
                "stream it had then; make one on this thread instead."
            )

    def reset(self) -> None:
        """Start over: clear every cache and run the prompt phase again (batched)."""
        self._check_thread()
        self._ahead = None
        start = time.perf_counter()
        lm, cfg = self.model.lm, self.model.lm.config
        for cache in self._caches:
            cache.reset()
        if self._listen is not None:
            self._listen.reset()
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
        self._key, text_key, audio_key = split_key(self._key, 3)
        text = sample_token(logits[0, -1], self._spec.text, text_key)
        forced = mx.array(plan.next_forced, dtype=mx.int32)
        provided = mx.array(plan.next_provided)
        agent = lm.depformer_step(
            h[:, -1:],
            text,
            forced=forced,
            provided=provided,
            n_steps=self._n_q,
            params=self._spec.audio,
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

    def warm_up(
        self,
        progress: WarmProgress | None = None,
        *,
        part: tuple[int, int] | None = None,
        graphs: Callable[[str], bool] | None = None,
        defer: bool = False,
    ) -> None:
        """Compile every step graph the conversation will use, and run each once, now.

        The ring fills during the first minutes of a conversation (Mimi's caches in the first
        seconds) and each attention window has its own graph: without this, each would be
        compiled (and its GPU kernels loaded) when first reached, mid-sentence. Graphs another
        session of the model already ran are skipped. Runs each graph on the current state and
        drops the results: the only write, ring slot `position`, is the one the next step
        overwrites. Nothing else changes.

        `progress(done, total, name)`, when given, is called before each graph compiled here
        (`total` counts those only, the listener's included; `done` of them are compiled) and
        once at the end with `done == total` and name "".

        `graphs(name)` keeps only the graphs it accepts, and `part=(i, n)` only graphs i, i+n,
        i+2n, ... of those (helper processes compiling GPU kernels in parallel share them out).

        `defer=True` compiles nothing now: until `compile_next` has warmed each graph, the
        model's sessions run it eagerly (the same functions on MLX's prebuilt kernels: a fresh
        GPU can talk while helper processes compile the graphs' kernels; docs/cuda-kernels.md
        §Talking before the kernels are compiled).
        """
        self._check_thread()
        if defer and self._compile:
            self._serve_eagerly(bool(self._warm_jobs()))
            if progress is not None:
                progress(0, 0, "")
            return
        jobs = self._warm_jobs() if self._compile else []
        if graphs is not None:
            jobs = [job for job in jobs if graphs(job[0])]
        if part is not None:
            index, count = part
            if not (isinstance(count, int) and isinstance(index, int) and 0 <= index < count):
                raise SettingValueError(
                    f"part=(i, n) takes graphs i, i+n, ... of n shares: 0 <= i < n, not {part}."
                )
            jobs = jobs[index::count]
        for done, (name, run) in enumerate(jobs):
            if progress is not None:
                progress(done, len(jobs), name)
            run()
        if self._compile:
            mx.eval([c.state for c in self._caches])
            if part is None and graphs is None:
                self._serve_eagerly(False)  # every graph of this session is compiled now
        if progress is not None:
            progress(len(jobs), len(jobs), "")

    @property
    def steps_eagerly(self) -> bool:
        """Whether some step graph still runs eagerly (`warm_up(defer=True)`)."""
        return self._graphs.eager_until_warm

    def compile_next(self) -> str | None:
        """Warm up one step graph that `warm_up(defer=True)` left to run eagerly: between two
        steps, tens of ms when its kernels are on disk (seconds per kernel MLX must compile).
        Returns its name, or None when none is left; once none is, every graph runs compiled.
        Like `warm_up`, it runs the graph on the current state and changes nothing."""
        self._check_thread()
        jobs = self._warm_jobs()
        if jobs:
            name, run = jobs[0]
            run()
            if len(jobs) > 1:
                return name
        self._serve_eagerly(False)
        return jobs[0][0] if jobs else None

    def _serve_eagerly(self, on: bool) -> None:
        self._graphs.eager_until_warm = on
        if self._listen is not None:
            self._listen.listener.eager_until_warm = on

    def _warm_jobs(self) -> list[tuple[str, Callable[[], None]]]:
        """(name, run it once) of each graph `warm_up` has to compile, in the order of use."""
        with self._graphs.compiled_only():
            return compiled_warm_jobs(self)

    # -- the step -----------------------------------------------------------------------------

    @property
    def transcribes_user(self) -> bool:
        """Whether each frame carries the user's transcript (the model has a listener)."""
        return self._listen is not None

    def _encode(self, full: bool) -> Callable:
        """The encode graph: PersonaPlex's codebooks, or all the listener's."""
        if self._listen is None:
            return self._graphs.encode(full)
        return self._graphs.encode_all(full, self._listen.listener.quantizer)

    def _listen_step(self, codes: mx.array) -> tuple:
        """The STT on this frame's codes (all of the encode's): (text token, end-of-turn
        probabilities), lazy; () when the session does not transcribe."""
        if self._listen is None or not self.transcribe_steps:
            return ()
        heard = self._listen.step(codes)
        return heard.text_token, heard.end_of_turn

    def _with_rings(self, fn: Callable, *args: Any) -> Any:
        """Call a graph that takes the rings' states last and returns them last; put them back.

        The old buffers are then held by the lazy graph only, so that evaluating it writes them
        in place (anything else holding them would make every write copy a whole ring).
        """
        out, states = fn(*args, [c.state for c in self._caches])
        for cache, state in zip(self._caches, states, strict=True):
            cache.state = list(state)
        return out

    def step(self, pcm: np.ndarray) -> Frame:
        """Hear one 80 ms frame of the user (1920 float samples), return the agent's frame."""
        self._check_thread()
        pcm = float_audio(pcm, "A step's audio")
        if pcm.shape != (self.frame_size,):
            raise AudioInputError(
                f"A step takes one frame of {self.frame_size} samples, not {list(pcm.shape)}."
            )
        start = time.perf_counter()
        self._ahead = None  # built for `step_codes`
        window = step_window(self._caches)
        full = self.model.mimi.model.full_after(self._mimi_frames)
        pos = mx.array(self._caches[0].offset, dtype=mx.int32)
        timings = StepTimings()
        g = self._graphs
        io = None if self.measure_phases else self._io
        if self.measure_phases:
            out, codes, user, text, agent, stats, heard = step_phased(
                self, mx.array(pcm), pos, window, full, timings
            )
        else:
            frame_in = io.frame_in(pcm) if io is not None else mx.array(pcm)
            coded, self._enc_state = self._encode(full)(frame_in, self._enc_state)
            user = coded[: self._n_q]
            heard = self._listen_step(coded)
            if self.launch_early:  # no wait: the step's one wait is `_eval` (docs: §The live step)
                mx.async_eval(coded, self._enc_state, heard, self._listen_state())
            codes, text, agent, stats = self._take_lm(self._build_lm(user, window, pos))
            if self.launch_early:
                mx.async_eval(codes, text, agent, stats, self._key, [c.state for c in self._caches])
            out, self._dec_state = g.decode(full)(codes, self._dec_state)
            back = () if io is None else io.written_back(text, codes, user, out, heard)
            self._eval(out, codes, user, text, agent, stats, heard, back)
        advance(self._caches)
        self._mimi_frames += 1
        frame_text = self._text_host
        self._text, self._agent, self._user_acoustic = text, agent, user[1:]
        self._text_host = int(text.item()) if io is None else io.text()
        timings.total_ms = 1000 * (time.perf_counter() - start)
        if stats:
            self.last_stats = StepStats.read(stats)
        frame = Frame(
            index=self.frames,
            pcm=np.array(out) if io is None else io.pcm().reshape(np.shape(out)),
            text_id=frame_text,
            text=self.model.piece(frame_text),
            agent_codes=np.array(codes) if io is None else io.codes(),
            user_codes=np.array(user) if io is None else io.user(),
            timings=timings,
        )
        if heard:
            frame.user_text_id = int(heard[0].item()) if io is None else io.heard()
            frame.user_text = self._listen.listener.piece(frame.user_text_id)
            frame.end_of_turn = (
                tuple(float(p) for p in np.array(heard[1])) if io is None else io.end_of_turn()
            )
        self.frames += 1
        return frame

    def step_codes(self, user_codes: np.ndarray) -> tuple[int, np.ndarray]:
        """The LM alone: the user's 8 Mimi codes for one frame in, (text id, agent codes) out.

        For callers that run their own codec (and for benchmarking the LM step); it advances
        the same conversation as `step`, whose Mimi streams it does not touch. Through
        page-locked I/O, the next call's graph is built while the GPU runs this one.
        """
        self._check_thread()
        codes = codes_in_range(user_codes, self.model.lm.config.card, "The user's codes")
        if codes.shape != (self._n_q,):
            raise AudioInputError(
                f"A step takes the user's {self._n_q} codes, not an array of {list(codes.shape)}."
            )
        io = self._io
        offset = self._caches[0].offset
        built, self._ahead = self._ahead, None
        if built is not None and built.built_on(self._lm_basis(offset)):
            built.basis = None
            io.put_codes(codes)
            io.arm()
        else:
            user = mx.array(codes) if io is None else io.codes_in(codes)
            pos = mx.array(offset, dtype=mx.int32)
            built = self._written_back(self._build_lm(user, step_window(self._caches), pos))
        codes_out, text, agent, _ = self._take_lm(built)
        self._text, self._agent, self._user_acoustic = text, agent, built.user[1:]
        ahead = io is not None and self.polls_written and self.builds_ahead
        self._eval(codes_out, text, agent, built.back, then=self._build_next_lm if ahead else None)
        advance(self._caches)
        frame_text = self._text_host
        self._text_host = int(text.item()) if io is None else io.text()
        self.frames += 1
        return frame_text, np.array(codes_out) if io is None else io.codes()

    def _build_lm(self, user: mx.array, window: Window, pos: mx.array) -> BuiltLMStep:
        """The LM step graph on the session's state (lazy; the session is left as it was)."""
        fn = self._graphs.lm_step(self._spec, window)
        lm = (self._text, self._agent, self._user_acoustic)
        # copies: an eager graph writes the states it is given (the session's until taken)
        states = [list(c.state) for c in self._caches]
        (codes, text, agent, stats, key), states = fn(user, *lm, pos, self._key, states)
        return BuiltLMStep(user, (codes, text, agent, stats), key, states)

    def _take_lm(self, built: BuiltLMStep) -> tuple:
        """Make a built LM step the session's: its key and rings (the old buffers then held by
        its graph only, so that evaluating it writes them in place); (codes, text, agent, stats)."""
        self._key = built.key
        for cache, state in zip(self._caches, built.states, strict=True):
            cache.state = list(state)
        return built.outputs

    def _written_back(self, built: BuiltLMStep, *, arm: bool = True) -> BuiltLMStep:
        """`built` with the kernel that writes its tokens back through page-locked I/O (none
        without it); `arm`: lower the flag that kernel raises now, not at the launch."""
        if self._io is not None:
            codes, text = built.outputs[:2]
            built.back = self._io.written_back(text, codes, arm=arm)
        return built

    def _lm_basis(self, offset: int) -> tuple:
        """What an LM step at `offset` reads of the session: (offset, its graph, the arrays)."""
        fn = self._graphs.lm_step(self._spec, self._caches[0].window_at(offset))
        rings = (a for c in self._caches for a in c.state)
        return (offset, fn, self._text, self._agent, self._user_acoustic, self._key, *rings)

    def _build_next_lm(self) -> None:
        """Build the next `step_codes`' step and write-back (the step just launched has set the
        state it reads) on codes that the page-locked buffer holds when it runs. The write-back
        has this step's shapes, so this step's reads of the buffer are unchanged. It is a guess:
        if it fails, nothing is kept, and the next call builds its step itself (and raises
        there, before it changes anything, if it fails again)."""
        offset = self._caches[0].offset + 1
        try:
            basis = self._lm_basis(offset)
            window, pos = self._caches[0].window_at(offset), mx.array(offset, dtype=mx.int32)
            user = self._io.codes_later(self._n_q)
            built = self._written_back(self._build_lm(user, window, pos), arm=False)
            built.basis = basis
            self._ahead = built
        except Exception:
            self._ahead = None

    def _listen_state(self) -> list:
        """The STT stream's arrays a step updates (none without a listener)."""
        return self._listen.state_arrays() if self._listen is not None else []

    def _eval(self, *outputs: Any, then: Callable[[], None] | None = None) -> None:
        """The step's one wait. Through page-locked I/O the step is launched and its write-back
        polled for (`PinnedIO.wait_written`: no sleep until the driver's interrupt), its arrays
        left for the next step's graph; MLX waits for them if the polling gives up. `then` runs
        between the launch and the poll (while the GPU runs the step)."""
        arrays = (
            outputs,
            self._key,
            [c.state for c in self._caches],
            self._enc_state,
            self._dec_state,
            self._listen_state(),
        )
        if self._io is not None and self.polls_written:
            mx.async_eval(arrays)
            if then is not None:
                then()
            if self._io.wait_written():
                return
        mx.eval(arrays)
