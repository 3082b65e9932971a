"""Full duplex: one model step per captured mic frame, the agent's audio straight to the speaker.

The microphone is the clock. On the engine thread, each frame read from the mic is recorded,
metered (after echo cancellation, when on; the raw and the processed frame are both recorded),
replaced by silence while the agent is audible (echo suppression, when on) and stepped
through the session; each agent frame goes to the speaker's player (3-frame pre-buffer), the
recording, the meters, the transcript and the timing log. The model decides when to talk.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from personaplex_tui.audio import EchoSuppressor
from personaplex_tui.audio.echo_metrics import frame_clipped, played_clipped
from personaplex_tui.conversation.audio_factory import device_alive
from personaplex_tui.conversation.run import (
    MicReader,
    RunContext,
    RunEnd,
    output_lost,
    raw_frame,
)
from personaplex_tui.conversation.user_lane import UserLane
from personaplex_tui.events import StateChanged

DRAIN_TIMEOUT_S = 5.0


class DuplexController:
    """Runs a live conversation until stopped, the input ends, a device is lost or a step fails."""

    mode = "duplex"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._end: RunEnd | None = None
        self._reader = MicReader(ctx, self._halted)
        self._echo = EchoSuppressor(ctx.speaker.audible, ctx.config().echo_suppression)
        self._mic: np.ndarray | None = None
        self._mic_clipped = 0  # its samples at full scale as the device or file gave them
        self.steps = 0
        self.user_lane = UserLane(ctx.emit, lambda: ctx.recording.transcript)

    def _halted(self) -> bool:
        return self._stop.is_set() or self.ctx.engine.cancelled

    async def run(self) -> RunEnd:
        """Talk until something ends the run; returns why."""
        ctx = self.ctx
        ctx.telemetry.speaker = ctx.speaker
        ctx.recording.align()
        if not ctx.fresh_mic:
            ctx.mic.clear()  # audio a kept-open input (a file) captured while idle is stale
        ctx.emit(StateChanged("duplex"))
        if hasattr(ctx.engine.session, "transcribe_steps"):
            ctx.engine.session.transcribe_steps = True  # (turn-based mode may have turned it off)
        produced = await ctx.engine.generate(self._frames(), self._on_frame, keep=False)
        self.user_lane.end_turn()
        if produced is None:
            end = RunEnd("engine_error")
        else:
            # Stopped between two steps (space, a reset, quitting, a signal), or the input ended.
            halted = RunEnd("stopped") if self._halted() else RunEnd("input_ended")
            end = self._end or self._reader.end or halted
        if end.reason == "input_ended":
            await asyncio.to_thread(ctx.speaker.drain, DRAIN_TIMEOUT_S)
        else:
            ctx.speaker.clear()
        ctx.recording.align()
        ctx.telemetry.report()
        return end

    async def stop(self) -> None:
        """Stop within one step (the engine is idle when this returns)."""
        self._stop.set()
        await self.ctx.engine.stop()

    async def press(self) -> None:
        """Space in duplex mode stops the conversation (the app controller restarts it)."""
        await self.stop()

    # -- on the engine thread ------------------------------------------------------------
    def _frames(self) -> Iterator[np.ndarray]:
        ctx = self.ctx
        while True:
            pcm = self._reader.read()
            if pcm is None:
                return
            self._echo.enabled = ctx.config().echo_suppression
            heard = self._echo.process(pcm)
            raw = raw_frame(ctx.mic, pcm)
            ctx.recording.write_mic(raw, None if raw is pcm else pcm)
            self._mic, self._mic_clipped = pcm, frame_clipped(ctx.mic, raw)
            yield heard

    def _on_frame(self, frame: Any) -> float:
        """Play, record and transcribe one frame; returns its time on the timeline."""
        ctx = self.ctx
        pcm = frame.pcm
        t = ctx.recording.agent_s
        step = ctx.engine.frames_out - 1  # the index of this frame's FrameOut event
        ctx.speaker.write_frame(pcm, 0.0)
        ctx.recording.write_agent(pcm)
        if frame.text:
            ctx.recording.transcript.agent_text(t, frame.text, step)
        self.user_lane.frame(t, step, frame)
        if ctx.timing_log is not None:
            ctx.timing_log.write(step, frame.timings, "duplex", "duplex")
        ctx.telemetry.frame(self._mic, pcm, self._mic_clipped, played_clipped(ctx.speaker))
        self.steps += 1
        if not device_alive(ctx.speaker):
            self._end = output_lost(ctx.speaker)
            self._stop.set()
        return t
