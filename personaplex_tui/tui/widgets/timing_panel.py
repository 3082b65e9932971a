"""Step timing: a sparkline of ms/step against the 80 ms budget, percentiles, RTF, buffer, phases.

Repaints are throttled (at most every `REFRESH_S`) so the numbers stay readable while the model
talks at 12.5 steps a second.
"""

from __future__ import annotations

from time import monotonic

from rich.text import Text
from textual.timer import Timer
from textual.widget import Widget

from personaplex_tui.events import PlaybackStats, TurnLatency
from personaplex_tui.tui.timing_history import BUDGET_MS, StepSummary, TimingHistory

REFRESH_S = 0.25
SCALE_MS = 2 * BUDGET_MS  # the sparkline's top (one-row sparklines: ONE_ROW_SCALE_MS)
ONE_ROW_SCALE_MS = 1.25 * BUDGET_MS  # one row has no budget line: colour tells slow steps
_BLOCKS = " ▁▂▃▄▅▆▇█"


def step_style(ms: float) -> str:
    if ms > BUDGET_MS:
        return "red"
    if ms > 0.85 * BUDGET_MS:
        return "yellow"
    return "green"


def sparkline(values: list[float], width: int, rows: int) -> list[Text]:
    """`rows` lines of `width` cells, newest on the right; the budget line marked when rows > 1."""
    values = values[-width:]
    pad = width - len(values)
    scale = SCALE_MS if rows > 1 else ONE_ROW_SCALE_MS
    eighths_total = rows * 8
    budget_eighths = BUDGET_MS / scale * eighths_total
    budget_row = rows - 1 - int(budget_eighths // 8) if rows > 1 else -1
    lines = []
    for row in range(rows):
        line = Text(" " * pad)
        base = (rows - 1 - row) * 8  # eighths below this row
        for ms in values:
            height = min(ms, scale) / scale * eighths_total
            level = int(min(max(round(height - base), 0), 8))
            if level == 0 and height > 0 and row == rows - 1:
                level = 1  # every step shows
            if level:
                line.append(_BLOCKS[level], style=step_style(ms))
            elif row == budget_row:
                line.append("┈", style="grey50")
            else:
                line.append(" ")
        if row == budget_row and pad:
            line = Text("┈" * pad, style="grey50") + line[pad:]
        lines.append(line)
    return lines


def _stats_line(s: StepSummary) -> Text:
    return Text.assemble(
        ("p50 ", "dim"),
        (f"{s.p50_ms:.1f}", step_style(s.p50_ms)),
        ("  p95 ", "dim"),
        (f"{s.p95_ms:.1f}", step_style(s.p95_ms)),
        ("  max ", "dim"),
        (f"{s.max_ms:.1f}", step_style(s.max_ms)),
        (" ms  ", "dim"),
        ("RTF ", "dim"),
        (f"{s.rtf:.2f}", f"bold {step_style(s.mean_ms)}"),
    )


def _buffer_line(p: PlaybackStats | None) -> Text:
    if p is None:
        return Text("buffer -  underruns -", style="dim")
    shown = max(p.prebuffer_frames, min(p.buffered_frames, 8))
    cells = "".join("■" if i < p.buffered_frames else "□" for i in range(shown))
    full = p.buffered_frames >= p.prebuffer_frames
    line = Text.assemble(
        ("buffer ", "dim"),
        (cells, "green" if full else "yellow"),
        f" {p.buffered_frames}/{p.prebuffer_frames}",
        ("  underruns ", "dim"),
        (str(p.underruns), "bold red" if p.underruns else ""),
    )
    if p.dropped_frames or p.overruns:
        line.append("  drops ", style="dim")
        line.append(str(p.dropped_frames + p.overruns), style="bold red")
    return line


PHASE_NAMES = {"enc": "mimi enc", "tmp": "temporal", "dep": "depformer", "dec": "mimi dec"}


def _phases_line(s: StepSummary, width: int) -> Text:
    if not s.phases_ms:
        return Text("phases not measured", style="dim")
    for names in (PHASE_NAMES, None):  # long names where they fit
        line = Text()
        for i, (name, ms) in enumerate(s.phases_ms):
            label = names[name] if names else name
            line.append(("  " if i else "") + f"{label} ", style="dim")
            line.append(f"{ms:.1f}")
        line.append(" ms", style="dim")
        if len(line) <= width:
            break
    return line


def _turn_line(t: TurnLatency) -> Text:
    """How long after you stopped speaking the reply began, and what ended the turn."""
    line = Text("reply ", style="dim")
    line.append(f"{t.end_of_speech_to_reply_s:.2f} s")
    line.append(f" after you stopped · {t.decided_by}", style="dim")
    return line


class TimingPanel(Widget):
    """Reads the app's `TimingHistory` and the newest `PlaybackStats` when it repaints."""

    DEFAULT_CSS = """
    TimingPanel { height: 1fr; }
    """

    def __init__(self, stats: TimingHistory, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.stats = stats
        self.playback: PlaybackStats | None = None
        self.turn_latency: TurnLatency | None = None  # the last turn-based reply's
        self._last_paint = 0.0
        self._timer: Timer | None = None

    def on_mount(self) -> None:
        self.border_title = f"step time · budget {BUDGET_MS:.0f} ms"

    def set_playback(self, playback: PlaybackStats) -> None:
        self.playback = playback
        self.data_changed()

    def set_turn_latency(self, latency: TurnLatency) -> None:
        self.turn_latency = latency
        self.data_changed()

    def data_changed(self) -> None:
        """Repaint soon: now if the last repaint is old enough, else once the interval is up."""
        if self._timer is not None:
            return
        wait = self._last_paint + REFRESH_S - monotonic()
        if wait <= 0:
            self._paint()
        else:
            self._timer = self.set_timer(wait, self._paint)

    def _paint(self) -> None:
        self._timer = None
        self._last_paint = monotonic()
        summary = self.stats.summary()
        if summary is not None:
            over = f" · {summary.over_budget} slow" if summary.over_budget else ""
            self.border_subtitle = f"{summary.count} steps{over}"
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        summary = self.stats.summary()
        if summary is None:
            lines = [Text("waiting for the first step…", style="dim")]
            lines += [Text(""), _buffer_line(self.playback)]
            return Text("\n").join(lines[: max(height, 1)])
        text_lines = [
            _stats_line(summary),
            _buffer_line(self.playback),
            _phases_line(summary, width),
        ]
        if self.turn_latency is not None:
            text_lines.append(_turn_line(self.turn_latency))
        rows = max(height - len(text_lines), 1)
        gutter = 4 if rows > 1 else 0
        spark = sparkline(self.stats.recent(width - gutter), width - gutter, rows)
        if gutter:
            marks = {0: f"{SCALE_MS:>3.0f} ", rows - 1: "  0 "}
            budget_row = rows - 1 - int(BUDGET_MS / SCALE_MS * rows * 8 // 8)
            marks[budget_row] = f"{BUDGET_MS:>3.0f} "
            spark = [Text(marks.get(i, "    "), style="dim") + line for i, line in enumerate(spark)]
        lines = spark + text_lines
        for line in lines:
            line.truncate(width, overflow="ellipsis")
        return Text("\n").join(lines[: max(height, 1)])
