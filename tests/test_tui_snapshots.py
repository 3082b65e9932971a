"""Snapshots of the main screen (turn-based and duplex) and the settings screen, 80x24 and 120x40.

The data is fixed (fake controller, injected memory figure), so the pictures are deterministic.
Regenerate after a deliberate change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import asyncio

import pytest
from textual.pilot import Pilot

from personaplex_tui.events import EngineEvent
from personaplex_tui.settings import Settings
from personaplex_tui.tui.app import PersonaPlexApp, make_app
from tests.tui_fakes import (
    PICTURE_STEP,
    FakeFactory,
    duplex_events_until,
    fixed_memory,
    list_devices,
    turn_events,
)

SIZES = [(80, 24), (120, 40)]


def snapshot_app(settings: Settings) -> PersonaPlexApp:
    return make_app(
        settings, FakeFactory(), list_devices=list_devices, rss_probe=fixed_memory,
        cursor_blink=False,
    )  # fmt: skip


def feeder(events: list[EngineEvent]):  # noqa: ANN201 - a pilot callback
    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, PersonaPlexApp)
        while app.state != "ready":
            await asyncio.sleep(0.01)
        for event in events:  # all queued before the app handles any: one coalesced repaint
            app.bridge(event)
        await pilot.pause(0.4)  # past the timing panel's repaint throttle

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen_turn_based(snap_compare, size):
    app = snapshot_app(Settings())
    assert snap_compare(app, terminal_size=size, run_before=feeder(turn_events()))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen_duplex(snap_compare, size):
    app = snapshot_app(Settings().replace(mode="duplex", voice="VARM1", prompt="customer-service"))
    assert snap_compare(
        app, terminal_size=size, run_before=feeder(duplex_events_until(PICTURE_STEP))
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_settings_screen(snap_compare, size):
    app = snapshot_app(Settings(echo_suppression=True, input_device="USB Audio Interface"))
    assert snap_compare(app, terminal_size=size, press=["s"], run_before=feeder([]))
