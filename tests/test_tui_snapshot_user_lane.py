"""Snapshots of the main screen with the user's lane: a finished line in turn-based mode with the
reply latency in the timing panel, and a line still being heard (dim) in duplex.

Regenerate after a deliberate change with
`pytest tests/test_tui_snapshot_user_lane.py --snapshot-update`.
"""

from __future__ import annotations

from personaplex_tui.events import TextOut, TurnLatency, UserSaid, UserTextOut
from personaplex_tui.settings import Settings
from tests.test_tui_snapshots import feeder, snapshot_app
from tests.tui_fakes import PICTURE_STEP, duplex_events_until, turn_events

WORDS = [" Could", " you", " tell", " me", " when", " my", " parcel", " ships", "?"]


def heard(start_s: float, step: int) -> list:
    return [UserTextOut(step + i, w, round(start_s + 0.24 * i, 2)) for i, w in enumerate(WORDS)]


def test_turn_based_with_the_users_words_and_the_reply_latency(snap_compare):
    events = heard(0.6, -1) + [UserSaid(0.6, 2.8, "".join(WORDS).strip())] + turn_events()
    events.append(TurnLatency(0.46, "end-of-turn head", 0.24))
    assert snap_compare(
        snapshot_app(Settings()), terminal_size=(120, 40), run_before=feeder(events)
    )


def test_duplex_with_a_line_being_heard(snap_compare):
    events = duplex_events_until(PICTURE_STEP)
    events += heard(PICTURE_STEP * 0.08 - 1.5, PICTURE_STEP - 20)[:5]
    events.append(TextOut(PICTURE_STEP, " Sure"))
    settings = Settings().replace(mode="duplex", voice="VARM1", prompt="customer-service")
    assert snap_compare(snapshot_app(settings), terminal_size=(120, 40), run_before=feeder(events))
