"""A microphone with the agent's echo removed, on its own thread, and the speaker that feeds it.

`CancellingMic` wraps any `AudioInput`: a worker thread reads each raw frame, takes the far end
heard during it from a `FarEndTimeline`, runs the `EchoCanceller` and queues the cleaned frame
with the raw one. The reader (the engine's thread) only takes finished frames from the queue,
so the processing never runs on the MLX thread, and PortAudio's callbacks are untouched.
`ReferencingSpeaker` wraps any `AudioOutput` and places every frame it plays on the timeline.
The alignment comes from the player's queue and PortAudio's reported latencies, and is refined
by the delay measured between the far end and the raw mic (AEC3 itself then finds the rest).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np

from personaplex_tui.audio.aec import EchoCanceller
from personaplex_tui.audio.echo_metrics import EchoMeter, frame_clipped
from personaplex_tui.audio.far_end import FarEndTimeline, PlayedTap
from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.protocols import AudioInput, AudioOutput

EARLY_S = 0.05  # a frame this much earlier than expected corrects the estimate
# The far end is handed to the canceller this much before its estimated time in the mic:
# AEC3 finds an echo that comes later than its reference (by up to ~0.4 s) but never one that
# comes earlier, and PortAudio's reported latencies are estimates (PulseAudio's were ~25 ms
# too long). So estimation errors from -0.15 s to +0.25 s are tolerated.
LEAD_MARGIN_S = 0.15
TAP_SLACK_S = 0.1  # the speaker's callback runs a block at a time: leave it that much room
# The echo delay the meter measures (GCC-PHAT, every second) refines the alignment when it
# strays out of this window (the far end must lead, by less than AEC3's reach).
RESIDUAL_WINDOW_S = (0.05, 0.25)


def stream_latency_s(stream: object) -> float:
    """PortAudio's reported latency of a device stream (0 for file stand-ins)."""
    inner = getattr(stream, "_stream", None)
    try:
        latency = float(getattr(inner, "latency", 0.0) or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return latency if 0.0 <= latency < 5.0 else 0.0


def queued_s(speaker: object) -> float:
    """Seconds of agent audio queued in the speaker's player, not yet handed to the device."""
    player = getattr(speaker, "player", None)
    rate = getattr(speaker, "device_rate", SAMPLE_RATE)
    if player is None:
        return 0.0
    return float(player.queued_samples) / float(rate)


class ReferencingSpeaker:
    """An `AudioOutput` that records on `timeline` what it will play, and when."""

    def __init__(self, inner: AudioOutput, timeline: FarEndTimeline) -> None:
        self.inner = inner
        self.timeline = timeline

    def write_frame(self, pcm: np.ndarray, timeout: float | None = 0.0) -> bool:
        now = self.timeline.now()
        lead = queued_s(self.inner) + stream_latency_s(self.inner)
        ok = self.inner.write_frame(pcm, timeout)
        if ok:
            self.timeline.push(pcm, lead, now)
        return ok

    def clear(self) -> int:
        dropped = self.inner.clear()
        self.timeline.drop_future()
        return dropped

    def __getattr__(self, name: str) -> Any:  # everything else is the speaker's own
        return getattr(self.inner, name)


class CancellingMic:
    """An `AudioInput` whose frames have the agent's echo removed; `last_raw` is the frame as
    the microphone captured it (for the recording) and `last_clipped` its samples at full scale
    as the wrapped mic counted them (`echo_metrics.frame_clipped`), set by `read_frame`."""

    def __init__(
        self,
        inner: AudioInput,
        timeline: FarEndTimeline,
        canceller: EchoCanceller,
        meter: EchoMeter | None = None,
        capacity_frames: int = 50,
        tap: PlayedTap | None = None,
    ) -> None:
        self.inner = inner
        self.tap = tap
        self.timeline = timeline
        self.canceller = canceller
        self.meter = meter if meter is not None else EchoMeter()
        self.sample_rate = inner.sample_rate
        self.frame_samples = inner.frame_samples
        self.device_name = inner.device_name
        self.last_raw: np.ndarray | None = None
        self.last_clipped = 0
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray, int]] = queue.Queue(capacity_frames)
        self._stop = threading.Event()
        self._cursor: int | None = None  # timeline time of the next raw frame's first sample
        self._input_latency = stream_latency_s(inner)
        self._dropped = 0
        self.refinements = 0  # times the measured delay moved the alignment
        self._clear = False  # the reader asked to discard what was captured
        self._inner_dropped = inner.dropped_samples
        self._ended = threading.Event()
        self.failure = ""
        self._thread = threading.Thread(target=self._work, name="ppx-echo-cancel", daemon=True)

    # -- AudioInput ----------------------------------------------------------------------
    def start(self) -> None:
        self.inner.start()
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def read_frame(self, timeout: float | None = None) -> np.ndarray | None:
        try:
            clean, raw, clipped = (
                self._queue.get(timeout=timeout) if timeout != 0 else self._queue.get_nowait()
            )
        except queue.Empty:
            return None
        self.last_raw, self.last_clipped = raw, clipped
        return clean

    @property
    def finished(self) -> bool:
        return self._ended.is_set() and self._queue.empty()

    @property
    def active(self) -> bool:
        return bool(getattr(self.inner, "active", True))

    def clear(self) -> None:
        """Discard captured audio not yet read: the worker clears the wrapped mic (its reading
        thread) before its next read; what it had already processed is dropped here."""
        self._clear = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    @property
    def overruns(self) -> int:
        return self.inner.overruns

    @property
    def dropped_samples(self) -> int:
        return self.inner.dropped_samples + self._dropped

    def close(self) -> None:
        """Stop the worker (the wrapped microphone is its owner's to close)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    # -- the worker ----------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            if self._clear:
                self._clear = False
                self.inner.clear()
                self._cursor = None  # the mic's stream skipped: place the next frame afresh
            raw = self.inner.read_frame(timeout=0.1)
            if raw is None:
                if self.inner.finished:
                    break
                continue
            if self.failure:  # the canceller failed: the raw mic goes on, uncancelled
                self._queue_frame(raw, raw)
                continue
            try:
                self._process(raw)
            except Exception as e:  # a canceller failure must not end the conversation
                self.failure = f"The echo canceller failed ({e}); the mic goes on uncancelled."
                self._queue_frame(raw, raw)
        self._ended.set()

    def _process(self, raw: np.ndarray) -> None:
        n = len(raw)
        lost = self.inner.dropped_samples - self._inner_dropped  # the mic's ring overflowed
        self._inner_dropped += lost
        if self._cursor is not None and lost:
            self._cursor += lost * SAMPLE_RATE // max(self.inner.sample_rate, 1)
        if self.tap is not None:
            self._align_to_tap(n)
        else:
            self._align_to_clock(n)
        far = self.timeline.take(self._cursor, n)
        self.meter.base_delay_s = self._base_delay_s()
        self._cursor += n
        t0 = time.perf_counter()
        clean = self.canceller.process(raw, far)
        self.meter.update(far, raw, clean, time.perf_counter() - t0)
        self._refine()
        self._queue_frame(clean, raw)

    def _align_to_tap(self, n: int) -> None:
        """The timeline counts the speaker's samples: mic frames follow it sample for sample;
        only the first is placed by the latencies (the sample played `out + in + n` ago is the
        one heard at the frame's start), and again if the mic gets ahead of what was played
        (a speaker that started late); the measured delay refines that."""
        assert self.tap is not None
        self.tap.drain()
        latest = self.timeline.written - n  # no echo comes before its sound was played
        if self._cursor is None or self._cursor > latest:  # the speaker started late
            back = max(self.tap.latency_s + self._input_latency - LEAD_MARGIN_S, TAP_SLACK_S)
            self._cursor = latest - int(back * SAMPLE_RATE)

    def _align_to_clock(self, n: int) -> None:
        """The timeline is the monotonic clock: when the frame's first sample was heard is now -
        the frame - the input latency, or earlier (the frame may have waited in the ring).
        Frames are laid end to end; only an estimate 50 ms earlier corrects the time."""
        expected = (
            self.timeline.now() - n - int((self._input_latency - LEAD_MARGIN_S) * SAMPLE_RATE)
        )
        if self._cursor is None or expected < self._cursor - EARLY_S * SAMPLE_RATE:
            self._cursor = expected

    def _base_delay_s(self) -> float:
        """The echo delay the alignment assumes before the measured residual is added."""
        if self.tap is not None:
            return self.tap.latency_s + self._input_latency - LEAD_MARGIN_S
        return self.timeline.last_lead_s + self._input_latency - LEAD_MARGIN_S

    def _refine(self) -> None:
        """Move the alignment when the measured delay left the window AEC3 can handle."""
        residual = self.meter.residual_s
        if residual is None or self._cursor is None:
            return
        low, high = RESIDUAL_WINDOW_S
        if not low <= residual <= high:
            # Taking the far end from earlier on the timeline brings its echo sooner after it.
            self._cursor -= int(round((residual - LEAD_MARGIN_S) * SAMPLE_RATE))
            self.refinements += 1
            self.meter.restart_delay()
        else:
            self.meter.residual_s = None

    def _queue_frame(self, clean: np.ndarray, raw: np.ndarray) -> None:
        n = len(raw)
        # (on the worker, right after it read `raw`: the wrapped mic's count is of that frame)
        item = (clean, np.asarray(raw, np.float32), frame_clipped(self.inner, raw))
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the reader fell behind: drop the oldest, like the device ring
            try:
                self._queue.get_nowait()
                self._dropped += n
            except queue.Empty:
                pass
            self._queue.put_nowait(item)
