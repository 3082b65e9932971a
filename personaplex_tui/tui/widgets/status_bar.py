"""The status bar: conversation state, mode, voice and prompt, model, device and memory."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from personaplex_tui.tui.format import human_bytes

STATE_LABELS: dict[str, tuple[str, str]] = {
    "idle": ("starting", "black on grey70"),
    "loading": ("loading", "black on yellow"),
    "warming_up": ("warming up", "black on yellow"),
    "ready": ("ready", "black on green"),
    "listening": ("listening", "black on bright_cyan"),
    "thinking": ("thinking", "black on magenta"),
    "speaking": ("speaking", "black on bright_magenta"),
    "duplex": ("duplex · live", "black on bright_green"),
    "error": ("error", "white on red"),
    "stopping": ("stopping", "black on grey70"),
}


@dataclass(frozen=True)
class StatusInfo:
    """Everything the status bar shows; the app builds a new one on every change."""

    state: str = "idle"
    detail: str = ""  # what the state is about ("capturing: press space to send"); not errors
    mode: str = "turn-based"
    voice: str = ""
    prompt: str = ""
    model: str = ""  # repo id or folder ("" until known)
    quantization: str = ""
    device: str = ""
    rss_bytes: int | None = None
    device_bytes: int | None = None
    pending_reset: bool = False


def _shorten(text: str, width: int) -> str:
    """Keep the end of a long repo id or path (the informative part)."""
    if width <= 1 or len(text) <= width:
        return text
    return "…" + text[-(width - 1) :]


class StatusBar(Widget):
    """Two lines at the top of the main screen."""

    DEFAULT_CSS = """
    StatusBar { height: 2; padding: 0 1; background: $panel; }
    """

    info: reactive[StatusInfo] = reactive(StatusInfo, layout=False)

    def render(self) -> Text:
        info = self.info
        width = max(self.size.width - 2, 20)
        label, style = STATE_LABELS.get(info.state, (info.state, "reverse"))
        shown = info.detail if info.state != "error" else ""  # (an error's is in its banner)
        first = Text.assemble(
            (f" {label.upper()} ", f"bold {style}"),
            "  ",
            (f"{shown}  " if shown else "", "bold"),
            (info.mode, "bold"),
            ("  voice ", "dim"),
            (info.voice, "bold"),
            ("  prompt ", "dim"),
            info.prompt,
        )
        if info.pending_reset:
            first.append("  ⟳ press r to apply", style="bold yellow")
        first.truncate(width, overflow="ellipsis")

        tail = Text()
        if info.device:
            tail.append("  ")
            tail.append(info.device.upper(), style="bold")
        if info.rss_bytes is not None:
            tail.append("  mem ", style="dim")
            tail.append(human_bytes(info.rss_bytes))
        if info.device_bytes is not None:
            tail.append("  MLX ", style="dim")
            tail.append(human_bytes(info.device_bytes))
        model = info.model or "model not loaded yet"
        quant = f" ({info.quantization})" if info.quantization else ""
        room = width - len(tail) - len("model ") - len(quant)
        second = Text.assemble(("model ", "dim"), _shorten(model, room), quant)
        second.append_text(tail)
        second.truncate(width, overflow="ellipsis")
        return Text("\n").join([first, second])
