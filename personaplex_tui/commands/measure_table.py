"""A two-column table of measures for `bench` and `soak`, whose long values are printed below it."""

from __future__ import annotations

from collections.abc import Iterator

from rich.console import Console, ConsoleOptions, RenderableType
from rich.table import Table
from rich.text import Text

# Values do not wrap (a step line such as "p50 4.78 · p90 4.86 · p99 4.94 · max 6.01 ms" reads
# as one); the measures do, down to this width. A value that would leave them less, such as why
# the user transcript is off, is a numbered note under the table: in its row it took every
# column but its own, and the measures' column was left with no width at all.
MEASURE_MIN_CHARS = 20
_BORDERS = 7  # "│ " + " │ " + " │"


class MeasureTable:
    """Rows of (measure, value), rendered to the console's width as a table, then each value too
    long for a row there as a note ("see [1] below" in its row)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, str]] = []

    def add_row(self, measure: str, value: str) -> None:
        self.rows.append((measure, value))

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        widest = max(1, options.max_width - _BORDERS - MEASURE_MIN_CHARS)
        table = Table(title=self.title, title_justify="left")
        table.add_column("measure")
        table.add_column("value", justify="right", no_wrap=True)
        notes: list[Text] = []
        for measure, value in self.rows:
            if len(value) > widest:
                notes.append(Text(f"[{len(notes) + 1}] {measure.strip()}: {value}"))
                value = f"see [{len(notes)}] below"
            table.add_row(Text(measure), Text(value))  # as text: no rich markup in either
        yield table
        yield from notes
