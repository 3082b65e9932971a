"""Turn-based conversation: listen for an utterance, then step it and `max_steps` frames of silence
through the session, streaming the reply to the speaker. The session continues across turns.

Listening runs on a worker thread: mic -> recording, meters, Silero VAD (`UtteranceSegmenter`).
When an utterance ends (or push-to-talk sends one), the engine steps the utterance's frames
(state "thinking"; what the model says meanwhile is not played), then digital silence for
`max_steps` frames, each reply frame going to the speaker as it is made ("speaking"). After the
reply has played out the controller listens again.

Policies:
- Mic audio captured during a reply is not sent and not queued into the next turn: listening
  starts afresh once the reply has played (and, with echo suppression on, once its echo tail is
  over), so the model never hears itself. It is recorded, though: while the agent replies a
  worker goes on reading a mic that delivers in real time (a device, a paced file) into
  `mic.wav`, which so holds what the mic heard all along (`RecordMeanwhile`).
- Space while thinking or speaking interrupts the reply: generation stops within one step and
  the queued audio is dropped.
- Space while listening is push-to-talk: the first press starts capturing (the last
  `preroll_frames` frames before the press included, VAD paused), the second press sends what
  was captured as the utterance. A capture longer than `max_capture_s` is sent on its own; one
  shorter than `min_capture_s` from the first press on (a tap of space) is not sent: a notice
  says so and listening goes on, the mic's audio recorded all along.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from personaplex_tui.audio import (
    FRAME_SECONDS,
    UtteranceEnded,
    UtteranceSegmenter,
    UtteranceStarted,
    split_frames,
)
from personaplex_tui.audio.echo_metrics import frame_clipped, played_clipped
from personaplex_tui.conversation.audio_factory import device_alive
from personaplex_tui.conversation.end_of_turn import (
    BY_HEAD,
    BY_PUSH_TO_TALK,
    BY_SILENCE,
    TurnEnder,
)
from personaplex_tui.conversation.run import (
    SILENCE,
    MicReader,
    RunContext,
    RunEnd,
    output_lost,
    paced,
    raw_frame,
)
from personaplex_tui.conversation.user_lane import UserLane
from personaplex_tui.events import Notice, StateChanged, UserTurn

Phase = Literal["listening", "capturing", "thinking", "speaking"]
WRITE_TIMEOUT_S = 1.0  # the engine waits this long for room in the player
DRAIN_SLACK_S = 2.0  # beyond the queued audio, how long playing it out may take
ECHO_TAIL_WAIT_S = 1.0
# A push-to-talk turn shorter than this between the presses (the pre-roll not counted) is an
# accidental tap of space, not speech: sent, the model would reply to nothing. The VAD's
# `min_speech_s` ignores a cough or a click below the same length.
MIN_PUSH_TO_TALK_S = 0.3
TOO_SHORT = "That was too short to send ({held_s:.1f} s)."
TOO_SHORT_HINT = "Press space, talk, then press space again."


@dataclass(frozen=True)
class Heard:
    """An utterance to answer: timeline seconds, 24 kHz audio, and whether push-to-talk made it."""

    start_s: float
    end_s: float
    audio: np.ndarray = field(repr=False)
    manual: bool = False
    decided_by: str = BY_SILENCE  # what ended the turn (personaplex_tui.conversation.end_of_turn)


@dataclass(frozen=True)
class Tap:
    """A push-to-talk capture too short to send: `held_s` of audio between the presses."""

    held_s: float


class TurnController:
    """Listens and replies turn by turn until stopped, the input ends, a device is lost or a
    step fails. `press()` is space: push-to-talk while listening, interrupt while replying."""

    mode = "turn"

    def __init__(
        self,
        ctx: RunContext,
        segmenter: UtteranceSegmenter,
        *,
        preroll_frames: int = 4,
        max_capture_s: float = 60.0,
        min_capture_s: float = MIN_PUSH_TO_TALK_S,
    ) -> None:
        self.ctx = ctx
        self.segmenter = segmenter
        self.preroll_frames = preroll_frames
        self.max_capture_s = max_capture_s
        self.min_capture_s = min_capture_s
        self.phase: Phase = "listening"
        self._stop = threading.Event()  # the run must end
        self._interrupt = threading.Event()  # the reply must end
        self._capture = threading.Event()  # push-to-talk: capturing
        self._send = threading.Event()  # push-to-talk: send the capture
        self._end: RunEnd | None = None
        self._stale_mic = not ctx.fresh_mic
        self.replies: list[int] = []  # reply frames generated, per turn
        self.user_lane = UserLane(ctx.emit, lambda: ctx.recording.transcript)
        self._ender: TurnEnder | None = None  # made on the first turn (it asks the engine)

    # -- control (event loop) ------------------------------------------------------------
    async def run(self) -> RunEnd:
        """Listen and reply until something ends the run; returns why."""
        ctx = self.ctx
        ctx.telemetry.speaker = ctx.speaker
        while True:
            self.phase = "listening"
            self._interrupt.clear()
            self._capture.clear()
            self._send.clear()
            ctx.emit(StateChanged("listening"))
            heard = await asyncio.to_thread(self._listen)
            if isinstance(heard, RunEnd):
                ctx.recording.align()
                return heard
            if isinstance(heard, Tap):
                self._ignore(heard)
                continue
            end = await self._reply(heard)
            if end is not None:
                return end

    async def press(self) -> None:
        """Space: start or send a push-to-talk capture, or interrupt the reply."""
        if self.phase == "listening":
            self.phase = "capturing"
            self._capture.set()
            self.ctx.emit(StateChanged("listening", "capturing: press space to send"))
        elif self.phase == "capturing":
            self._send.set()
        else:
            await self.interrupt()

    def _ignore(self, tap: Tap) -> None:
        """Not a turn: say so and listen again, keeping the mic's backlog (it is recorded)."""
        self._stale_mic = False
        message = TOO_SHORT.format(held_s=tap.held_s)
        self.ctx.emit(Notice(message, "warning", TOO_SHORT_HINT))

    async def interrupt(self) -> None:
        """Stop the reply within one step and drop the audio queued for playback."""
        if self.phase not in ("thinking", "speaking"):
            return
        self._interrupt.set()
        self.ctx.speaker.clear()  # wakes the engine if it waits for room in the player
        await self.ctx.engine.stop()
        self.ctx.speaker.clear()

    async def stop(self) -> None:
        """End the run within one step (or one mic poll while listening)."""
        self._stop.set()
        self._interrupt.set()
        if self.phase in ("thinking", "speaking"):
            self.ctx.speaker.clear()
            await self.ctx.engine.stop()

    def _halted(self) -> bool:
        return self._interrupt.is_set() or self._stop.is_set()

    # -- listening (worker thread) -------------------------------------------------------
    def _listen(self) -> Heard | Tap | RunEnd:
        ctx = self.ctx
        ctx.recording.align()
        if self._stale_mic:
            ctx.mic.clear()  # what was said during the reply (or while idle) is not this turn
        self._stale_mic = True
        self.segmenter.reset()
        if self._ender is None:
            self._ender = TurnEnder(ctx.engine.call, ctx.engine.model, self.user_lane, ctx.emit)
        ender = self._ender
        ender.reset()
        offset = ctx.recording.position_s
        reader = MicReader(ctx, self._stop.is_set)
        preroll: deque[np.ndarray] = deque(maxlen=self.preroll_frames)
        captured: list[np.ndarray] | None = None
        capture_start = 0.0
        pressed = 0  # frames in `captured` before the press (the pre-roll)
        n = 0
        while True:
            pcm = reader.read()
            if pcm is None:
                assert reader.end is not None
                if reader.end.reason == "input_ended":
                    if captured:
                        return Heard(
                            capture_start,
                            offset + n * FRAME_SECONDS,
                            np.concatenate(captured),
                            True,
                        )
                    for event in self.segmenter.finish():
                        if isinstance(event, UtteranceEnded):
                            return Heard(offset + event.start_s, offset + event.end_s, event.audio)
                return reader.end
            ctx.telemetry.frame(pcm, None, _record_mic(ctx, pcm))
            n += 1
            if captured is None and self._capture.is_set():
                captured = list(preroll)
                pressed = len(captured)
                capture_start = offset + (n - 1 - len(captured)) * FRAME_SECONDS
            if captured is not None:
                captured.append(pcm)
                # the STT hears it too (the words appear as they are said); only the second
                # press (or the limit) ends a push-to-talk turn
                ender.frame(pcm, offset + (n - 1) * FRAME_SECONDS, False)
                if self._send.is_set() or len(captured) * FRAME_SECONDS >= self.max_capture_s:
                    held_s = (len(captured) - pressed) * FRAME_SECONDS
                    if held_s < self.min_capture_s:
                        return Tap(held_s)
                    end = offset + n * FRAME_SECONDS
                    ender.decided(end, BY_PUSH_TO_TALK)
                    return Heard(
                        capture_start, end, np.concatenate(captured), True, BY_PUSH_TO_TALK
                    )
                continue
            preroll.append(pcm)
            events = self.segmenter.feed(pcm)
            now = offset + n * FRAME_SECONDS
            if ender.frame(pcm, now - FRAME_SECONDS, self.segmenter.in_utterance):
                events += [e for e in self.segmenter.finish() if isinstance(e, UtteranceEnded)]
                how = BY_HEAD
            else:
                how = BY_SILENCE
            for event in events:
                if isinstance(event, UtteranceStarted):
                    ctx.emit(StateChanged("listening", "speech detected"))
                elif isinstance(event, UtteranceEnded):
                    ender.decided(now, how)
                    return Heard(
                        offset + event.start_s, offset + event.end_s, event.audio, False, how
                    )

    # -- replying ------------------------------------------------------------------------
    async def _reply(self, heard: Heard) -> RunEnd | None:
        ctx = self.ctx
        transcript = ctx.recording.transcript
        frames = split_frames(heard.audio)
        n = len(frames)
        ctx.emit(UserTurn(start_s=heard.start_s, end_s=heard.end_s, frames=n))
        transcript.user_turn(heard.start_s, heard.end_s, n, heard.manual)
        ctx.recording.align()
        reply_start = ctx.recording.position_s
        meanwhile = RecordMeanwhile(ctx) if paced(ctx.mic) else None
        try:
            return await self._reply_recorded(heard, frames, reply_start, meanwhile is not None)
        finally:
            if meanwhile is not None:
                await meanwhile.stop()
            ctx.recording.align()

    async def _reply_recorded(
        self, heard: Heard, frames: list[np.ndarray], reply_start: float, mic_recorded: bool
    ) -> RunEnd | None:
        """`_reply`'s steps, playing and transcript. With the mic recorded meanwhile, the reply's
        audio starts in the recording where the mic's track is when its first frame is made
        (the model's thinking time passed in the mic's track); else right after the turn."""
        ctx = self.ctx
        transcript = ctx.recording.transcript
        n = len(frames)
        max_steps = ctx.config().max_steps
        self.phase = "thinking"
        ctx.emit(StateChanged("thinking"))
        counts: dict[str, Any] = {"steps": 0, "reply": 0, "start": reply_start}
        live = self._ender is not None and self._ender.live  # the words were heard live
        session = ctx.engine.session
        if hasattr(session, "transcribe_steps"):
            session.transcribe_steps = not live

        def source() -> Any:
            for pcm in frames:
                if self._halted():
                    return
                yield pcm
            for _ in range(max_steps):
                if self._halted():
                    return
                yield SILENCE

        def on_frame(frame: Any) -> float | None:  # on the engine thread; returns its time
            i = counts["steps"]
            counts["steps"] += 1
            step = ctx.engine.frames_out - 1  # the engine's index of this frame
            if ctx.timing_log is not None:
                phase = "utterance" if i < n else "reply"
                ctx.timing_log.write(step, frame.timings, "turn", phase)
            if i < n:  # the utterance: the user's words (frame i began at start_s + i frames)
                if not live:
                    self.user_lane.frame(heard.start_s + i * FRAME_SECONDS, step, frame)
                return None
            if i == n:
                self.user_lane.end_turn()
                if self._ender is not None:
                    self._ender.reply_started(heard.end_s)
                self.phase = "speaking"
                ctx.emit(StateChanged("speaking"))
                transcript.agent_turn()
                if mic_recorded:
                    ctx.recording.agent_catches_up()
                counts["start"] = ctx.recording.agent_s
            t = ctx.recording.agent_s
            ctx.speaker.write_frame(frame.pcm, WRITE_TIMEOUT_S)
            ctx.recording.write_agent(frame.pcm)
            transcript.agent_text(t, frame.text, step)
            ctx.telemetry.frame(None, frame.pcm, agent_clipped=played_clipped(ctx.speaker))
            counts["reply"] += 1
            if not device_alive(ctx.speaker):
                self._end = output_lost(ctx.speaker)
                self._stop.set()
            return t

        produced = await ctx.engine.generate(source(), on_frame, quiet_steps=n, keep=False)
        self.user_lane.end_turn()  # (already ended unless the utterance was cut short)
        self.replies.append(counts["reply"])
        if produced is not None and not self._halted():
            await asyncio.to_thread(self._play_out)
        interrupted = self._interrupt.is_set() and not self._stop.is_set()
        if produced is None or self._halted() or self._end is not None:
            ctx.speaker.clear()
        start = counts["start"]
        transcript.reply(
            start, start + counts["reply"] * FRAME_SECONDS, counts["reply"], interrupted
        )
        ctx.telemetry.report()
        if produced is None:
            return RunEnd("engine_error")
        if self._end is not None:
            return self._end
        if self._stop.is_set():
            return RunEnd("stopped")
        return None

    def _play_out(self) -> None:
        """Wait until the reply has been played (and its echo has died away, when suppressing)."""
        speaker = self.ctx.speaker
        queued_s = speaker.stats().buffered_frames * FRAME_SECONDS
        played = speaker.drain(queued_s + DRAIN_SLACK_S)  # clear() (interrupt, stop) wakes it
        if self._halted():
            return
        if not played and not device_alive(speaker):
            self._end = output_lost(speaker)
            return
        if self.ctx.config().echo_suppression:
            deadline = time.monotonic() + ECHO_TAIL_WAIT_S
            while speaker.audible() and not self._halted() and time.monotonic() < deadline:
                self._interrupt.wait(0.02)


class RecordMeanwhile:
    """While the agent replies, a worker reads the mic into the recording (as captured and, with
    echo cancellation, as cleaned), neither heard by the model nor kept for the next turn. It
    ends on `stop()` or when the mic does (a lost device is for listening to find)."""

    def __init__(self, ctx: RunContext) -> None:
        self._done = threading.Event()
        self._task = asyncio.create_task(asyncio.to_thread(self._run, ctx))

    def _run(self, ctx: RunContext) -> None:
        reader = MicReader(ctx, self._done.is_set)
        while (pcm := reader.read()) is not None:
            _record_mic(ctx, pcm)

    async def stop(self) -> None:
        """Stop reading (within one mic poll) and wait for the worker."""
        self._done.set()
        await self._task


def _record_mic(ctx: RunContext, pcm: np.ndarray) -> int:
    """Record the frame as captured and, when the echo canceller ran, as it left it; returns
    its samples at full scale as the device or file gave them (for the mic's clipping flag)."""
    raw = raw_frame(ctx.mic, pcm)
    ctx.recording.write_mic(raw, None if raw is pcm else pcm)
    return frame_clipped(ctx.mic, raw)
