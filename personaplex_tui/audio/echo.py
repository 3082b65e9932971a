"""Echo suppression (off by default): mute the mic sent to the model while the agent is audible."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class EchoSuppressor:
    """Replaces microphone frames by silence while `agent_audible()` is true.

    `agent_audible` is normally `Player.audible` (audible audio queued or playing, plus a short
    tail for the room and the output latency). Without headphones the model would otherwise hear
    itself. Off unless `enabled`; toggling `enabled` takes effect on the next frame.
    """

    def __init__(self, agent_audible: Callable[[], bool], enabled: bool = False) -> None:
        self.agent_audible = agent_audible
        self.enabled = enabled
        self.suppressed_frames = 0

    def process(self, frame: np.ndarray) -> np.ndarray:
        """The frame to send to the model: `frame` itself, or zeros of the same shape."""
        if self.enabled and self.agent_audible():
            self.suppressed_frames += 1
            return np.zeros_like(frame)
        return frame
