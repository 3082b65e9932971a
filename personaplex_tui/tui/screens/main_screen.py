"""The main screen: status, errors and loading, level meters, step timing, transcript, key footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from personaplex_tui.tui.bridge import LiveData
from personaplex_tui.tui.format import echo_text
from personaplex_tui.tui.keys import main_bindings
from personaplex_tui.tui.timing_history import TimingHistory
from personaplex_tui.tui.widgets.error_banner import ErrorBanner
from personaplex_tui.tui.widgets.level_bar import LevelBar
from personaplex_tui.tui.widgets.load_panel import LoadPanel
from personaplex_tui.tui.widgets.status_bar import StatusBar
from personaplex_tui.tui.widgets.timing_panel import TimingPanel
from personaplex_tui.tui.widgets.transcript_panel import TranscriptPanel


class MainScreen(Screen):
    """Layout, plus routing live data to its widgets; the app feeds it (see `PersonaPlexApp`)."""

    BINDINGS = main_bindings()

    class Ready(Message):
        """The widgets are mounted: the app may start the conversation."""

    def __init__(self, stats: TimingHistory) -> None:
        super().__init__(id="main")
        self._stats = stats

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield ErrorBanner(id="error")
        yield LoadPanel(id="load")
        with Horizontal(id="dashboard"):
            with Vertical(id="meters"):
                yield LevelBar("mic", id="mic-meter")
                yield LevelBar("agent", id="agent-meter")
            yield TimingPanel(self._stats, id="timing")
        yield TranscriptPanel(id="transcript")
        yield Footer(compact=True)  # every key fits in 80 columns

    def on_mount(self) -> None:
        self.query_one("#meters").border_title = "levels · dBFS"
        self.query_one(ErrorBanner).display = False
        self.post_message(self.Ready())

    def silence_meters(self) -> None:
        """No conversation runs: both meters drop to silence (they froze on their last levels,
        a CLIP flag included, after a stop)."""
        for meter in self.query(LevelBar):
            meter.silence()

    def show_live(self, data: LiveData) -> None:
        """New levels, step timings, playback stats or load progress from the bridge."""
        if data.levels is not None:
            lv = data.levels
            mic = self.query_one("#mic-meter", LevelBar)
            mic.set_levels(lv.mic_rms_db, lv.mic_peak_db, lv.mic_clipping)
            agent = self.query_one("#agent-meter", LevelBar)
            agent.set_levels(lv.agent_rms_db, lv.agent_peak_db, lv.agent_clipping)
        if data.echo is not None:  # the mic meter shows the level after echo cancellation
            e = data.echo
            self.query_one("#meters").border_subtitle = echo_text(e.mode, e.delay_ms, e.erle_db)
        timing = self.query_one(TimingPanel)
        if data.timings:
            self._stats.add(data.timings)
            timing.data_changed()
        if data.playback is not None:
            timing.set_playback(data.playback)
        if data.progress is not None:
            self.query_one(LoadPanel).set_progress(data.progress)
