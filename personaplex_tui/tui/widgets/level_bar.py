"""The level bar: the smoothed RMS level as a bar, with a peak mark, dBFS, clipping and silence."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from personaplex_tui.tui.format import db_text

FLOOR_DB = -60.0  # the bar's left end; quieter than this counts as silence
CLIP_HOLD_UPDATES = 12  # keep CLIP lit for this many updates (about 1 s at 12.5 Hz)
_PARTIAL = " ▏▎▍▌▋▊▉"


def level_fraction(db: float) -> float:
    """Position of a level on the bar, 0 (floor) to 1 (0 dBFS)."""
    return min(max((db - FLOOR_DB) / -FLOOR_DB, 0.0), 1.0)


def zone_style(db: float) -> str:
    if db > -6:
        return "red"
    if db > -18:
        return "yellow"
    return "green"


class LevelBar(Widget):
    """One or two lines: `label ████▌──│── -23.4` then `rms … peak … dBFS   CLIP|silent`."""

    DEFAULT_CSS = """
    LevelBar { height: 2; }
    """

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.rms_db = -100.0
        self.peak_db = -100.0
        self.clip_hold = 0

    def silence(self) -> None:
        """Nothing is running: the meter shows silence (not the last level it was given)."""
        self.set_levels(-100.0, -100.0, False)
        self.clip_hold = 0

    def set_levels(self, rms_db: float, peak_db: float, clipping: bool) -> None:
        self.rms_db, self.peak_db = rms_db, peak_db
        self.clip_hold = CLIP_HOLD_UPDATES if clipping else max(self.clip_hold - 1, 0)
        self.refresh()

    @property
    def clipping(self) -> bool:
        return self.clip_hold > 0

    @property
    def silent(self) -> bool:
        return self.rms_db < FLOOR_DB

    def _bar(self, width: int) -> Text:
        bar = Text()
        filled = level_fraction(self.rms_db) * width
        peak_at = (
            round(level_fraction(self.peak_db) * (width - 1)) if self.peak_db > FLOOR_DB else -1
        )
        for i in range(width):
            cell_db = FLOOR_DB + (i + 0.5) / width * -FLOOR_DB
            if i + 1 <= filled:
                bar.append("█", style=zone_style(cell_db))
            elif i < filled:
                bar.append(_PARTIAL[int((filled - i) * 8)], style=zone_style(cell_db))
            elif i == peak_at:
                bar.append("│", style=f"bold {zone_style(cell_db)}")
            else:
                bar.append("─", style="grey35")
        return bar

    def _flag(self) -> Text:
        if self.clipping:
            return Text(" CLIP ", style="bold white on red")
        if self.silent:
            return Text("silent", style="dim italic")
        return Text("")

    def render(self) -> Text:
        width = self.size.width
        label = Text(f"{self.label:<6}", style="bold")
        number = Text(f" {db_text(self.rms_db)}", style="bold" if not self.silent else "dim")
        bar = self._bar(max(width - len(label) - len(number), 4))
        first = Text.assemble(label, bar, number)
        if self.size.height < 2:
            return first
        flag = self._flag()
        # the flag matters more than the unit, and the unit more than the indent
        for indent, unit in ((len(label), " dBFS"), (len(label), ""), (0, "")):
            detail = Text.assemble(
                (" " * indent, ""),
                ("rms ", "dim"),
                db_text(self.rms_db).strip(),
                ("  peak ", "dim"),
                db_text(self.peak_db).strip(),
                (unit, "dim"),
            )
            gap = width - len(detail) - len(flag)
            if gap >= 1:
                break
        detail.append(" " * max(gap, 1))
        detail.append_text(flag)
        detail.truncate(width)
        return Text("\n").join([first, detail])
