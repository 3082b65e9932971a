"""The TUI's echo line: the level panel shows the measured echo delay and ERLE live."""

from __future__ import annotations

import pytest

from personaplex_tui.events import EchoStats, Levels
from personaplex_tui.tui.format import echo_text
from personaplex_tui.tui.widgets.level_bar import LevelBar
from tests.test_tui_app import SIZE, build, ready, until


def test_echo_text_says_what_is_known():
    assert echo_text("cancel", 312.4, 31.2) == "ERLE 31 dB · delay 312 ms"
    assert echo_text("cancel", None, None) == "ERLE – · delay –"
    assert echo_text("mute", None, None) == "echo: mic muted while agent talks"
    assert echo_text("off", None, None) == ""


@pytest.mark.asyncio
async def test_the_level_panel_shows_delay_and_erle_as_they_arrive():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        meters = app.main.query_one("#meters")
        assert meters.border_subtitle in (None, "")
        app.bridge(Levels(-31.0, -20.0, -40.0, -30.0))
        app.bridge(EchoStats("cancel", 280.0, 27.6, 2.1))
        await until(pilot, lambda: meters.border_subtitle == "ERLE 28 dB · delay 280 ms")
        assert app.main.query_one("#mic-meter", LevelBar).rms_db == -31.0
        app.bridge(EchoStats("mute"))
        await until(pilot, lambda: "muted" in str(meters.border_subtitle))
