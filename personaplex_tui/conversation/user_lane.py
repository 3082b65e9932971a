"""The user's lane of the transcript: the STT's pieces, frame by frame, into live words and
finalised lines, with times on the recording's timeline.

Each step's frame carries the STT's piece of text for the user (`Frame.user_text`, "" for
padding), about `LAG_S` behind the voice. The lane shows them live (`UserTextOut`) and closes
the line when a turn ends (`end_turn`: the turn-based utterance was heard, the end-of-turn head
fired) or after `gap_s` without a new word; a closed line is written to the transcript files
(`TranscriptWriter.user_said`) and announced (`UserSaid`). Runs on the engine thread; host
values only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from personaplex_tui.events import UserSaid, UserTextOut

LAG_S = 0.48  # stt-1b-en_fr's text trails the voice by 6 frames of 80 ms
GAP_S = 1.5  # a pause this long without a new word closes the line (duplex)


@dataclass
class _Line:
    start_s: float
    last_s: float
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces).strip()


class UserLane:
    """Feed each step's frame with its timeline time; `end_turn()` when a turn ends.

    `emit` sends events (the engine's, thread-safe); `transcript()` returns the transcript to
    write to (looked up each time: a recording can be replaced between runs), or None."""

    def __init__(
        self,
        emit: Callable[[Any], None],
        transcript: Callable[[], Any] = lambda: None,
        *,
        lag_s: float = LAG_S,
        gap_s: float = GAP_S,
    ) -> None:
        self._emit = emit
        self._transcript = transcript
        self.lag_s = lag_s
        self.gap_s = gap_s
        self._line: _Line | None = None
        self.lines: list[tuple[float, float, str]] = []  # (start_s, end_s, text), closed

    @property
    def text(self) -> str:
        """The open line's text ("" when none)."""
        return self._line.text if self._line else ""

    def frame(self, t_s: float, step: int, frame: Any) -> None:
        """One step: `t_s` is when its audio began on the timeline, `step` the engine's index."""
        piece = getattr(frame, "user_text", "")
        if getattr(frame, "user_text_id", None) is None:
            return
        said = max(0.0, t_s - self.lag_s)
        line = self._line
        if line is not None and said - line.last_s > self.gap_s:
            self.end_turn()
            line = None
        if not piece:
            return
        if line is None:
            line = self._line = _Line(said, said)
        line.pieces.append(piece)
        line.last_s = said
        self._emit(UserTextOut(index=step, text=piece, t_s=round(said, 3)))
        transcript = self._transcript()
        if transcript is not None:
            transcript.user_text(said, piece, step)

    def end_turn(self) -> None:
        """Close the open line (if it has words): written to the transcript and announced."""
        line, self._line = self._line, None
        if line is None or not line.text:
            return
        end = round(line.last_s + 0.08, 3)
        start = round(line.start_s, 3)
        self.lines.append((start, end, line.text))
        self._emit(UserSaid(start_s=start, end_s=end, text=line.text))
        transcript = self._transcript()
        if transcript is not None:
            transcript.user_said(start, end, line.text)
