"""What both controllers share during a run: the audio, the recording, meters, and how a run ends."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from personaplex_tui.audio import FRAME_SAMPLES, AudioInput, AudioOutput, LevelMeters
from personaplex_tui.conversation.audio_factory import device_alive
from personaplex_tui.conversation.config import ControllerConfig
from personaplex_tui.conversation.recording import ConversationRecording
from personaplex_tui.conversation.timing_log import TimingLog
from personaplex_tui.engine import Engine
from personaplex_tui.events import EchoStats, EventSink, Notice

EndReason = Literal[
    "stopped",  # asked to stop (space in duplex, mode switch, reset, shutdown)
    "input_ended",  # the input file was played to its end
    "input_lost",  # the input device stopped delivering audio
    "output_lost",  # the output device stopped playing
    "engine_error",  # a step failed (the engine already reported it)
    "failed",  # anything else (a bug): reported with its message
]

SILENCE = np.zeros(FRAME_SAMPLES, np.float32)
SILENCE.flags.writeable = False


@dataclass(frozen=True)
class RunEnd:
    """Why a run ended, the sentence to show the user (empty when there is nothing to say) and
    what the chat's keys can do about it (shown after the sentence where there are keys)."""

    reason: EndReason
    message: str = ""
    hint: str = ""


def input_lost(mic: AudioInput) -> RunEnd:
    return RunEnd(
        "input_lost",
        f"The input device '{mic.device_name}' stopped delivering audio (unplugged, or its sound "
        "server quit or restarted?).",
        "Choose another input device and press space to go on.",
    )


def output_lost(speaker: AudioOutput) -> RunEnd:
    failure = getattr(speaker, "failure", "")  # a file stand-in says why it stopped
    if failure:
        return RunEnd(
            "output_lost",
            f"{failure.rstrip('.')}.",
            "Choose another output and press space to go on.",
        )
    return RunEnd(
        "output_lost",
        f"The output device '{speaker.device_name}' stopped playing (unplugged, or its sound "
        "server quit or restarted?).",
        "Choose another output device and press space to go on.",
    )


@dataclass
class RunContext:
    """The pieces a controller joins for one run; `config()` returns the live settings, so
    echo suppression and the reply length can change between frames."""

    engine: Engine
    mic: AudioInput
    speaker: AudioOutput
    recording: ConversationRecording
    telemetry: Telemetry
    config: Callable[[], ControllerConfig]
    timing_log: TimingLog | None = None
    fresh_mic: bool = True  # the mic was opened for this run (nothing stale is queued)
    stall_s: float = 2.0  # a device mic silent this long counts as lost
    # ... and before a run's first frame: a stream may take seconds to start (2.03 s measured for
    # PulseAudio reopened right after a close; Bluetooth headsets switching profile take longer)
    start_s: float = 10.0
    poll_s: float = 0.1  # how often a blocked mic read checks for a stop

    def emit(self, event: object) -> None:
        self.engine.emit(event)  # type: ignore[arg-type]


def raw_frame(mic: AudioInput, pcm: np.ndarray) -> np.ndarray:
    """The frame as the microphone captured it, before echo cancellation (`pcm` itself when
    nothing processed it)."""
    raw = getattr(mic, "last_raw", None)
    return pcm if raw is None or len(raw) != len(pcm) else raw


T = TypeVar("T")

# Frames (or polls of the mic) this much apart: the process itself was paused (a real-time
# conversation reads a frame every 80 ms, a poll returns within `poll_s`)
PAUSED_S = 1.0
# ... and it was not busy meanwhile: the process's CPU time (all threads) grew by less than this
# share of the gap. A step slow on the CPU (a 7B on a laptop's CPU, a first compile) uses the
# CPU all along; a process stopped by SIGSTOP or a debugger, or starved by others, does not.
PAUSED_CPU_SHARE = 0.5


def paced(mic: Any) -> bool:
    """Whether `mic` delivers frames as time passes (a device, a real-time file stand-in), not
    as fast as it is read (a file read ahead, whose frames would all be used up meanwhile)."""
    while mic is not None:
        if hasattr(mic, "realtime"):
            return bool(mic.realtime)
        mic = getattr(mic, "inner", None)
    return True


def pause_note(paused_s: float) -> str:
    """What the transcript and the user are told of a pause of the process."""
    return (
        f"ppx-tui was paused for {paused_s:.1f} s (stopped by a signal or a debugger, or "
        "kept off the CPU by a busy machine); nothing said meanwhile was heard."
    )


class MicReader:
    """Reads frames for a run and tells apart a stop, the end of a file and a lost device.

    `read()` blocks at most `poll_s` at a time, so a stop request is seen within that; it
    returns None when the run must end, with the reason in `end`.

    Frames or polls `PAUSED_S` apart or more (time.monotonic, across `read` calls: the process
    may be stopped during a step, and the mic may have a frame waiting when it goes on) mean
    this process was paused (SIGSTOP, Ctrl+Z, a debugger), or stepped slowly, not the device:
    the stream gets the patience of a start again. If the process did not run meanwhile (its CPU
    time grew by under `PAUSED_CPU_SHARE` of the gap: not a slow step) and the mic delivers in
    real time, the transcript gets a `pause` note where the pause began (the end of the mic's
    track) and the user a `Notice`.
    """

    def __init__(self, ctx: RunContext, should_stop: Callable[[], bool]) -> None:
        self.ctx = ctx
        self.should_stop = should_stop
        self.end: RunEnd | None = None
        self.frames = 0
        self._alive: float | None = None  # when a frame or a poll last returned
        self._alive_cpu = 0.0  # the process's CPU time then

    def read(self) -> np.ndarray | None:
        mic = self.ctx.mic
        waited_since = time.monotonic()
        if self._alive is None:
            self._alive, self._alive_cpu = waited_since, time.process_time()
        patience = self.ctx.stall_s if self.frames else max(self.ctx.stall_s, self.ctx.start_s)
        while True:
            if self.should_stop():
                self.end = RunEnd("stopped")
                return None
            pcm = mic.read_frame(timeout=self.ctx.poll_s)
            now = time.monotonic()
            paused = self._went_on(now)
            if pcm is not None:
                self.frames += 1
                return pcm
            if mic.finished:
                self.end = RunEnd("input_ended", f"The input file {mic.device_name} has ended.")
                return None
            if paused:  # the device was not lost: give its stream the patience of a start again
                waited_since = now
                patience = max(self.ctx.stall_s, self.ctx.start_s)
            if not device_alive(mic) or now - waited_since > patience:
                self.end = input_lost(mic)
                return None

    def _went_on(self, now: float) -> bool:
        """A frame or a poll returned at `now`; True (and the pause said) when the process had
        been paused since the last one."""
        cpu = time.process_time()
        gap = now - (self._alive if self._alive is not None else now)
        busy = cpu - self._alive_cpu
        self._alive, self._alive_cpu = now, cpu
        if gap < PAUSED_S:
            return False
        # (a slow step is not a pause; a file read ahead lost nothing: it waited)
        if busy < PAUSED_CPU_SHARE * gap and paced(self.ctx.mic):
            message = pause_note(gap)
            recording = self.ctx.recording
            recording.transcript.note(recording.mic_s, message, "pause")
            self.ctx.emit(Notice(message, in_transcript=True))
        return True


class Telemetry:
    """Level meters for the mic and the agent plus the player's state, as `Levels` and
    `PlaybackStats` events at most `rate_hz` times a second (fed from the engine or listening
    thread, never from an audio callback)."""

    def __init__(self, sink: EventSink, rate_hz: float = 15.0) -> None:
        self.sink = sink
        self.meters = LevelMeters()
        self.interval_s = 1.0 / rate_hz
        self._last = -1e9
        self.speaker: AudioOutput | None = None
        self.echo: Callable[[], EchoStats] | None = None  # how the mic is kept free of echo

    def frame(
        self,
        mic: np.ndarray | None,
        agent: np.ndarray | None,
        mic_clipped: int | None = None,
        agent_clipped: int | None = None,
    ) -> None:
        """One 80 ms frame went by: what the user said and what the agent said (None = silence).
        `mic_clipped`, the mic's samples at full scale behind it as its device or file gave them
        (`echo_metrics.frame_clipped`), lights the mic's clipping flag; `agent_clipped`, those
        at full scale or past it that the speaker was given for `agent` (after resampling,
        `echo_metrics.played_clipped`), the agent's. None: the frame itself decides."""
        clipped = None if mic_clipped is None else mic_clipped > 0
        self.meters.update_mic(SILENCE if mic is None else mic, clipped)
        clipped = None if agent_clipped is None else agent_clipped > 0
        self.meters.update_agent(SILENCE if agent is None else agent, clipped)
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self.report()

    def report(self) -> None:
        """Send the current levels and playback state now."""
        self.sink(self.meters.snapshot())
        if self.speaker is not None:
            self.sink(self.speaker.stats())
        if self.echo is not None:
            self.sink(self.echo())


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread` on a daemon thread of its own: a call that may block in the system
    for good (opening a FIFO no one writes to) does not keep the process alive at exit, as a
    worker of the default executor would (the chat quit, then hung)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile (the conversation shut down)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name=f"ppx-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return await future
