"""The app-level conversation controller: `ConversationAPI` over the engine, the audio devices,
the turn-based and full-duplex controllers, the recording and the timing log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from model.conversation.prompts import CUSTOM_PROMPT
from model.errors import PersonaPlexError
from personaplex_tui.audio import UtteranceSegmenter
from personaplex_tui.conversation.audio_factory import AudioFactory, AudioRig
from personaplex_tui.conversation.config import (
    AUDIO_FIELDS,
    MODES,
    PROCESSING_FIELDS,
    ControllerConfig,
    Mode,
)
from personaplex_tui.conversation.duplex import DuplexController
from personaplex_tui.conversation.echo import EchoPath, echo_path
from personaplex_tui.conversation.recording import ConversationRecording
from personaplex_tui.conversation.run import RunContext, RunEnd, Telemetry, in_daemon_thread
from personaplex_tui.conversation.timing_log import TimingLog
from personaplex_tui.conversation.turn import TurnController
from personaplex_tui.engine import Engine, MemoryProbe, ModelLike
from personaplex_tui.errors import AppError
from personaplex_tui.events import (
    EngineError,
    EventSink,
    LoadProgress,
    ModelInfo,
    Notice,
    SessionStarted,
    StateChanged,
)

log = logging.getLogger(__name__)
ENGINE_ERROR = "A model step failed (the recording and transcript are kept)."
ENGINE_ERROR_HINT = "Press space to go on with this conversation, or r to start a new one."
Runner = TurnController | DuplexController
Loader = Callable[[Callable[[LoadProgress], None]], tuple[ModelLike, ModelInfo]]


class ConversationController:
    """Implements `personaplex_tui.events.ConversationAPI`; events go out through the engine's sink.

    One conversation *run* is active at a time: a `TurnController` (listening and replying) or a
    `DuplexController` (live). A run ends when asked, when the input file ends, when a device
    is lost or when a step fails; the session, the recording and the transcript survive it, and
    `toggle_talk` starts a new run (on the devices configured by then). Methods that change the
    conversation are serialized; `toggle_talk` is ignored while one of them is in progress.
    """

    def __init__(
        self,
        engine: Engine,
        config: ControllerConfig | None = None,
        *,
        audio: AudioFactory | None = None,
        segmenter_factory: Callable[[], UtteranceSegmenter] = UtteranceSegmenter,
        stall_s: float = 2.0,
        levels_hz: float = 15.0,
    ) -> None:
        self.engine = engine
        self.config = config if config is not None else ControllerConfig()
        self.telemetry = Telemetry(engine.emit, levels_hz)
        self._rig = AudioRig(audio)
        self._segmenter_factory = segmenter_factory
        self._segmenter: UtteranceSegmenter | None = None
        self._stall_s = stall_s
        self._lock = asyncio.Lock()
        self._loaded = False
        self._session_config: ControllerConfig | None = None  # what the live session was made with
        self._sessions = 0
        self.recording: ConversationRecording | None = None
        self._closing: ConversationRecording | None = None  # the one being closed (`abandon`)
        self.file_problems: list[str] = []  # kept recordings cut short, for after the screen
        self._timing_log: TimingLog | None = None
        self.runner: Runner | None = None
        self._echo: EchoPath | None = None
        self._echo_warned = False
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    # -- ConversationAPI -----------------------------------------------------------------
    async def start(self) -> None:
        """Load the model (progress events), warm up, start a session and listen in the
        configured mode. Awaits all of that (seconds to minutes): run it as a task. Settings
        applied meanwhile (another device chosen while the model loads) wait for the lock, and
        are applied before the run starts: the lock is let go in between."""
        async with self._lock:
            if self.closed or self.runner is not None:
                return
            if not self._loaded:
                if await self.engine.load() is None or self.closed:
                    return
                settings = self.config.session
                if await self.engine.warm_up(settings=settings) is None or self.closed:
                    return
                self._loaded = True
            if self._session_config is None and not await self._new_session():
                return
        async with self._lock:  # (after those waiting for it: asyncio's lock is first come)
            if not self.closed and self.runner is None:
                await self._start_run()

    async def toggle_talk(self) -> None:
        """Space. Turn-based: push-to-talk while listening, interrupt while replying.
        Duplex: start or stop the live conversation. Either mode: after a run ended (a lost
        device, the end of the input file, an error) start a new one."""
        if self.closed or self._session_config is None:
            return
        runner = self.runner
        if isinstance(runner, TurnController):
            await runner.press()
            return
        if self._lock.locked():
            return
        async with self._lock:
            if self.runner is not None:
                await self._stop_run()
            else:
                await self._start_run()

    async def set_mode(self, mode: Mode) -> None:
        """Switch between "turn" and "duplex"; a running conversation goes on in the new mode."""
        async with self._lock:
            if mode not in MODES:
                self._error(f"The mode must be 'turn' or 'duplex', not '{mode}'.", "SettingsError")
                return
            if mode == self.config.mode:
                return
            running = self.runner is not None
            await self._stop_run()
            self.config = replace(self.config, mode=mode)
            self._note(f"mode: {mode}")
            if running:
                await self._start_run()

    async def reset(self) -> None:
        """A new session with the current voice, prompt and sampling (and a new recording)."""
        async with self._lock:
            if self.closed:
                return
            running = self.runner is not None
            await self._stop_run()
            if not self._loaded:
                return  # start() will use the settings
            await self.engine.stop()
            self.telemetry.meters.reset()
            if await self._new_session() and running:
                await self._start_run()

    async def apply_settings(self, settings: object) -> bool:
        """Take any object with ControllerConfig's attribute names. Echo suppression and the
        reply length apply at the next frame; devices, files and mode at once (a running
        conversation is restarted on them); the timing log at once. Returns True while voice,
        prompt, sampling or the record folder differ from the live session's: a reset applies them."""
        async with self._lock:
            try:
                new = ControllerConfig.from_settings(settings, self.config)
            except (PersonaPlexError, AppError) as e:
                self._error(str(e), type(e).__name__)
                return self._reset_pending()
            changed = self.config.changed(new)
            restart = self.runner is not None and bool(
                changed & (AUDIO_FIELDS | PROCESSING_FIELDS | {"mode"})
            )
            if restart:
                await self._stop_run()
            self.config = new
            if "timing_log" in changed and self._session_config is not None:
                self._open_timing_log()
            if "mode" in changed:
                self._note(f"mode: {new.mode}")
            if restart:
                await self._start_run()
            return self._reset_pending()

    async def save_recording(self) -> str:
        """Write everything recorded so far (mic and agent WAVs, transcript); returns the folder
        ("" when there is nothing to save). With continuous recording on that is the live
        folder, flushed; otherwise a snapshot copy in a new folder under `config.save_root()`."""
        async with self._lock:  # not while a reset swaps the recording
            recording = self.recording
            if recording is None:
                self.engine.emit(Notice("Nothing has been recorded yet.", "warning"))
                return ""
            try:
                folder = await asyncio.to_thread(recording.save, self.config.save_root())
            except (PersonaPlexError, AppError) as e:
                self.engine.emit(EngineError(str(e), type(e).__name__))
                return ""
        self.engine.emit(Notice(f"Saved the recording in {folder}."))
        return str(folder)

    async def shutdown(self) -> None:
        """Stop the conversation and the engine, finish every file; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.engine.abort()  # a load in progress (a download) ends at its next progress report
        async with self._lock:
            try:
                await self._stop_run()
            finally:
                try:
                    await asyncio.to_thread(self._rig.close)
                finally:
                    await self._finish_recording()
                    if self._timing_log is not None:
                        self._timing_log.close()
                    await self.engine.close()

    def abandon(self, reason: str) -> None:
        """The process leaves without waiting for `shutdown`, which did not finish (any
        thread): the open transcript gets its `end` entry with `reason`, if it can be had
        at once (a stuck thread may hold it)."""
        recording = self.recording or self._closing
        if recording is not None and not recording.abandon(reason):
            log.warning("no end for the transcript in %s: a thread holds it", recording.folder)

    # -- state for the UI and tests ------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.runner is not None

    @property
    def mode(self) -> Mode:
        return self.config.mode

    # -- runs ----------------------------------------------------------------------------
    async def _start_run(self) -> bool:
        if self.runner is not None or self.recording is None or self.closed:
            return False
        try:
            # a daemon thread: opening a FIFO that no one writes blocks in the system for good,
            # and must not keep the process alive once the user quits
            mic, speaker = await in_daemon_thread(self._rig.acquire, self.config)
            segmenter = await self._turn_segmenter() if self.config.mode == "turn" else None
        except (PersonaPlexError, AppError) as e:
            await asyncio.to_thread(self._rig.release)
            self._error(str(e), type(e).__name__)
            return False
        file_warning = getattr(mic, "file_warning", None) if self._rig.fresh_mic else None
        if file_warning:  # cut short or damaged (a pipe: read now, not before the screen)
            self.engine.emit(Notice(file_warning, "warning"))
            self._note(file_warning)
        path, problem = await asyncio.to_thread(echo_path, mic, speaker, self.config)
        if problem and not self._echo_warned:
            self._echo_warned = True
            self.engine.emit(Notice(problem, "warning"))
            self._note(problem, "error")
        self._echo = path
        self.telemetry.echo = lambda: path.stats(self._live_config())
        ctx = RunContext(
            engine=self.engine,
            mic=path.mic,
            speaker=path.speaker,
            recording=self.recording,
            telemetry=self.telemetry,
            config=self._live_config,
            timing_log=self._timing_log,
            stall_s=self._stall_s,
            fresh_mic=self._rig.fresh_mic,
        )
        runner: Runner = (
            DuplexController(ctx) if segmenter is None else TurnController(ctx, segmenter)
        )
        self.runner = runner
        self._task = asyncio.create_task(self._run(runner), name=f"ppx-{runner.mode}")
        return True

    async def _run(self, runner: Runner) -> None:
        try:
            end = await runner.run()
        except Exception as exc:  # a bug must not lose the recording nor the app
            log.exception("the conversation failed")
            end = RunEnd("failed", f"The conversation stopped after an unexpected error: {exc}.")
            try:
                await self.engine.stop()
            except RuntimeError:  # the engine is already closed
                pass
        try:
            if self._echo is not None:
                await asyncio.to_thread(self._echo.close)
            if self.recording is not None:
                self.recording.align()
                self.recording.flush()
            await asyncio.to_thread(self._rig.release)
        finally:
            if self.runner is runner:
                self.runner, self._task = None, None
            try:
                self._report(end)
            except Exception as exc:  # whoever waits for the run's end must hear of it
                log.exception("reporting the end of the run failed")
                message = f"The conversation stopped after an unexpected error: {exc}."
                self.engine.emit(EngineError(message, type(exc).__name__))
                self.engine.emit(StateChanged("error", message))

    def _live_config(self) -> ControllerConfig:
        """The settings a run reads at every frame: mute-while-speaking stands in for the echo
        canceller when its library could not load."""
        echo = self._echo
        if echo is not None and echo.fallback and not self.config.echo_suppression:
            return replace(self.config, echo_suppression=True)
        return self.config

    async def _stop_run(self) -> None:
        runner, task = self.runner, self._task
        if runner is None:
            return
        await runner.stop()
        if task is not None:
            await task

    def _report(self, end: RunEnd) -> None:
        if end.reason == "stopped":
            self.engine.emit(StateChanged("ready"))
        elif end.reason == "input_ended":
            self.engine.emit(Notice(end.message))
            self._note(end.message)
            self.engine.emit(StateChanged("ready", end.message))
        elif end.reason == "engine_error":  # the engine reported the error itself
            self._note("A model step failed; the conversation stopped.", "error")
            self.engine.emit(Notice(ENGINE_ERROR, "warning", ENGINE_ERROR_HINT))
        else:
            kind = "AudioDeviceError" if end.reason.endswith("_lost") else "RuntimeError"
            self._error(end.message, kind, end.hint)

    async def _turn_segmenter(self) -> UtteranceSegmenter:
        if self._segmenter is None:
            self._segmenter = await asyncio.to_thread(self._segmenter_factory)
        return self._segmenter

    # -- session, recording, log ---------------------------------------------------------
    async def _new_session(self) -> bool:
        if not await self.engine.new_session(self.config.session):
            return False
        await self._finish_recording()
        c, s = self.config, self.config.session
        details = {
            "model": self.engine.info.source if self.engine.info else "",
            "voice": s.voice,
            "prompt": s.system_prompt if s.prompt == CUSTOM_PROMPT else s.prompt,
            "mode": c.mode,
            "seed": s.seed,
        }
        self.recording = await asyncio.to_thread(
            ConversationRecording.begin, c.record_dir, details, self._recording_problem
        )
        if self._session_config is None and self._timing_log is None:
            self._open_timing_log()  # the first session (start, or a reset after it failed)
        self._session_config = c
        self._sessions += 1
        # After every event of the previous session (the engine is idle): the screen starts
        # the new conversation where the files do.
        self.engine.emit(SessionStarted(self._sessions))
        return True

    async def _finish_recording(self) -> None:
        recording, self.recording = self.recording, None
        if recording is not None:
            self._closing = recording
            kept = await asyncio.to_thread(recording.close)
            self._closing = None
            if kept is not None:
                self.engine.emit(Notice(f"The recording is in {kept}."))
            if not recording.temporary and recording.failure is not None:
                self.file_problems.append(recording.failure_sentence())

    def _recording_problem(self, message: str) -> None:
        self.engine.emit(Notice(message, "warning"))  # from any thread

    def _open_timing_log(self) -> None:
        if self._timing_log is not None:
            self._timing_log.close()
            self._timing_log = None
        if self.config.timing_log:
            try:
                self._timing_log = TimingLog(self.config.timing_log, self._recording_problem)
            except (PersonaPlexError, AppError) as e:
                self._error(str(e), type(e).__name__)

    def _reset_pending(self) -> bool:
        live = self._session_config
        if live is None:
            return False
        return live.session != self.config.session or live.record_dir != self.config.record_dir

    # -- messages ------------------------------------------------------------------------
    def _note(self, text: str, kind: str = "note") -> None:
        if self.recording is not None:
            self.recording.transcript.note(self.recording.position_s, text, kind)

    def _error(self, message: str, kind: str, hint: str = "") -> None:
        """Report a failure: the error with its key hint; the state and the transcript's note
        get the sentence alone (no keys act there)."""
        self.engine.emit(EngineError(message, kind, hint))
        self.engine.emit(StateChanged("error", message))
        self._note(message, "error")


def create_conversation(
    loader: Loader,
    sink: EventSink,
    config: ControllerConfig | None = None,
    *,
    audio: AudioFactory | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    memory_probe: MemoryProbe | None = None,
    release: Callable[[], None] | None = None,
    **options: Any,
) -> ConversationController:
    """An `Engine` on `loader` wired to `sink`, and the controller over it.

    `loader(progress)` runs on the engine thread, may call `progress(LoadProgress(...))`, and
    returns `(model, ModelInfo)` where `model.session(SessionSettings)` makes a session.
    `memory_probe()` runs on the engine thread now and then (`MemoryUsage` events), `release()`
    last on it when the engine closes (e.g. `model_loader.release_mlx_thread`).
    `options` go to `ConversationController` (`segmenter_factory`, `stall_s`, `levels_hz`)."""
    engine = Engine(loader, sink, loop=loop, memory_probe=memory_probe, release=release)
    return ConversationController(engine, config, audio=audio, **options)
