"""Microphone and speaker streams on PortAudio (`sounddevice`), at 24 kHz mono in 80 ms frames.

A device that refuses 24 kHz is opened at its own rate and the audio resampled (soxr) on the
consumer's or producer's thread, never in the callback. The callbacks only copy into or out of
preallocated ring buffers. `stream_factory` stands in for `sounddevice.InputStream` /
`OutputStream` in tests (same keyword arguments, an object with start/stop/close).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from personaplex_tui.audio.devices import (
    choose_rate,
    find_device,
    hold_portaudio,
    let_go_of_portaudio,
)
from personaplex_tui.audio.echo_metrics import FULL_SCALE, clipped_samples
from personaplex_tui.audio.errors import AudioDeviceError
from personaplex_tui.audio.frames import (
    FRAME_SAMPLES,
    PREBUFFER_FRAMES,
    SAMPLE_RATE,
    frame_samples_at,
)
from personaplex_tui.audio.player import Player
from personaplex_tui.audio.resample import StreamResampler
from personaplex_tui.audio.ring_buffer import RingBuffer
from personaplex_tui.audio.stream_parts import RingCounters, StartsOnEnter
from personaplex_tui.events import PlaybackStats

StreamFactory = Callable[..., Any]


def _open(factory: StreamFactory, kind: str, name: str, **kwargs: Any) -> Any:
    try:
        stream = factory(**kwargs)
        stream.start()
    except AudioDeviceError:
        raise
    except Exception as e:  # sounddevice.PortAudioError, ValueError for bad settings
        reason = str(e).strip().rstrip(".") or type(e).__name__
        raise AudioDeviceError(
            f"The {kind} device '{name}' could not be opened ({reason}); "
            "it may be busy, unplugged or not support mono audio."
        ) from None
    return stream


class _DeviceStream(StartsOnEnter):
    """What the microphone and the speaker share: the device, its rate, start and close."""

    kind = ""

    def __init__(
        self,
        device_rate: int,
        device: int | str | None,
        device_name: str,
        stream_factory: StreamFactory | None,
        latency: float | str | None = None,
    ) -> None:
        self.sample_rate = SAMPLE_RATE
        self.latency = latency  # PortAudio's: seconds, "low" or "high"; None = its default
        self.frame_samples = FRAME_SAMPLES
        self.device_rate = device_rate
        self.device = device
        self.device_name = device_name
        try:
            self.device_frame = frame_samples_at(device_rate)
        except ValueError:
            raise AudioDeviceError(
                f"The {self.kind} device '{device_name}' runs at {device_rate} Hz, "
                "which is not a multiple of 25 Hz and cannot be used."
            ) from None
        self._factory = stream_factory
        self._stream: Any = None
        self._holds = False  # a PortAudio stream is open: PortAudio is not restarted meanwhile

    @property
    def resampling(self) -> bool:
        return self.device_rate != SAMPLE_RATE

    @property
    def active(self) -> bool:
        """True while the PortAudio stream runs; False before `start`, after `close`, and once
        the stream stopped by itself (the device vanished or failed)."""
        stream = self._stream
        if stream is None:
            return False
        try:
            return bool(getattr(stream, "active", True))
        except Exception:  # PortAudioError: the stream is gone
            return False

    def _start_stream(self, default_factory: str, callback: Callable[..., None]) -> None:
        if self._stream is not None:
            return
        factory = self._factory
        if factory is None:  # PortAudio's own: held until the stream is closed (`rescan`)
            factory = getattr(hold_portaudio(), default_factory)
            self._holds = True
        extra = {} if self.latency is None else {"latency": self.latency}
        try:
            self._stream = _open(
                factory,
                self.kind,
                self.device_name,
                device=self.device,
                samplerate=self.device_rate,
                blocksize=self.device_frame,
                channels=1,
                dtype="float32",
                callback=callback,
                **extra,
            )
        except BaseException:
            self._let_go()
            raise

    def _stop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                try:
                    stream.close()
                finally:  # (a close that hangs keeps PortAudio held: it is in use)
                    self._let_go()

    def _let_go(self) -> None:
        if self._holds:
            self._holds = False
            let_go_of_portaudio()


class MicStream(RingCounters, _DeviceStream):
    """Captures the microphone; `read_frame` returns 1920-sample 24 kHz frames.

    The callback copies each block into a ring of `capacity_frames` frames; when the consumer
    falls behind, the oldest audio is dropped and counted (`overruns`, `dropped_samples`).
    `clipped_samples` counts the samples at full scale in the blocks read, as the device gave
    them (its rate, its one channel): resampling moves peaks, over full scale or under it;
    `last_clipped` is the count in the block behind the frame just read (the reading thread's).
    """

    kind = "input"

    def __init__(
        self,
        device_rate: int = SAMPLE_RATE,
        *,
        device: int | str | None = None,
        device_name: str = "default",
        capacity_frames: int = 50,
        latency: float | str | None = None,
        stream_factory: StreamFactory | None = None,
    ) -> None:
        super().__init__(device_rate, device, device_name, stream_factory, latency)
        self._ring = RingBuffer(capacity_frames * self.device_frame, overflow="drop_oldest")
        self._resampler = (
            StreamResampler(device_rate, SAMPLE_RATE, self.device_frame)
            if self.resampling
            else None
        )
        self.device_overflows = 0  # PortAudio reported lost input (the callback came late)
        self.clipped_samples = 0
        self.last_clipped = 0

    def start(self) -> None:
        """Open the device and start capturing (AudioDeviceError if it cannot be opened)."""
        self._start_stream("InputStream", self._callback)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if getattr(status, "input_overflow", False):
            self.device_overflows += 1
        self._ring.write(indata[:, 0])

    def read_frame(self, timeout: float | None = None) -> np.ndarray | None:
        """The next 80 ms frame (float32 [1920]); None on timeout or once closed."""
        block = self._ring.read(self.device_frame, timeout)
        if block is None:
            return None
        self.last_clipped = clipped_samples(block)
        self.clipped_samples += self.last_clipped
        return block if self._resampler is None else self._resampler.process(block)

    def clear(self) -> None:
        """Discard captured audio not yet read (call from the reading thread)."""
        self._ring.clear()
        if self._resampler is not None:
            self._resampler.reset()

    @property
    def finished(self) -> bool:
        """True once closed (a device never runs out)."""
        return self._ring.closed

    def close(self) -> None:
        """Stop capturing and wake a blocked reader; safe to call twice."""
        try:
            self._stop_stream()
        finally:
            self._ring.close()


class SpeakerStream(_DeviceStream):
    """Plays agent audio through a `Player` (3-frame pre-buffer, silence on underrun).

    `write_frame` takes 24 kHz float32 (normally 1920 samples) on the producer's thread;
    the device callback only copies queued samples out. `last_clipped` counts the samples at
    full scale or past it that the frame just written became, at the device's rate (resampling
    moves peaks, over full scale or under it); None when it was dropped (the producer's).
    """

    kind = "output"

    def __init__(
        self,
        device_rate: int = SAMPLE_RATE,
        *,
        device: int | str | None = None,
        device_name: str = "default",
        prebuffer_frames: int = PREBUFFER_FRAMES,
        capacity_frames: int = 375,
        echo_tail_s: float = 0.3,
        latency: float | str | None = None,
        stream_factory: StreamFactory | None = None,
    ) -> None:
        super().__init__(device_rate, device, device_name, stream_factory, latency)
        self.player = Player(self.device_frame, prebuffer_frames, capacity_frames, echo_tail_s)
        self._resampler = (
            StreamResampler(SAMPLE_RATE, device_rate, FRAME_SAMPLES) if self.resampling else None
        )
        self._producer_lock = threading.Lock()
        self.device_underflows = 0  # PortAudio reported an output underflow
        self.last_clipped: int | None = None

    def start(self) -> None:
        """Open the device and start the output callback (AudioDeviceError if it cannot)."""
        self._start_stream("OutputStream", self._callback)

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if getattr(status, "output_underflow", False):
            self.device_underflows += 1
        self.player.fill(outdata[:, 0])

    def write_frame(self, pcm: np.ndarray, timeout: float | None = 0.0) -> bool:
        """Queue 24 kHz audio; wait up to `timeout` s for room. False if it was dropped."""
        if self._resampler is not None:
            with self._producer_lock:
                pcm = self._resampler.process(pcm)
        ok = self.player.write(pcm, timeout)
        self.last_clipped = clipped_samples(pcm, FULL_SCALE) if ok else None
        return ok

    def flush(self) -> None:
        """No more audio for now: let what is queued play out even under the pre-buffer."""
        with self._producer_lock:
            if self._resampler is not None:  # push the resampler's last samples out
                tail = math.ceil(self._resampler.latency_samples * SAMPLE_RATE / self.device_rate)
                self.player.write(self._resampler.process(np.zeros(tail, np.float32)))
        self.player.flush()

    def drain(self, timeout: float | None = None) -> bool:
        """Flush and wait until everything queued was played; False on timeout."""
        self.flush()
        return self.player.drain(timeout)

    def clear(self) -> int:
        """Drop queued audio at once (an interruption); returns the frames dropped."""
        with self._producer_lock:
            if self._resampler is not None:
                self._resampler.reset()
            return self.player.clear()

    def audible(self) -> bool:
        return self.player.audible()

    def stats(self) -> PlaybackStats:
        return self.player.stats()

    def close(self) -> None:
        """Stop playback at once (call `drain` first to let it finish); safe to call twice."""
        try:
            self._stop_stream()
        finally:
            self.player.close()


def make_mic(
    device: str | int | None = None,
    *,
    capacity_frames: int = 50,
    latency: float | str | None = None,
) -> MicStream:
    """A MicStream for the device named by `device` (None = default), at 24 kHz if it can.

    Not started: call `start()`. Raises AudioDeviceError naming the device if it is missing.
    """
    info = find_device(device, "input")
    return MicStream(
        choose_rate(info, "input"),
        device=info.index,
        device_name=info.name,
        capacity_frames=capacity_frames,
        latency=latency,
    )


def make_speaker(
    device: str | int | None = None,
    *,
    prebuffer_frames: int = PREBUFFER_FRAMES,
    capacity_frames: int = 375,
    echo_tail_s: float = 0.3,
    latency: float | str | None = None,
) -> SpeakerStream:
    """A SpeakerStream for the device named by `device` (None = default); not started."""
    info = find_device(device, "output")
    return SpeakerStream(
        choose_rate(info, "output"),
        device=info.index,
        device_name=info.name,
        prebuffer_frames=prebuffer_frames,
        capacity_frames=capacity_frames,
        echo_tail_s=echo_tail_s,
        latency=latency,
    )
