"""Model loading: stage and progress bar (bytes, rate, time left; or the warm-up's graphs)."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from personaplex_tui.events import LoadProgress
from personaplex_tui.tui.format import human_bytes, human_duration, human_rate

STAGE_TITLES = {
    "download": "Downloading the model",
    "load": "Loading the weights",
    "warm_up": "Warming up (compiling kernels, first steps)",
    "prompt": "Prompting the session (voice and system prompt)",
}


def progress_bar(fraction: float, width: int) -> Text:
    done = int(min(max(fraction, 0.0), 1.0) * width)
    return Text.assemble(("━" * done, "bold green"), ("━" * (width - done), "grey35"))


class LoadPanel(Widget):
    """Shown while the model loads and warms up; the app hides it once the session is ready."""

    DEFAULT_CSS = """
    LoadPanel { height: 4; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.progress: LoadProgress | None = None

    def on_mount(self) -> None:
        self.border_title = "loading"

    def set_progress(self, progress: LoadProgress) -> None:
        self.progress = progress
        self.refresh()

    def render(self) -> Text:
        p = self.progress
        width = max(self.size.width, 10)
        if p is None:
            return Text("Starting…", style="bold")
        title = Text(STAGE_TITLES.get(p.stage, p.stage), style="bold")
        if p.total_bytes > 0:
            fraction = p.done_bytes / p.total_bytes
            percent = f" {fraction:4.0%}"
            bar = progress_bar(fraction, max(width - len(title) - len(percent) - 2, 5))
            first = Text.assemble(title, "  ", bar, percent)
            second = Text.assemble(
                f"{human_bytes(p.done_bytes)} of {human_bytes(p.total_bytes)}",
                ("  ·  ", "dim"),
                human_rate(p.rate_bytes_s),
                ("  ·  ", "dim"),
                f"{human_duration(p.eta_s)} left",
            )
        elif p.total_count > 0:  # counted steps (the warm-up's graphs), not bytes
            count = f" {p.done_count}/{p.total_count}"
            bar = progress_bar(
                p.done_count / p.total_count, max(width - len(title) - len(count) - 2, 5)
            )
            first, second = Text.assemble(title, "  ", bar, count), Text(p.message, style="dim")
        else:
            first, second = title, Text(p.message, style="dim")
        if p.total_bytes > 0 and p.message:
            second.append(f"  ·  {p.message}", style="dim")
        for line in (first, second):
            line.truncate(width, overflow="ellipsis")
        return Text("\n").join([first, second])
