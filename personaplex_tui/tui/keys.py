"""The app's key bindings in one table: the main screen's bindings, the help screen and palette."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial

from textual.app import SystemCommand
from textual.binding import Binding
from textual.screen import Screen


@dataclass(frozen=True)
class KeyAction:
    """A key, the app action it runs, its footer label and a sentence of help."""

    key: str
    action: str  # an action of PersonaPlexApp (without the "app." namespace)
    label: str
    help: str
    show: bool = True  # listed in the footer


KEY_ACTIONS: tuple[KeyAction, ...] = (
    KeyAction(
        "space",
        "talk",
        "Talk",
        "Turn-based: start or stop speaking (or interrupt a reply). Duplex: start or stop "
        "the live conversation.",
    ),
    KeyAction("m", "switch_mode", "Mode", "Switch between turn-based and full-duplex."),
    KeyAction("r", "reset", "Reset", "Start a new conversation (applies pending settings)."),
    KeyAction("v", "cycle_voice", "Voice", "Next voice preset (applies on reset)."),
    KeyAction("s", "settings", "Settings", "Open the settings: voice, prompt, sampling, devices."),
    KeyAction("w", "save_recording", "Save", "Save the recording (mic, agent, transcript)."),
    KeyAction("c", "copy_transcript", "Copy", "Copy the transcript to the clipboard.", show=False),
    KeyAction("question_mark", "help", "Help", "Show this help."),
    KeyAction("q", "quit", "Quit", "Stop audio and the model, and quit."),
    KeyAction("escape", "dismiss_error", "Dismiss", "Hide the error message.", show=False),
)

KEY_LABELS = {"space": "space", "question_mark": "?", "escape": "esc"}


def main_bindings() -> list[Binding]:
    """Bindings for the main screen; modal screens do not inherit them."""
    return [Binding(k.key, f"app.{k.action}", k.label, show=k.show) for k in KEY_ACTIONS]


def palette_commands(run_action: Callable[[str], Awaitable[bool]]) -> Iterator[SystemCommand]:
    """The main screen's keys as command-palette entries (the palette lists Quit already)."""
    for key in KEY_ACTIONS:
        if key.action not in ("quit", "dismiss_error"):
            yield SystemCommand(key.label, key.help, partial(run_action, key.action))


# Ctrl+C quits from every screen: a priority binding of the app, since a modal screen (help,
# settings, the command palette) keeps the app's other bindings from its keys.
CTRL_C = Binding("ctrl+c", "help_quit", show=False, system=True, priority=True)


def selection_to_copy(screen: Screen) -> str | None:
    """What Ctrl+C copies instead of quitting: the focused input's selected text, else the
    screen's (a mouse selection); None when nothing is selected."""
    text = getattr(screen.focused, "selected_text", None)
    return text or screen.get_selected_text() or None
