"""When has the user finished speaking? A decision from the STT's end-of-turn head, frame by frame.

Kyutai's stt-1b-en_fr-candle has 4 extra heads; each gives, per 80 ms frame, the probability that
no one speaks over the next 0.5, 1, 2 or 3 s. Kyutai's own server ends a turn when head 2 passes
0.5. Here that probability is smoothed over a few frames (one noisy frame neither ends a turn nor
counts as speech), and a turn can end only after speech was heard: enough frames with the
probability low (or flagged as speech by a VAD) since the head last said "over", so the
silence before anyone speaks, which the head rightly calls "no one speaking", never ends a turn,
nor do short backchannels seconds apart. Pure host logic, no arrays.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EndOfTurnConfig:
    head: int = 2  # Kyutai's choice: no speech over the next 2 s
    threshold: float = 0.5  # smoothed probability at which the turn ends
    smoothing_frames: int = 3  # moving average over 240 ms
    speech_below: float = 0.25  # a smoothed probability under this counts as speech
    min_speech_frames: int = 4  # 320 ms of speech arm the detector

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1 or not 0 <= self.speech_below < self.threshold:
            raise ValueError("need 0 <= speech_below < threshold < 1")
        if self.smoothing_frames < 1 or self.min_speech_frames < 1 or self.head < 0:
            raise ValueError("smoothing_frames and min_speech_frames must be positive")


class EndOfTurnDetector:
    """Feed each frame's end-of-turn probabilities; `feed` is True on the frame the turn ends."""

    def __init__(self, config: EndOfTurnConfig | None = None) -> None:
        self.config = config or EndOfTurnConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new turn starts)."""
        self._recent: deque[float] = deque(maxlen=self.config.smoothing_frames)
        self.speech_frames = 0  # frames of speech since the last end of turn
        self.smoothed = 1.0

    @property
    def armed(self) -> bool:
        """Enough speech was heard for a turn to end."""
        return self.speech_frames >= self.config.min_speech_frames

    def feed(self, probabilities: Sequence[float], speech: bool = False) -> bool:
        """One frame: the heads' probabilities (`SttStep.end_of_turn`) and, optionally, a VAD's
        verdict. Returns True once per turn, on the frame the smoothed probability of the chosen
        head reaches the threshold after speech; the detector then waits for new speech."""
        cfg = self.config
        if len(probabilities) <= cfg.head:
            raise ValueError(f"the STT model has no end-of-turn head {cfg.head}")
        self._recent.append(float(probabilities[cfg.head]))
        self.smoothed = sum(self._recent) / len(self._recent)
        if speech or self.smoothed < cfg.speech_below:
            self.speech_frames += 1
            return False
        if self.smoothed >= cfg.threshold:  # the head says the speech is over: a turn ends
            armed = self.armed  # if it was long enough; a backchannel ("mm") is forgotten, so
            self.speech_frames = 0  # that two of them, seconds apart, do not add up to a turn
            return armed
        return False
