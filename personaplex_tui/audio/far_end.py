"""The far end for the echo canceller: agent audio placed on a 24 kHz clock at the moment the
speaker will play it (now + the player's queue + PortAudio's reported output latency)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.resample import StreamResampler
from personaplex_tui.audio.ring_buffer import RingBuffer


class FarEndTimeline:
    """A ring of `capacity_s` seconds of far-end audio indexed by absolute sample times.

    The speaker side `push`es each frame with the time it starts playing (now + the player's
    queue + the output latency). That estimate jitters by up to a device block (the block in
    flight is no longer queued) and with the threads' timing, and every correction would tear
    the signal the canceller is following, so frames are laid end to end unless a frame lands
    more than `tolerance_s` later (a gap: an underrun) or more than `jump_s` earlier (queued
    audio was dropped). The microphone side `take`s the samples heard during its own frames;
    what was taken is cleared. Thread-safe.
    """

    def __init__(
        self,
        capacity_s: float = 8.0,
        tolerance_s: float = 0.1,
        jump_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = int(capacity_s * SAMPLE_RATE)
        self._ring = np.zeros(self._size, np.float32)
        self._tolerance = int(tolerance_s * SAMPLE_RATE)
        self._jump = int(jump_s * SAMPLE_RATE)
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._write_end: int | None = None  # the sample time just past the last pushed frame
        self._read_end = 0  # nothing before this is kept
        self.last_lead_s = 0.0  # how far ahead of its push the last frame plays

    def now(self) -> int:
        """The current time on the timeline, in samples."""
        return int((self._clock() - self._t0) * SAMPLE_RATE)

    def push(self, pcm: np.ndarray, lead_s: float, now: int | None = None) -> None:
        """`pcm` (24 kHz) starts playing `lead_s` seconds after `now` (default: this moment)."""
        pcm = np.asarray(pcm, np.float32).reshape(-1)
        at = (self.now() if now is None else now) + int(round(lead_s * SAMPLE_RATE))
        with self._lock:
            self.last_lead_s = lead_s
            end = self._write_end
            if end is not None and end - self._jump <= at <= end + self._tolerance:
                at = end  # jitter: the frame follows the previous one
            elif end is not None and at < end:
                self._zero(at, end)  # that queued audio was dropped: it will never play
            start = max(at, self._read_end)
            stop = min(at + len(pcm), self._read_end + self._size)
            if stop > start:
                self._copy_in(pcm[start - at : stop - at], start)
            self._write_end = at + len(pcm)

    @property
    def written(self) -> int:
        """The sample time just past the last frame placed (0 before any)."""
        return self._write_end or 0

    def append(self, pcm: np.ndarray) -> None:
        """Place `pcm` right after what was placed last (a stream without gaps)."""
        pcm = np.asarray(pcm, np.float32).reshape(-1)
        with self._lock:
            at = self._write_end or 0
            start = max(at, self._read_end)
            stop = min(at + len(pcm), self._read_end + self._size)
            if stop > start:
                self._copy_in(pcm[start - at : stop - at], start)
            self._write_end = at + len(pcm)

    def drop_future(self) -> None:
        """Queued agent audio was dropped (an interruption): forget what had not played yet."""
        with self._lock:
            now = self.now()
            if self._write_end is not None and self._write_end > now:
                self._zero(max(now, self._read_end), self._write_end)
                self._write_end = now

    def take(self, start: int, n: int) -> np.ndarray:
        """The far end from sample time `start` for `n` samples (zeros where nothing played)."""
        out = np.zeros(n, np.float32)
        with self._lock:
            lo = max(start, self._read_end, start + n - self._size)
            hi = start + n
            if hi > lo:
                idx = np.arange(lo, hi) % self._size
                out[lo - start :] = self._ring[idx]
                self._ring[idx] = 0.0
            self._read_end = max(self._read_end, hi)
        return out

    def _zero(self, start: int, stop: int) -> None:
        start = max(start, self._read_end)
        stop = min(stop, self._read_end + self._size)
        if stop > start:
            self._ring[np.arange(start, stop) % self._size] = 0.0

    def _copy_in(self, pcm: np.ndarray, start: int) -> None:
        self._ring[np.arange(start, start + len(pcm)) % self._size] = pcm


class PlayedTap:
    """The far end as the speaker played it, sample by sample, silence and underruns included.

    The player's callback hands every block it plays to this object (`__call__`), which only
    copies it into a ring. The canceller's thread calls `drain` to move what was played onto a
    `FarEndTimeline` at 24 kHz, end to end: the timeline then counts the speaker's samples, on
    the device's own clock, with no timing jitter at all.
    """

    def __init__(
        self,
        timeline: FarEndTimeline,
        device_rate: int = SAMPLE_RATE,
        output_latency_s: float = 0.0,
        capacity_s: float = 4.0,
    ) -> None:
        self.timeline = timeline
        self.device_rate = device_rate
        self._ring = RingBuffer(int(capacity_s * device_rate), overflow="drop_oldest")
        self._resampler = (
            StreamResampler(device_rate, SAMPLE_RATE) if device_rate != SAMPLE_RATE else None
        )
        # From a sample leaving the callback to it being heard, on the timeline's clock.
        self.latency_s = output_latency_s + (
            self._resampler.latency_s if self._resampler is not None else 0.0
        )
        self._dropped = 0

    def __call__(self, block: np.ndarray) -> None:
        self._ring.write(block)

    def drain(self) -> None:
        """Move everything played so far onto the timeline (the canceller's thread)."""
        dropped = self._ring.dropped - self._dropped
        if dropped:  # not drained for seconds: keep the count, lose the samples
            self._dropped += dropped
            self.timeline.append(np.zeros(dropped * SAMPLE_RATE // self.device_rate, np.float32))
        n = self._ring.available
        if not n:
            return
        block = self._ring.read(n, 0)
        if block is None:
            return
        if self._resampler is not None:
            block = self._resampler.process(block)
        self.timeline.append(block)
