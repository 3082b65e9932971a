"""A two-column table of measures for `bench` and `soak`, whose long values are printed below it."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

# A value up to this long stays on one line in its row (the step lines, "p50 123.45 · p90 ... ms",
# are about 50); a longer one, such as why the user transcript is off, is a note under the table.
# In one row it took every column but the value's and left the measures' column no width at all.
ROW_VALUE_CHARS = 56


class MeasureTable:
    """Rows of (measure, value); `renderable()` is the table, then each long value as a note."""

    def __init__(self, title: str) -> None:
        self._table = Table(title=title, title_justify="left")
        self._table.add_column("measure")  # (narrow: the measures wrap, the values do not)
        self._table.add_column("value", justify="right", no_wrap=True)
        self._notes: list[str] = []

    def add_row(self, measure: str, value: str) -> None:
        """A row; a value longer than ROW_VALUE_CHARS goes under the table as a numbered note."""
        if len(value) > ROW_VALUE_CHARS:
            self._notes.append(f"[{len(self._notes) + 1}] {measure.strip()}: {value}")
            value = f"see [{len(self._notes)}] below"
        self._table.add_row(Text(measure), Text(value))  # as text: no markup in either

    def renderable(self) -> Table | Group:
        """The table, with its notes (wrapped to the width) under it when there are any."""
        if not self._notes:
            return self._table
        return Group(self._table, *(Text(note) for note in self._notes))
