"""Text tokens, one per frame, into a transcript: the text so far and its words with times.

Kyutai's STT writes PAD (3) while nothing new is said, EPAD (0) on the frame where a word starts
(in the text's delayed time), then the word's SentencePiece pieces, the first of which begins
with "▁". A word starts at its EPAD (or its first piece when the model wrote none) and ends where
the next one starts, or one frame after its last piece once the transcript is finished. Times are
seconds into the audio: frames less the text's delay (and any silence prefix), 80 ms each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FRAME_S = 0.08


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    end_s: float | None  # None while the word may still grow


class TranscriptBuilder:
    """Feed each frame's text token; read `text` and `words` at any time, `finish` at the end."""

    def __init__(
        self,
        piece: Callable[[int], str],
        *,
        lag_frames: int = 6,
        pad_id: int = 3,
        epad_id: int = 0,
    ) -> None:
        self._piece = piece  # id -> text ("" for padding and control ids, "▁" as a space)
        self.lag_frames = lag_frames
        self.pad_id, self.epad_id = pad_id, epad_id
        self._text: list[str] = []
        self._words: list[list] = []  # [text, start frame, end frame | None, last piece frame]
        self._epad: int | None = None
        self._finished = False

    def _time(self, frame: int) -> float:
        return round(max(0, frame - self.lag_frames) * FRAME_S, 3)

    def feed(self, frame: int, token: int) -> str:
        """One frame's token; returns the text it adds to `text` ("" for padding)."""
        if token == self.epad_id:
            self._epad = frame
            return ""
        piece = "" if token == self.pad_id else self._piece(token)
        if not piece:
            return ""
        new_word = piece.startswith(" ") or not self._words
        if new_word:
            start = self._epad if self._epad is not None else frame
            if self._words and self._words[-1][2] is None:
                self._words[-1][2] = max(start, self._words[-1][3] + 1)
            self._words.append([piece.strip(), start, None, frame])
        else:
            self._words[-1][0] += piece
            self._words[-1][3] = frame
        self._epad = None
        added = piece.lstrip() if not self._text else piece
        self._text.append(added)
        return added

    def finish(self) -> list[Word]:
        """Close the last word (end of the audio or of a turn) and return every word."""
        if self._words and self._words[-1][2] is None:
            self._words[-1][2] = self._words[-1][3] + 1
        return self.words

    @property
    def text(self) -> str:
        return "".join(self._text).strip()

    @property
    def words(self) -> list[Word]:
        return [
            Word(text, self._time(start), None if end is None else self._time(end))
            for text, start, end, _ in self._words
            if text
        ]
