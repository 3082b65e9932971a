"""A prominent error message (e.g. no model and no network), until the user dismisses it."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class ErrorBanner(Widget):
    """Hidden when there is no message; the app sets `message` and toggles `display`."""

    DEFAULT_CSS = """
    ErrorBanner { height: auto; max-height: 8; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.message = ""

    def on_mount(self) -> None:
        self.border_title = "error"
        self.border_subtitle = "esc to dismiss"

    def show(self, message: str) -> None:
        self.message = message
        self.display = True
        self.refresh(layout=True)

    def clear(self) -> None:
        self.message = ""
        self.display = False

    def on_click(self) -> None:
        self.clear()

    def render(self) -> Text:
        return Text(self.message, style="bold")
