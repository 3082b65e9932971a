"""The inference core: one dedicated thread owns MLX and the model; asyncio calls in, events come out.

MLX is not safe across threads, so everything that touches the model runs on the engine's
single worker thread. The asyncio side awaits `Engine` methods; per-frame results are handed to a
callback on the engine thread (e.g. the audio player, which is thread-safe) and reported as
events on the event loop. Generation is cancelled between steps, so `stop()` takes effect within
one step. An exception in the engine becomes an `EngineError` event and the engine stays usable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import numpy as np

from model.config import FRAME_SAMPLES, SamplingConfig
from model.conversation.session_settings import SessionSettings
from model.errors import PersonaPlexError
from personaplex_tui import jit_workers
from personaplex_tui.errors import AppError
from personaplex_tui.events import (
    EngineError,
    EngineEvent,
    EventSink,
    FrameOut,
    LoadProgress,
    MemoryUsage,
    ModelInfo,
    StateChanged,
    StepTiming,
    TextOut,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_RUN_NOTE = "first run here: compiling the GPU kernels (minutes, once)"
DEFERRED_NOTE = "ready on uncompiled graphs; the compiled ones follow once their kernels are built"
MemoryProbe = Callable[[], MemoryUsage | None]
WarmProgress = Callable[[int, int, str], None]  # (done, total, graph name): `Session.warm_up`'s


class SessionLike(Protocol):
    """What the engine needs of `model.Session`."""

    def step(self, pcm: np.ndarray) -> Any: ...

    def reset(self) -> None: ...


class ModelLike(Protocol):
    """What the engine needs of a loaded `model.PersonaPlex`."""

    def session(self, settings: SessionSettings) -> SessionLike: ...


def _compile_ahead(session: SessionLike, progress: WarmProgress, defer: bool = False) -> None:
    """`Session.warm_up(progress)`: compile the step graphs of every attention window (those
    the model has not built yet) before the user talks; `defer`: step eagerly instead until
    `_compile_between_steps` has compiled them (a fresh GPU whose JIT helpers are at work)."""
    warm_up = getattr(session, "warm_up", None)
    if warm_up is not None:
        warm_up(progress, defer=defer)


class Cancelled(Exception):
    """Generation was stopped between two steps."""


class Engine:
    """Owns the model on one thread; every public coroutine is safe to call from the event loop.

    `memory_probe()`, when given, runs on the engine thread after loading, warm-up and a new
    session, and every `memory_every_s` while generating; its `MemoryUsage` goes out as an event.
    `release()`, when given, runs last on the engine thread when the engine closes: it frees
    what the thread holds (MLX's per-thread streams).
    """

    def __init__(
        self,
        loader: Callable[[Callable[[LoadProgress], None]], tuple[ModelLike, ModelInfo]],
        sink: EventSink,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        memory_probe: MemoryProbe | None = None,
        memory_every_s: float = 1.0,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._loader = loader
        self._sink = sink
        self._loop = loop
        self._memory_probe = memory_probe
        self._memory_every_s = memory_every_s
        self._memory_at = float("-inf")
        self._release = release
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ppx-engine")
        self._cancel = threading.Event()
        self._aborted = False  # shutting down: the cancel stays set
        self.model: ModelLike | None = None
        self.info: ModelInfo | None = None
        self.session: SessionLike | None = None
        self.settings = SessionSettings()  # those of the next session
        self.thread_ident: int | None = None
        self.frames_out = 0
        # Every `phase_every`-th step is timed phase by phase (Mimi encode, temporal, depformer,
        # Mimi decode) for the timing panel; the others run as one fused graph.
        self.phase_every = 25
        self._closed = False

    # -- plumbing -----------------------------------------------------------------------------

    def emit(self, event: EngineEvent) -> None:
        """Deliver an event on the event loop (callable from any thread)."""
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return
        loop = self._loop
        if loop.is_closed():
            return
        try:
            if self._on_loop_thread(loop):
                self._sink(event)
            else:
                loop.call_soon_threadsafe(self._sink, event)
        except RuntimeError:  # loop closed while shutting down
            pass

    @staticmethod
    def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the engine thread and await its result."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._executor, self._guarded, fn, args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the engine thread from another thread (never the event loop's)
        and return its result; for a worker that feeds the model frame by frame."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        return self._executor.submit(self._guarded, fn, args).result()

    def _guarded(self, fn: Callable[..., T], args: tuple) -> T:
        self.thread_ident = threading.get_ident()
        return fn(*args)

    def _warm_progress(self, done: int, total: int, name: str) -> None:
        """A `Session.warm_up` progress report (engine thread) as a LoadProgress event; nothing
        when every graph was compiled already."""
        if total == 0:
            return
        graphs = "graph" if total == 1 else "graphs"
        message = (
            f"compiling {name} ({done}/{total})" if done < total else f"compiled {total} {graphs}"
        )
        self.emit(LoadProgress("warm_up", message, done_count=done, total_count=total))

    def _report_memory(self, force: bool = False) -> None:
        """Send a MemoryUsage event (engine thread), at most every `memory_every_s` unless forced."""
        if self._memory_probe is None:
            return
        now = time.monotonic()
        if not force and now - self._memory_at < self._memory_every_s:
            return
        self._memory_at = now
        try:
            usage = self._memory_probe()
        except Exception:  # a probe must never stop the model
            log.exception("the memory probe failed")
            self._memory_probe = None
            return
        if usage is not None:
            self.emit(usage)

    async def _run_reporting(self, fn: Callable[..., T], *args: Any) -> T | None:
        """Like `run`, but a failure becomes an EngineError event and `None`."""
        try:
            return await self.run(fn, *args)
        except Cancelled:
            return None
        except Exception as exc:  # the engine must survive anything a step throws
            # a user's mistake: its sentence says it all
            if isinstance(exc, (PersonaPlexError, AppError)):
                message = str(exc)
                log.warning("engine operation failed: %s", message)
            else:
                message = f"The model failed: {exc}"
                log.exception("engine operation failed")
            self.emit(EngineError(message=message, kind=type(exc).__name__))
            self.emit(StateChanged("error", message))
            return None

    # -- lifecycle ----------------------------------------------------------------------------

    async def load(self) -> ModelInfo | None:
        """Load the model (progress events on the way)."""
        self.emit(StateChanged("loading"))

        def progress(event: LoadProgress) -> None:
            if self._cancel.is_set():  # a download stops at its next progress report
                raise Cancelled
            self.emit(event)

        def work() -> tuple[ModelLike, ModelInfo]:
            loaded = self._loader(progress)
            self._report_memory(force=True)
            return loaded

        result = await self._run_reporting(work)
        if result is None:
            return None
        self.model, self.info = result
        self.emit(self.info)
        return self.info

    async def warm_up(
        self, steps: int = 3, settings: SessionSettings | None = None
    ) -> float | None:
        """Compile every step graph and run a throwaway session for a few steps, before the user
        talks. The graphs belong to the model: later sessions (and resets) reuse them.

        The throwaway session has the given (else the current) settings: those the conversation
        will use, so a checkpoint without the default voice warms up too."""
        if settings is not None:
            self.settings = settings
        self.emit(StateChanged("warming_up"))
        first_run = self.info is not None and self.info.compiles_kernels
        detail = FIRST_RUN_NOTE if first_run else f"{steps} steps of silence on a throwaway session"
        self.emit(LoadProgress("warm_up", detail))

        def work() -> float:
            start = time.perf_counter()
            session = self._require_model().session(self.settings)
            self._warm(session)
            silence = np.zeros(FRAME_SAMPLES, np.float32)
            for _ in range(steps):
                session.step(silence)
            self._report_memory(force=True)
            return time.perf_counter() - start

        return await self._run_reporting(work)

    async def new_session(self, settings: SessionSettings | None = None) -> bool:
        """Start a fresh session (prompt prefill) with the given or current settings."""
        if settings is not None:
            self.settings = settings
        s = self.settings
        self.emit(LoadProgress("prompt", f"voice {s.voice}, prompt {s.prompt}"))

        def work() -> bool:
            self.session = self._require_model().session(s)
            # Every step graph these settings need (the warm-up built those of the settings it
            # ran with), now: none is compiled mid-conversation.
            self._warm(self.session)
            self.frames_out = 0
            self._report_memory(force=True)
            return True

        ok = await self._run_reporting(work)
        if ok:
            self.emit(StateChanged("ready"))
        return bool(ok)

    async def reset(self) -> bool:
        """Forget the conversation: a new session with the current settings."""
        await self.stop()
        return await self.new_session()

    async def stop(self) -> None:
        """Stop generation within one step and wait until the engine is idle."""
        self._cancel.set()
        try:
            await self.run(lambda: None)
        finally:
            if not self._aborted:
                self._cancel.clear()

    def abort(self) -> None:
        """From any thread, when shutting down: whatever runs stops at its next step or
        progress report (a download too), and nothing runs any more."""
        self._aborted = True
        self._cancel.set()

    async def close(self) -> None:
        """Stop and release the engine thread; safe to call twice."""
        if self._closed:
            return
        self.abort()
        try:
            if self._release is not None:
                await self.run(self._release_thread)
        finally:
            self._closed = True
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    def _release_thread(self) -> None:
        """Last, on the engine thread: free what the thread holds (the model stays readable)."""
        assert self._release is not None
        try:
            self._release()
        except Exception:  # closing must not fail
            log.exception("releasing the engine thread failed")

    # -- generation ---------------------------------------------------------------------------

    async def generate(
        self,
        frames: Iterable[np.ndarray | None],
        on_frame: Callable[[Any], float | None] | None = None,
        *,
        quiet_steps: int = 0,
        keep: bool = True,
    ) -> list[Any] | None:
        """Step the session once per user frame; `on_frame(frame)` runs on the engine thread and
        may return the frame's time on the conversation's timeline (the recording's), which its
        TextOut event then carries.

        `frames` is consumed on the engine thread (it may block, e.g. on the microphone);
        a `None` item ends the run. The first `quiet_steps` frames are stepped and timed but
        not reported as FrameOut/TextOut (a turn-based utterance: the model listens, and what
        it produces meanwhile is never played). Returns the frames produced (an empty list when
        `keep` is False: an endless duplex run must not hold every frame), or None if it failed.
        """
        if not self._aborted:
            self._cancel.clear()
        return await self._run_reporting(self._generate, iter(frames), on_frame, quiet_steps, keep)

    def _generate(
        self,
        frames: Iterator[np.ndarray | None],
        on_frame: Callable[[Any], float | None] | None,
        quiet_steps: int = 0,
        keep: bool = True,
    ) -> list[Any]:
        session = self._require_session()
        produced: list[Any] = []
        steps = 0
        for pcm in frames:
            if pcm is None or self._cancel.is_set():
                break
            frame = self._step(session, pcm, steps)
            index = self.frames_out
            self.frames_out += 1
            steps += 1
            if keep:
                produced.append(frame)
            when = on_frame(frame) if on_frame is not None else None
            self._report(index, frame, heard=steps > quiet_steps, t=when)
            self._report_memory()
            self._compile_between_steps(session)
            if self._cancel.is_set():
                break
        return produced

    def _warm(self, session: SessionLike) -> None:
        """Compile `session`'s step graphs now, or defer them (`_defer_compile`)."""
        defer = self._defer_compile(session)
        if defer:
            self.emit(LoadProgress("warm_up", DEFERRED_NOTE))
        _compile_ahead(session, self._warm_progress, defer)

    def _defer_compile(self, session: SessionLike) -> bool:
        """Whether `session` may talk on eager graphs while the JIT helpers compile: they are
        at work (a fresh GPU) and compile this session's graphs (those of the sampling the
        loader gave them, else of the checkpoint's default; other settings bake other constants
        into the LM step's kernels, which would then compile mid-conversation)."""
        if not jit_workers.defer_compile():
            return False
        sampling = getattr(session, "sampling", None)
        named = jit_workers.helpers_sampling()
        if named is not None:
            return sampling == SamplingConfig(**named)
        defaults = getattr(self.model, "default_settings", None)
        return defaults is not None and sampling is not None and sampling == defaults().sampling

    def _compile_between_steps(self, session: SessionLike) -> None:
        """After a deferred warm-up: once the helpers are done (every kernel on disk), warm up
        one compiled step graph per step (tens of ms; the pre-buffer absorbs it). If one failed,
        this session stays eager (its modules would compile mid-conversation, seconds each):
        the next session's warm-up compiles them before it starts."""
        if not getattr(session, "steps_eagerly", False) or jit_workers.helpers_running():
            return
        if not jit_workers.helpers_failed():
            start = time.perf_counter()
            name = session.compile_next()  # type: ignore[attr-defined]
            log.info(
                "compiled %s between steps in %.0f ms", name, 1000 * (time.perf_counter() - start)
            )

    def _step(self, session: SessionLike, pcm: np.ndarray, steps: int) -> Any:
        every = self.phase_every
        if not every or steps % every != every - 1 or not hasattr(session, "measure_phases"):
            return session.step(pcm)
        before = session.measure_phases
        session.measure_phases = True
        try:
            return session.step(pcm)
        finally:
            session.measure_phases = before

    def _report(self, index: int, frame: Any, heard: bool = True, t: float | None = None) -> None:
        if heard:
            self.emit(FrameOut(index=index))
            if frame.text:
                when = float(t) if isinstance(t, (int, float)) else None
                self.emit(TextOut(index=index, text=frame.text, t=when))
        t = frame.timings
        self.emit(
            StepTiming(
                index=index,
                total_ms=t.total_ms,
                encode_ms=t.encode_ms,
                temporal_ms=t.temporal_ms,
                depformer_ms=t.depformer_ms,
                decode_ms=t.decode_ms,
            )
        )

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- helpers ------------------------------------------------------------------------------

    def _require_model(self) -> ModelLike:
        if self.model is None:
            raise PersonaPlexError("No model is loaded yet.")
        return self.model

    def _require_session(self) -> SessionLike:
        if self.session is None:
            raise PersonaPlexError("No conversation session has been started.")
        return self.session
