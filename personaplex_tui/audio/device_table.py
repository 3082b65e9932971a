"""The table of `ppx-tui devices`: each sound device PortAudio lists, and what it is chosen by."""

from __future__ import annotations

from typing import TYPE_CHECKING

from personaplex_tui.audio.devices import DeviceInfo, chosen_by

if TYPE_CHECKING:
    from rich.table import Table


def devices_table(devices: list[DeviceInfo]) -> Table:
    """A Rich table for `ppx-tui devices`: index, name, what it is chosen by (`chosen_by`; for
    input and output apart where they differ), host API, channels, rate, defaults."""
    from rich.table import Table

    table = Table(title="Sound devices", title_justify="left")
    if not devices:
        table.caption = "PortAudio found no sound device."

    table.add_column("#", justify="right")
    table.add_column("name")
    table.add_column("chosen by")
    table.add_column("host API")
    table.add_column("in", justify="right")
    table.add_column("out", justify="right")
    table.add_column("rate", justify="right")
    table.add_column("default")
    by_input, by_output = chosen_by(devices, "input"), chosen_by(devices, "output")
    for d in devices:
        marks = [
            m for m, on in (("input", d.is_default_input), ("output", d.is_default_output)) if on
        ]
        style = "bold" if marks else None
        table.add_row(
            str(d.index),
            d.name,
            _ways(by_input.get(d.index), by_output.get(d.index)),
            d.hostapi,
            str(d.max_input_channels),
            str(d.max_output_channels),
            f"{d.default_samplerate / 1000:g} kHz",
            ", ".join(marks),
            style=style,
        )
    return table


def _ways(by_input: str | None, by_output: str | None) -> str:
    """The table's 'chosen by' cell: one choice, or the input's and the output's where they
    differ (identical cards counted among those of each direction)."""
    if by_input is None or by_output is None or by_input == by_output:
        return by_input or by_output or ""
    return f"{by_input} (in), {by_output} (out)"
