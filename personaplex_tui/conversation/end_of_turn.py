"""Turn-based mode: end the user's turn on the STT's end-of-turn head, and time the reply.

While listening, each mic frame also goes through the STT alone (`model.stt.listener.Hearing`,
on the engine thread): the user's words appear live in their lane, and the end-of-turn head's
probability that no one will speak over the next 2 s, smoothed over 3 frames, ends the turn as
soon as it passes 0.5 once speech was heard (`EndOfTurnDetector`; speech = the VAD is inside an
utterance). Silero VAD's second of silence and the utterance limit stay as the fallback, and
are all there is when the STT model has no end-of-turn heads (kyutai/stt-1b-en_fr has none,
its -candle twin has 4) or the transcript is off.

`TurnLatency` reports the time from the end of speech (the VAD's) to the first reply frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from personaplex_tui.conversation.user_lane import UserLane
from personaplex_tui.events import TurnLatency

log = logging.getLogger(__name__)

BY_HEAD = "end-of-turn head"
BY_SILENCE = "silence"
BY_PUSH_TO_TALK = "push-to-talk"


class TurnEnder:
    """Listens alongside the VAD. `call(fn, *args)` runs fn on the engine thread and returns its
    result; `model` is the loaded PersonaPlex (or anything: without a listener this does nothing
    but time the replies)."""

    def __init__(
        self,
        call: Callable[..., Any],
        model: Any,
        lane: UserLane,
        emit: Callable[[Any], None],
        config: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`config`: a `model.stt.end_of_turn.EndOfTurnConfig` (None: Kyutai's choices); `clock`:
        wall seconds, for the time from the decision to the reply."""
        from model.stt.end_of_turn import EndOfTurnDetector  # MLX only once a turn is run

        self._call = call
        self._lane = lane
        self._emit = emit
        self._clock = clock
        self.detector = EndOfTurnDetector(config)
        listener = getattr(model, "listener", None)
        self._hearing = None
        if listener is not None:
            try:
                self._hearing = call(listener.hearing, model)
            except Exception:  # the transcript must never stop the conversation
                log.exception("the live transcript could not start")
        self._decided: tuple[float, float, str] | None = None  # (timeline s, wall s, how)
        self.frames = 0

    @property
    def live(self) -> bool:
        """The user's words are transcribed while they speak (not when the utterance is sent)."""
        return self._hearing is not None

    def reset(self) -> None:
        """A new turn: the STT and the detector start over (what was said is not the next turn)."""
        self.detector.reset()
        self.frames = 0
        if self._hearing is not None:
            self._call(self._hearing.reset)

    def frame(self, pcm: np.ndarray, t_s: float, in_utterance: bool) -> bool:
        """One mic frame that began at `t_s` on the timeline; True when the turn ends now."""
        if self._hearing is None:
            return False
        heard = self._call(self._hearing.hear, pcm)
        self._lane.frame(t_s, -1, heard)
        self.frames += 1
        if not heard.end_of_turn or len(heard.end_of_turn) <= self.detector.config.head:
            return False  # no end-of-turn heads: the VAD decides
        ended = self.detector.feed(heard.end_of_turn, speech=False)
        return ended and in_utterance

    def decided(self, now_s: float, how: str) -> None:
        """The turn ended at timeline time `now_s` (the audio read so far), decided by `how`."""
        self._decided = (now_s, self._clock(), how)
        if self._hearing is not None:
            self._lane.end_turn()

    def reply_started(self, speech_end_s: float) -> TurnLatency | None:
        """The first reply frame is out: report the time since the end of speech."""
        if self._decided is None:
            return None
        now_s, wall, how = self._decided
        self._decided = None
        waited = max(0.0, now_s - speech_end_s)
        latency = TurnLatency(
            end_of_speech_to_reply_s=round(waited + self._clock() - wall, 3),
            decided_by=how,
            decision_s=round(waited, 3),
        )
        self._emit(latency)
        return latency
