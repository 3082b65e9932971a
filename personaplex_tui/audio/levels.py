"""Level meters: smoothed RMS and peak in dBFS with a clipping flag, for the mic and the agent."""

from __future__ import annotations

import math
import threading

import numpy as np

from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.events import Levels

FLOOR_DB = -100.0
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipping (unless told, see `update`)


def to_dbfs(amplitude: float) -> float:
    """Amplitude (1.0 = full scale) in dBFS, floored at -100."""
    if amplitude <= 10 ** (FLOOR_DB / 20):
        return FLOOR_DB
    return 20.0 * math.log10(amplitude)


class LevelMeter:
    """One meter. Feed it frames with `update` (off the audio callback, e.g. by the consumer).

    RMS and peak are smoothed on linear amplitude: rises follow `attack_s`, falls `release_s`
    (time constants, so meters look alike whatever the frame size). The clipping flag stays up
    for `clip_hold_s` after a clipped sample.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        attack_s: float = 0.02,
        release_s: float = 0.3,
        peak_release_s: float = 0.8,
        clip_hold_s: float = 1.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.attack_s = attack_s
        self.release_s = release_s
        self.peak_release_s = peak_release_s
        self.clip_hold_s = clip_hold_s
        self.reset()

    def reset(self) -> None:
        self._rms = 0.0
        self._peak = 0.0
        self._since_clip = math.inf

    @staticmethod
    def _follow(current: float, target: float, dt: float, rise_s: float, fall_s: float) -> float:
        tau = rise_s if target > current else fall_s
        if tau <= 0:
            return target
        return target + (current - target) * math.exp(-dt / tau)

    def update(self, pcm: np.ndarray, clipped: bool | None = None) -> None:
        """Take the next block of samples; `clipped` says whether the audio behind it clipped
        (a mic's, counted in its device's own samples; the agent's, in the samples its speaker
        was given: resampling moves peaks over full scale or under it), or None to decide from
        the block's own peak (`CLIP_LEVEL`)."""
        x = np.asarray(pcm, dtype=np.float32)
        if len(x) == 0:
            return
        dt = len(x) / self.sample_rate
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        peak = float(np.max(np.abs(x)))
        self._rms = self._follow(self._rms, rms, dt, self.attack_s, self.release_s)
        self._peak = self._follow(self._peak, peak, dt, 0.0, self.peak_release_s)
        clipped = peak >= CLIP_LEVEL if clipped is None else clipped
        self._since_clip = 0.0 if clipped else self._since_clip + dt

    @property
    def rms_db(self) -> float:
        return to_dbfs(self._rms)

    @property
    def peak_db(self) -> float:
        return to_dbfs(self._peak)

    @property
    def clipping(self) -> bool:
        return self._since_clip < self.clip_hold_s


class LevelMeters:
    """The mic and agent meters together, producing `Levels` events. Thread-safe."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.mic = LevelMeter(sample_rate)
        self.agent = LevelMeter(sample_rate)
        self._lock = threading.Lock()

    def update_mic(self, pcm: np.ndarray, clipped: bool | None = None) -> None:
        with self._lock:
            self.mic.update(pcm, clipped)

    def update_agent(self, pcm: np.ndarray, clipped: bool | None = None) -> None:
        with self._lock:
            self.agent.update(pcm, clipped)

    def reset(self) -> None:
        with self._lock:
            self.mic.reset()
            self.agent.reset()

    def snapshot(self) -> Levels:
        """The current levels as an event."""
        with self._lock:
            return Levels(
                mic_rms_db=self.mic.rms_db,
                mic_peak_db=self.mic.peak_db,
                agent_rms_db=self.agent.rms_db,
                agent_peak_db=self.agent.peak_db,
                mic_clipping=self.mic.clipping,
                agent_clipping=self.agent.clipping,
            )
