"""The playback queue: a 3-frame pre-buffer, silence on underrun, counters, audibility."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from personaplex_tui.audio.frames import FRAME_SAMPLES, PREBUFFER_FRAMES
from personaplex_tui.audio.ring_buffer import RingBuffer
from personaplex_tui.events import PlaybackStats

AUDIBLE_PEAK = 10 ** (-50 / 20)  # a chunk whose peak is under -50 dBFS counts as silence


class Player:
    """Queues agent audio and hands it to an output callback in device-sized blocks.

    The producer (engine thread) calls `write`; the device side calls `fill` from its
    callback. Playback starts once `prebuffer_frames` frames are queued, and after an underrun
    (the queue ran dry while playing) the player outputs silence (zeros, never stale samples)
    and waits for the pre-buffer again. `flush` lets the tail of a reply play out below the
    pre-buffer. All samples are at the device rate; `frame_samples` is one 80 ms frame there.
    """

    def __init__(
        self,
        frame_samples: int = FRAME_SAMPLES,
        prebuffer_frames: int = PREBUFFER_FRAMES,
        capacity_frames: int = 375,
        echo_tail_s: float = 0.3,
    ) -> None:
        self.frame_samples = frame_samples
        self.prebuffer_frames = prebuffer_frames
        self.echo_tail_s = echo_tail_s
        self._prebuffer = prebuffer_frames * frame_samples
        self._ring = RingBuffer(capacity_frames * frame_samples, overflow="reject")
        self._state_lock = threading.Lock()
        self._playing = False
        self._flushing = False
        self._underruns = 0
        self._overrun_episodes = 0
        self._in_overrun = False
        self._audible_until = 0  # write counter just past the last audible sample queued
        self._last_audible_out = -1e9  # monotonic time an audible sample was last output
        self.tap: Callable[[np.ndarray], None] | None = None  # sees every block played

    # -- producer side -------------------------------------------------------------------
    def write(self, pcm: np.ndarray, timeout: float | None = 0.0) -> bool:
        """Queue audio; with a timeout, wait that long for room (None: as long as it takes; 0: not
        at all). False when it was dropped.

        A chunk that does not fit is dropped whole and counted (an overrun).
        """
        pcm = np.asarray(pcm, dtype=np.float32)
        loud = len(pcm) > 0 and float(np.max(np.abs(pcm))) >= AUDIBLE_PEAK
        if timeout is None or timeout > 0:  # (None once meant 0 here: respond's replies past
            # the 30 s queue were dropped unheard)
            clears = self._ring.clears
            ok = self._ring.write_wait(pcm, timeout)
            if not ok and self._ring.clears != clears:
                return False  # cleared (interrupted) while waiting: dropped on purpose
            if not ok:  # timed out: a non-blocking write counts the overrun
                ok = self._ring.write(pcm) > 0
        else:
            ok = self._ring.write(pcm) > 0 or len(pcm) == 0
        with self._state_lock:
            if ok:
                self._flushing = False
                self._in_overrun = False
                if loud:
                    self._audible_until = self._ring.total_written
            elif not self._in_overrun:
                self._in_overrun = True
                self._overrun_episodes += 1
        return ok

    def flush(self) -> None:
        """No more audio for now: play what is queued even if it is under the pre-buffer."""
        with self._state_lock:
            self._flushing = True

    def drain(self, timeout: float | None = None) -> bool:
        """Flush, then wait until everything queued has been played; False on timeout."""
        self.flush()
        return self._ring.wait_empty(timeout)

    def clear(self) -> int:
        """Drop everything queued (an interruption); returns the frames dropped."""
        dropped = self._ring.clear()
        with self._state_lock:
            self._playing = False
            self._flushing = False
            self._audible_until = min(self._audible_until, self._ring.total_written)
        return dropped // self.frame_samples

    def close(self) -> None:
        self._ring.close()

    # -- device side (real-time) ---------------------------------------------------------
    def fill(self, out: np.ndarray) -> int:
        """Fill one output block (called from the audio callback; never waits on the engine).

        Returns how many samples of queued audio went out; the rest of `out` is zeros. The
        block, silence included, is then handed to `tap` when one is set (the echo canceller's
        far end: it must only copy).
        """
        got = self._fill(out)
        tap = self.tap
        if tap is not None:
            tap(out)
        return got

    def _fill(self, out: np.ndarray) -> int:
        n = len(out)
        with self._state_lock:
            if not self._playing:
                queued = self._ring.available
                if queued >= self._prebuffer or (self._flushing and queued > 0):
                    self._playing = True
                else:
                    out[:] = 0.0
                    return 0
            before = self._ring.total_read
            got = self._ring.read_into(out)
            if got < n:
                out[got:] = 0.0
                self._playing = False
                if self._flushing:
                    self._flushing = False  # the reply played out: not an underrun
                else:
                    self._underruns += 1
            if before < self._audible_until:
                self._last_audible_out = time.monotonic()
            return got

    # -- observers -----------------------------------------------------------------------
    @property
    def buffered_frames(self) -> int:
        return self._ring.available // self.frame_samples

    @property
    def flushing(self) -> bool:
        return self._flushing

    @property
    def queued_samples(self) -> int:
        return self._ring.available

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def underruns(self) -> int:
        return self._underruns

    @property
    def dropped_frames(self) -> int:
        return -(-self._ring.dropped // self.frame_samples)

    def audible(self) -> bool:
        """True while audible agent audio is queued or playing, or was within `echo_tail_s`."""
        with self._state_lock:
            if self._ring.total_read < self._audible_until:
                return True
            return time.monotonic() - self._last_audible_out < self.echo_tail_s

    def stats(self) -> PlaybackStats:
        """A snapshot for the UI."""
        with self._state_lock:
            return PlaybackStats(
                buffered_frames=self.buffered_frames,
                prebuffer_frames=self.prebuffer_frames,
                playing=self._playing,
                underruns=self._underruns,
                overruns=self._overrun_episodes,
                dropped_frames=self.dropped_frames,
            )
