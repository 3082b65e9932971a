"""The help screen: every key, what the mouse does, where the log is."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.events import Click
from textual.screen import ModalScreen
from textual.widgets import Static

from personaplex_tui.tui.keys import KEY_ACTIONS, KEY_LABELS


def keys_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for k in KEY_ACTIONS:
        table.add_row(KEY_LABELS.get(k.key, k.key), k.help)
    table.add_row("ctrl+p", "Command palette: every action by name.")
    table.add_row("ctrl+c", "Quit as q does, exit code 130 (with text selected: copy it).")
    return table


class HelpScreen(ModalScreen[None]):
    """Closed by escape, q or ? (or a click outside)."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def __init__(self, log_path: Path | None = None) -> None:
        super().__init__(id="help")
        self._log_path = log_path

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog") as dialog:
            dialog.border_title = "ppx-tui · keys"
            dialog.border_subtitle = "esc to close"
            yield Static(keys_table(), id="help-keys")
            notes = Text.assemble(
                "\nMouse: click a key in the footer to run it; drag over the transcript to "
                "select text (ctrl+c copies the selection).",
            )
            if self._log_path:
                notes.append(f"\nLog file: {self._log_path}", style="dim")
            yield Static(notes, id="help-notes")

    def action_close(self) -> None:
        self.dismiss()

    def on_click(self, event: Click) -> None:
        if event.widget is self:
            self.dismiss()
