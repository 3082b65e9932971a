"""The user's lane: STT pieces into live words and finished lines, in the recording's transcript
files, in the TUI's transcript panel, and end to end through real duplex and turn-based runs
of a small PersonaPlex with a tiny STT."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from textual.widgets import Static

from personaplex_tui.conversation import ControllerConfig
from personaplex_tui.conversation.transcript_writer import TranscriptWriter
from personaplex_tui.conversation.user_lane import UserLane
from personaplex_tui.events import TextOut, UserSaid, UserTextOut, UserTurn
from personaplex_tui.tui.widgets.transcript_panel import TranscriptPanel
from tests.conversation_fakes import CONVERSATION, Events, Probe, run_until_ended
from tests.stt_app import write_pair
from tests.test_tui_app import SIZE, build, ready


@dataclass
class F:
    """A frame as the session returns it with the transcript on (or off: id None)."""

    user_text: str = ""
    user_text_id: int | None = 3


def test_pieces_become_a_line_closed_by_a_pause_or_a_turn_end(tmp_path: Path) -> None:
    events: list = []
    files = TranscriptWriter(tmp_path, "Conversation", {})
    lane = UserLane(events.append, lambda: files, lag_s=0.48, gap_s=1.5)
    said = ["", " Hello", "", " there", "", ""] + [""] * 20 + [" Bye", "."]
    for i, piece in enumerate(said):
        lane.frame(1.0 + i * 0.08, i, F(piece))
        if i == 3:
            files.agent_text(1.3, " Hi!", i)  # the agent talks over the user meanwhile
    assert lane.text == "Bye."
    lane.end_turn()
    lane.end_turn()  # nothing left to close
    files.close(5.0)
    live = [e for e in events if isinstance(e, UserTextOut)]
    assert [(e.index, e.text) for e in live] == [
        (1, " Hello"),
        (3, " there"),
        (26, " Bye"),
        (27, "."),
    ]
    assert live[0].t_s == pytest.approx(1.0 + 0.08 - 0.48)
    final = [e for e in events if isinstance(e, UserSaid)]
    assert [e.text for e in final] == ["Hello there", "Bye."]  # the 1.7 s pause closed the first
    assert final[0].start_s == pytest.approx(0.6) and final[0].end_s == pytest.approx(0.84)
    assert lane.lines == [(e.start_s, e.end_s, e.text) for e in final]
    records = [json.loads(x) for x in (tmp_path / "transcript.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records if r["type"] == "user_text"] == [e.text for e in live]
    assert [r["text"] for r in records if r["type"] == "user_said"] == ["Hello there", "Bye."]
    md = (tmp_path / "transcript.md").read_text()
    assert "**You** · 00:00.6 · Hello there" in md and "**You** · 00:02.6 · Bye." in md
    assert "**Agent** · 00:01.3 · Hi!" in md


def test_frames_without_a_transcript_are_ignored() -> None:
    events: list = []
    lane = UserLane(events.append)
    for i in range(40):
        lane.frame(i * 0.08, i, F(" word", None))
    lane.end_turn()
    assert events == [] and lane.lines == []


@pytest.mark.asyncio
async def test_the_panel_shows_both_lanes_and_finalises_the_user_line() -> None:
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        app.bridge(UserTurn(0.2, 1.4, 16))
        for i, piece in enumerate([" Good", " morning", " to", " you"]):
            app.bridge(UserTextOut(10 + i, piece, 0.4 + 0.08 * i))
        for i, piece in enumerate([" Hello", " there", "!"]):
            app.bridge(TextOut(20 + i, piece))
        await pilot.pause()
        panel = app.main.query_one(TranscriptPanel)
        heard = app.main.query_one("#transcript .heard", Static)
        assert heard.has_class("live") and panel.user_text == "Good morning to you"
        app.bridge(UserSaid(0.4, 0.72, "Good morning to you"))
        await pilot.pause()
        assert not heard.has_class("live") and panel.user_text == ""
        assert panel.plain_text().splitlines() == [
            "[you 0.2–1.4 s] (16 frames)",
            "[you 0.4 s] Good morning to you",
            "[agent 1.6 s] Hello there!",
        ]


@pytest.mark.asyncio
async def test_duplex_agent_words_after_a_user_line_start_a_new_block_and_copy_in_order() -> None:
    """In duplex the agent talks on while the user's lines come: agent text after a user line
    is a new block below it (it was appended to the block above), and the copied text (`c`) has
    every entry once, in order (the user's line was overwritten by the agent's block)."""
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        for i, piece in enumerate([" Hi", " there"]):
            app.bridge(TextOut(1 + i, piece, 0.1 + 0.08 * i))
        app.bridge(UserTextOut(5, " Hello", 0.5))
        app.bridge(TextOut(6, " How", 0.6))  # 3 frames after the agent's last: no gap
        app.bridge(TextOut(7, " are", 0.7))
        app.bridge(UserSaid(0.5, 0.6, "Hello"))
        app.bridge(UserTextOut(9, " Fine", 0.9))
        app.bridge(TextOut(10, " you?", 1.0))
        await pilot.pause()
        panel = app.main.query_one(TranscriptPanel)
        assert panel.plain_text().splitlines() == [
            "[agent 0.1 s] Hi there",
            "[you 0.5 s] Hello",
            "[agent 0.6 s] How are",
            "[you 0.9 s] Fine",
            "[agent 1.0 s] you?",
        ]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"))


def listening_model(pair: tuple[Path, Path]):
    def make():
        import model
        from model.stt import load_stt

        persona = model.load(pair[0])
        persona.listen(load_stt(pair[1]))
        return persona

    return make


@pytest.mark.parametrize("mode", ["duplex", "turn"])
def test_runs_transcribe_the_user_into_events_and_files(pair, tmp_path: Path, mode: str) -> None:
    config = ControllerConfig(
        mode=mode,
        input_file=CONVERSATION,
        output_file=tmp_path / "speaker.wav",
        record_dir=tmp_path / "rec",
        max_steps=10,
    )

    async def main():
        events, probe = Events(), Probe(listening_model(pair))
        conv = await run_until_ended(config, probe, events)
        return events, probe, conv

    events, probe, conv = asyncio.run(main())
    live = probe.sessions[-1]
    pieces = [e.text for e in events.of(UserTextOut)]
    assert len(pieces) > 10 and all(pieces)
    said = events.of(UserSaid)
    assert said and "".join(s.text for s in said).replace(" ", "") == "".join(pieces).replace(
        " ", ""
    )
    folder = next(p for p in (tmp_path / "rec").iterdir() if p.is_dir())
    records = [json.loads(x) for x in (folder / "transcript.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records if r["type"] == "user_text"] == pieces
    assert [r["text"] for r in records if r["type"] == "user_said"] == [s.text for s in said]
    assert "**You** · " in (folder / "transcript.md").read_text()
    assert live is not None
