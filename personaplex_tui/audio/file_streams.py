"""File stand-ins for the sound devices: a microphone that plays a file, a speaker that records.

They have the interfaces of `MicStream` and `SpeakerStream`, so a controller cannot tell them
apart. Real-time mode paces audio by the wall clock on a thread of their own (the way a sound
card's callback would); fast mode moves audio as fast as the caller asks for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from personaplex_tui.audio.audio_file import read_audio
from personaplex_tui.audio.echo_metrics import FULL_SCALE, clipped_per_frame, clipped_samples
from personaplex_tui.audio.frames import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    PREBUFFER_FRAMES,
    SAMPLE_RATE,
)
from personaplex_tui.audio.player import Player
from personaplex_tui.audio.ring_buffer import RingBuffer
from personaplex_tui.audio.stream_parts import RingCounters, StartsOnEnter
from personaplex_tui.audio.wav_writer import WavWriter
from personaplex_tui.events import PlaybackStats


class _Paced:
    """A thread that calls `tick()` every 80 ms of wall clock until stopped."""

    def __init__(self, name: str, tick: Callable[[], bool]) -> None:
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            if not self._tick():
                return
            due += FRAME_SECONDS
            self._stop.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()


class FileMic(RingCounters, StartsOnEnter):
    """A microphone that plays an audio file (any format `read_audio` takes) or an array.

    `realtime=True` delivers one frame per 80 ms through a ring buffer, like `MicStream`;
    `realtime=False` hands frames out as fast as `read_frame` is called. After the file,
    `after_end="end"` ends the stream (`read_frame` returns None, `finished` is True),
    `"silence"` goes on with silent frames for ever (a duplex conversation keeps its clock) and
    `"loop"` plays the file again from its start. `max_frames` ends the stream after that many
    frames whatever `after_end` says (a soak test's fixed length).
    """

    def __init__(
        self,
        source: str | Path | np.ndarray,
        *,
        realtime: bool = True,
        after_end: Literal["end", "silence", "loop"] = "end",
        capacity_frames: int = 50,
        max_frames: int | None = None,
        name: str | None = None,
    ) -> None:
        # what is wrong with the file though it is used (an Ogg stream cut short, an MP3 with
        # damaged frames, in the TUI found in its log, which fd 2 writes): a sentence
        self.file_warning: str | None = None
        clipped = None
        if isinstance(source, np.ndarray):  # `name`: the file it was read from, if any
            pcm, self.device_name = np.asarray(source, np.float32), name or "array"
        else:
            clip = read_audio(source)
            pcm, self.device_name, self.file_warning = clip.pcm, str(source), clip.file_warning
            clipped = clip.clipped_by_frame
        pad = -len(pcm) % FRAME_SAMPLES
        self._pcm = np.concatenate([pcm, np.zeros(pad, np.float32)]) if pad else pcm
        # samples at full scale in each frame, counted in the file's own samples (its rate, each
        # of its channels) as a device's are in its own blocks; an array's in itself
        if clipped is None:
            clipped = clipped_per_frame(
                self._pcm[:, None], SAMPLE_RATE, len(self._pcm) // FRAME_SAMPLES
            )
        self._clipped = clipped
        self.last_clipped = 0  # ... in the frame `read_frame` returned last
        self.sample_rate = self.device_rate = SAMPLE_RATE
        self.frame_samples = self.device_frame = FRAME_SAMPLES
        self.resampling = False
        self.device_overflows = 0
        self.realtime = realtime
        self.after_end = after_end
        self.max_frames = max_frames
        self.frames_delivered = 0
        self._pos = 0  # next sample of the file to deliver
        self._ring = RingBuffer(capacity_frames * FRAME_SAMPLES, overflow="drop_oldest")
        self._silence = np.zeros(FRAME_SAMPLES, np.float32)
        self._clock = _Paced("file-mic", self._tick) if realtime else None
        self._started = False

    @property
    def duration_s(self) -> float:
        return len(self._pcm) / SAMPLE_RATE

    @property
    def position_s(self) -> float:
        """Seconds of the file delivered so far."""
        return min(self._pos, len(self._pcm)) / SAMPLE_RATE

    def start(self) -> None:
        if not self._started and self._clock is not None:
            self._clock.start()
        self._started = True

    def _next(self) -> np.ndarray | None:
        if self.max_frames is not None and self.frames_delivered >= self.max_frames:
            return None
        if self._pos >= len(self._pcm) and self.after_end == "loop" and len(self._pcm):
            self._pos = 0
        if self._pos < len(self._pcm):
            frame = self._pcm[self._pos : self._pos + FRAME_SAMPLES]
            self._pos += FRAME_SAMPLES
        elif self.after_end == "silence":
            frame = self._silence
        else:
            return None
        self.frames_delivered += 1
        return frame

    def _tick(self) -> bool:
        frame = self._next()
        if frame is None:
            self._ring.close()  # readers get what is queued, then None
            return False
        self._ring.write(frame)
        return True

    def read_frame(self, timeout: float | None = None) -> np.ndarray | None:
        """The next 80 ms frame (float32 [1920]); None on timeout or at the end."""
        if not self.realtime:
            frame = self._next()
            if frame is None:
                return None
            self.last_clipped = self._clipped_in(self.frames_delivered - 1)
            return frame.copy()
        got = self._ring.read_at(FRAME_SAMPLES, timeout)  # (the ring holds whole frames)
        if got is None:
            return None
        self.last_clipped = self._clipped_in(got[1] // FRAME_SAMPLES)
        return got[0]

    def _clipped_in(self, delivered: int) -> int:
        """`_clipped` of the frame `_next` delivered as its `delivered`-th (from 0)."""
        frames = len(self._clipped)
        if delivered < frames:
            return int(self._clipped[delivered])
        return int(self._clipped[delivered % frames]) if self.after_end == "loop" and frames else 0

    @property
    def finished(self) -> bool:
        if not self.realtime:
            if self.max_frames is not None and self.frames_delivered >= self.max_frames:
                return True
            return self.after_end == "end" and self._pos >= len(self._pcm)
        return self._ring.closed and self._ring.available < FRAME_SAMPLES

    def clear(self) -> None:
        self._ring.clear()

    def close(self) -> None:
        if self._clock is not None:
            self._clock.stop()
        self._ring.close()


class FileSpeaker(StartsOnEnter):
    """A speaker that records what it plays into a 16-bit WAV file, through a `Player`.

    `realtime=True` pulls one block per 80 ms like a sound card, so the file holds the pre-buffer
    delay and any underrun as silence, exactly as it would have sounded. `realtime=False` writes
    audio as soon as the pre-buffer (or a flush) lets it play, with no gaps. If writing fails
    (a full disk) the file keeps what was written, the speaker stops like an unplugged device
    (`active` turns False) and `failure` says why in one sentence. `last_clipped` counts the
    samples at full scale or past it in the frame just written (the file's rate is 24 kHz:
    written as given); None when it was dropped.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool = True,
        prebuffer_frames: int = PREBUFFER_FRAMES,
        capacity_frames: int = 375,
        echo_tail_s: float = 0.3,
        flush_every_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.device_name = str(path)
        self.sample_rate = self.device_rate = SAMPLE_RATE
        self.frame_samples = self.device_frame = FRAME_SAMPLES
        self.resampling = False
        self.device_underflows = 0
        self.realtime = realtime
        self.player = Player(FRAME_SAMPLES, prebuffer_frames, capacity_frames, echo_tail_s)
        self._writer = WavWriter(self.path, SAMPLE_RATE, 1, flush_every_s)
        self._block = np.zeros(FRAME_SAMPLES, np.float32)
        self._clock = _Paced("file-speaker", self._tick) if realtime else None
        self._started = False
        self.failure = ""  # why writing stopped, if it did
        self.last_clipped: int | None = None

    @property
    def active(self) -> bool:
        """False once writing the file failed (like a sound device that stopped)."""
        return not self.failure

    def start(self) -> None:
        if not self._started and self._clock is not None:
            self._clock.start()
        self._started = True

    def _record(self, pcm: np.ndarray) -> bool:
        if self.failure:
            return False
        try:
            self._writer.write(pcm)
        except OSError as e:  # a WavWriteError: the file keeps what its header says
            self.failure = (
                f"Writing the output file {self.path} failed ({e.strerror or e}); "
                f"it keeps the first {self._writer.duration_s:.2f} s."
            )
            return False
        return True

    def _tick(self) -> bool:
        self.player.fill(self._block)
        return self._record(self._block)

    def _pump(self) -> None:
        """Fast mode: play every block that the player would release now."""
        while True:
            queued = self.player.queued_samples
            ready = self.player.playing or queued >= self.player.prebuffer_frames * FRAME_SAMPLES
            if queued == 0 or not (queued >= FRAME_SAMPLES and ready or self.player.flushing):
                return
            got = self.player.fill(self._block)
            self._record(self._block[:got])

    def write_frame(self, pcm: np.ndarray, timeout: float | None = 0.0) -> bool:
        """Queue 24 kHz audio; wait up to `timeout` s for room. False if it was dropped."""
        ok = self.player.write(pcm, timeout if self.realtime else 0.0)
        self.last_clipped = clipped_samples(pcm, FULL_SCALE) if ok else None
        if not self.realtime:
            self._pump()
        return ok

    def flush(self) -> None:
        self.player.flush()
        if not self.realtime:
            self._pump()

    def drain(self, timeout: float | None = None) -> bool:
        if not self.realtime:
            self.flush()
            return True
        return self.player.drain(timeout)

    def clear(self) -> int:
        return self.player.clear()

    def audible(self) -> bool:
        return self.player.audible()

    def stats(self) -> PlaybackStats:
        return self.player.stats()

    @property
    def recorded_s(self) -> float:
        return self._writer.duration_s

    def close(self) -> None:
        """Stop and finish the file (fast mode plays out what is queued first)."""
        if self._clock is not None:
            self._clock.stop()
        else:
            self.flush()
        self.player.close()
        self._writer.close()  # never raises: the header is right after every write
