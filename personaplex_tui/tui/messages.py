"""Textual messages that carry engine events into the app."""

from __future__ import annotations

from textual.message import Message

from personaplex_tui.events import EngineEvent


class EngineEventMessage(Message):
    """One engine event that the app handles in order (state, text, errors, progress...)."""

    def __init__(self, event: EngineEvent) -> None:
        super().__init__()
        self.event = event


class LiveDataArrived(Message):
    """New levels, playback stats or step timings wait in the bridge; a newer one replaces it."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LiveDataArrived)
