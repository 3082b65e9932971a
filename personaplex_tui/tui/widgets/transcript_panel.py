"""The transcript: the agent's inner monologue as it streams, user turns marked with their times,
and the user's words as the STT hears them (about 0.5 s behind, dim until the turn ends).

Scrollable (it follows new text until the user scrolls up), selectable with the mouse, and
exported as plain text for the clipboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.containers import VerticalScroll
from textual.widgets import Label, Static

FRAME_S = 0.08
NEW_TURN_GAP_FRAMES = 19  # agent text after 1.5 s of silence starts a new block


@dataclass
class _AgentTurn:
    start_s: float
    last_index: int
    body: Static
    line: int  # its entry in `_lines`
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces).strip()


@dataclass
class _UserLine:
    start_s: float
    body: Static
    line: int  # its entry in `_lines`
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces).strip()


class TranscriptPanel(VerticalScroll):
    """A list of entries: system lines, user turns, agent blocks."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[str] = []  # plain text, one per entry
        self._agent: _AgentTurn | None = None
        self._user: _UserLine | None = None
        self.border_title = "transcript"

    @property
    def agent_text(self) -> str:
        """The text of the agent block being written ("" when none)."""
        return self._agent.text if self._agent else ""

    def _follow(self) -> None:
        """Once the text overflows, keep the newest in view until the user scrolls up; while it
        fits, no anchor (one pushes a short transcript to the bottom of the panel, as when a
        tiny terminal made it overflow for a moment and was then made large again)."""
        overflows = self.max_scroll_y > 0
        if overflows != self.is_anchored:  # (scrolled up: still anchored, released)
            self.anchor(overflows)
            if not overflows:  # anchored, Textual laid what fits out at a negative scroll_y
                self.scroll_y = 0  # (which it set unchecked: scroll_home sees nothing to do)

    def watch_virtual_size(self) -> None:  # the content grew (or shrank)
        self.call_after_refresh(self._follow)

    def on_resize(self) -> None:  # the panel grew (or shrank)
        self.call_after_refresh(self._follow)

    def _mount_entry(self, *widgets: Label | Static) -> None:
        self.mount_all(widgets)

    def add_system(self, message: str) -> None:
        """A dim line between turns: a reset, a mode switch, a loaded model."""
        self.end_agent_turn()
        self._lines.append(f"-- {message} --")
        self._mount_entry(Label(f"── {message} ──", classes="system"))

    def add_user_turn(self, start_s: float, end_s: float, frames: int) -> None:
        self.end_agent_turn()
        span = f"{start_s:.1f}–{end_s:.1f} s"
        self._lines.append(f"[you {span}] ({frames} frames)")
        label = Label(f"you · {span} · spoke {end_s - start_s:.1f} s", classes="who user")
        self._mount_entry(label)

    def add_agent_text(self, index: int, piece: str, t: float | None = None) -> None:
        """Append a piece of inner monologue produced at frame `index`, said at `t` seconds on
        the conversation's timeline (the user's turns' clock, as in transcript.md)."""
        turn = self._agent
        if turn is not None and index - turn.last_index > NEW_TURN_GAP_FRAMES:
            self.end_agent_turn()
            turn = None
        if turn is None:
            body = Static("", classes="said")
            start_s = index * FRAME_S if t is None else t
            turn = self._agent = _AgentTurn(start_s, index, body, len(self._lines))
            self._lines.append("")
            header = Label(f"agent · {start_s:.1f} s", classes="who agent")
            self._mount_entry(header, body)
        turn.pieces.append(piece)
        turn.last_index = index
        self._lines[turn.line] = f"[agent {turn.start_s:.1f} s] {turn.text}"
        turn.body.update(turn.text)

    @property
    def user_text(self) -> str:
        """The text of the user line being heard ("" when none)."""
        return self._user.text if self._user else ""

    def add_user_text(self, t_s: float, piece: str) -> None:
        """A piece of the user's transcript, said at `t_s` (live: the line may still change)."""
        line = self._user
        if line is None:
            self.end_agent_turn()  # the agent's next words go below this line, as in transcript.md
            body = Static("", classes="said heard live")
            line = self._user = _UserLine(t_s, body, len(self._lines))
            self._lines.append("")
            header = Label(f"you · {t_s:.1f} s", classes="who user")
            self._mount_entry(header, body)
        line.pieces.append(piece)
        self._lines[line.line] = f"[you {line.start_s:.1f} s] {line.text}"
        line.body.update(line.text)

    def end_user_line(self, text: str | None = None) -> None:
        """The user's turn ended: the line is final (`text`: its final words, if given)."""
        line, self._user = self._user, None
        if line is None:
            return
        if text is not None:
            line.pieces = [text]
            self._lines[line.line] = f"[you {line.start_s:.1f} s] {line.text}"
            line.body.update(line.text)
        line.body.remove_class("live")

    def end_agent_turn(self) -> None:
        """The next agent text starts a new block."""
        self._agent = None

    def plain_text(self) -> str:
        return "\n".join(self._lines)
