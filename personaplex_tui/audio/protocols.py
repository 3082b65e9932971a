"""The interfaces controllers program against: any microphone, any speaker (device or file)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from personaplex_tui.events import PlaybackStats


class AudioInput(Protocol):
    """A source of 24 kHz mono float32 frames of 1920 samples: `MicStream` or `FileMic`."""

    sample_rate: int
    frame_samples: int
    device_name: str

    def start(self) -> None: ...

    def read_frame(self, timeout: float | None = None) -> np.ndarray | None:
        """The next frame; None on timeout, or at the end (then `finished` is True)."""
        ...

    @property
    def finished(self) -> bool: ...

    def clear(self) -> None:
        """Discard audio captured but not read yet."""
        ...

    @property
    def overruns(self) -> int: ...

    @property
    def dropped_samples(self) -> int: ...

    def close(self) -> None: ...


class AudioOutput(Protocol):
    """A sink for 24 kHz mono float32 audio behind a pre-buffering player:
    `SpeakerStream` or `FileSpeaker`."""

    sample_rate: int
    frame_samples: int
    device_name: str

    def start(self) -> None: ...

    def write_frame(self, pcm: np.ndarray, timeout: float | None = 0.0) -> bool:
        """Queue audio (waiting up to `timeout` s for room); False when it was dropped."""
        ...

    def flush(self) -> None:
        """No more audio for now: play the rest even if under the pre-buffer."""
        ...

    def drain(self, timeout: float | None = None) -> bool:
        """Flush and wait until all queued audio was played."""
        ...

    def clear(self) -> int:
        """Drop queued audio (an interruption); returns the frames dropped."""
        ...

    def audible(self) -> bool:
        """Agent audio is queued, playing, or just stopped (for echo suppression)."""
        ...

    def stats(self) -> PlaybackStats: ...

    def close(self) -> None: ...
