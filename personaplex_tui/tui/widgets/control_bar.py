"""Buttons for the main actions, for the mouse (the keys are in the footer)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button

BUTTONS: tuple[tuple[str, str, str], ...] = (
    ("talk", "Talk", "app.talk"),
    ("mode", "Mode", "app.switch_mode"),
    ("reset", "Reset", "app.reset"),
    ("voice", "Voice", "app.cycle_voice"),
    ("settings", "Settings", "app.settings"),
    ("save", "Save", "app.save_recording"),
    ("help", "Help", "app.help"),
    ("quit", "Quit", "app.quit"),
)


class ControlBar(Horizontal):
    """One row of compact buttons; they do not take focus, so keys keep working."""

    def compose(self) -> ComposeResult:
        for name, label, action in BUTTONS:
            button = Button(label, id=f"btn-{name}", action=action, compact=True)
            button.can_focus = False
            if name == "talk":
                button.variant = "primary"
            yield button

    def set_talk_label(self, label: str) -> None:
        self.query_one("#btn-talk", Button).label = label
