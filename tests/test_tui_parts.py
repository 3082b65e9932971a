"""The TUI's parts on their own: step statistics, sparkline, level meter, formats, memory probe."""

from __future__ import annotations

import numpy as np
import pytest
from textual.app import App, ComposeResult

from personaplex_tui.events import StepTiming
from personaplex_tui.memory import process_rss_bytes
from personaplex_tui.tui.format import db_text, human_bytes, human_duration
from personaplex_tui.tui.timing_history import TimingHistory, percentile
from personaplex_tui.tui.widgets.level_bar import CLIP_HOLD_UPDATES, LevelBar, level_fraction
from personaplex_tui.tui.widgets.timing_panel import sparkline
from tests.import_probe import modules_loaded_by


@pytest.mark.parametrize("q", [0, 12.5, 50, 95, 100])
def test_percentile_matches_numpy(q):
    values = np.random.default_rng(0).gamma(3.0, 15.0, size=57)
    assert percentile(sorted(values.tolist()), q) == pytest.approx(np.percentile(values, q))


def test_timing_history_window_rtf_phases_and_history():
    stats = TimingHistory(window=10, history=30)
    assert stats.summary() is None
    stats.add(StepTiming(i, 50.0 + i) for i in range(25))
    s = stats.summary()
    assert s is not None
    assert (s.count, s.window) == (25, 10)
    assert s.max_ms == 74.0 and s.mean_ms == pytest.approx(69.5)
    assert s.rtf == pytest.approx(69.5 / 80.0)
    assert s.over_budget == 0 and s.phases_ms == ()  # phases not measured
    assert stats.recent(3) == [72.0, 73.0, 74.0] and len(stats.recent(100)) == 25
    stats.add([StepTiming(25, 120.0, 10.0, 60.0, 40.0, 10.0)])
    s = stats.summary()
    assert s is not None and s.over_budget == 1
    assert dict(s.phases_ms)["tmp"] == pytest.approx(60.0)  # averaged over measured steps only
    stats.clear()
    assert stats.summary() is None and stats.count == 0


def test_sparkline_shape_colours_and_budget_line():
    values = [10.0, 79.0, 81.0, 200.0]
    lines = sparkline(values, width=8, rows=3)
    assert len(lines) == 3 and all(len(line) == 8 for line in lines)
    bottom = lines[-1]
    assert bottom.plain[:4] == "    "  # older history is blank; the newest is on the right
    styles = {span.style for span in bottom.spans}
    assert "red" in styles and "green" in styles
    assert any("┈" in line.plain for line in lines)  # the 80 ms budget
    tallest = [line.plain[-1] for line in lines]
    assert tallest == ["█", "█", "█"]  # 200 ms is off the scale: a full column
    one_row = sparkline(values, width=3, rows=1)  # scaled to 100 ms; colour tells slow steps
    assert len(one_row) == 1 and one_row[0].plain == "▆▆█"  # only the newest three fit
    assert [span.style for span in one_row[0].spans] == ["yellow", "red", "red"]


class MeterApp(App[None]):
    def compose(self) -> ComposeResult:
        yield LevelBar("mic", id="m")


@pytest.mark.asyncio
async def test_level_bar_shows_level_clipping_and_silence():
    app = MeterApp()
    async with app.run_test(size=(40, 4)) as pilot:
        meter = app.query_one(LevelBar)
        assert meter.silent and "silent" in meter.render().plain
        meter.set_levels(-12.0, -0.5, clipping=True)
        await pilot.pause()
        text = meter.render().plain
        assert "CLIP" in text and "-12.0" in text and "-0.5" in text
        bar = text.splitlines()[0]
        assert bar.count("█") == round(level_fraction(-12.0) * (40 - 6 - 6))
        for _ in range(CLIP_HOLD_UPDATES - 1):
            meter.set_levels(-30.0, -20.0, clipping=False)
        assert meter.clipping  # held long enough to be seen
        meter.set_levels(-30.0, -20.0, clipping=False)
        assert not meter.clipping and "CLIP" not in meter.render().plain


def test_formats():
    assert human_bytes(999) == "999 B"
    assert human_bytes(5_800_000_000) == "5.8 GB"
    assert human_bytes(48_300_000) == "48.3 MB"
    assert human_duration(75) == "1:15" and human_duration(3725) == "1:02:05"
    assert human_duration(None) == "--:--" and human_duration(float("inf")) == "--:--"
    assert db_text(-120.0) == "-inf" and db_text(-3.04) == " -3.0"


def test_memory_probe_sees_an_allocation():
    # In a fresh interpreter: in the test process, freed memory that stays resident (allocator
    # caches of earlier tests) can absorb the new block.
    import subprocess
    import sys

    code = (
        "import numpy as np; from personaplex_tui.memory import process_rss_bytes as rss; "
        "b = rss(); block = np.ones(64 * 1024 * 1024, dtype=np.uint8); print(b, rss())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before > 10_000_000
    assert after - before > 48 * 1024 * 1024
    assert process_rss_bytes() > 10_000_000


def test_settings_and_logging_do_not_load_the_ui():
    loaded = modules_loaded_by(
        "import personaplex_tui.settings, personaplex_tui.logs, personaplex_tui.memory"
    )
    assert "textual" not in loaded
