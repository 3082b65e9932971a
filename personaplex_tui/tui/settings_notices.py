"""What the chat tells the user when settings change that a running conversation cannot adopt."""

from __future__ import annotations

from collections.abc import Iterable

from personaplex_tui.tui.screens.settings_screen import PROCESSING_SWITCHES

PROCESSING_FIELDS = frozenset(name for _, _, name in PROCESSING_SWITCHES)


def settings_notices(changed: Iterable[str], *, user_transcript: bool) -> list[str]:
    """One sentence per kind of change in `changed` (field names) that takes effect later."""
    changed = set(changed)
    notices = []
    if "model" in changed:
        notices.append("The new model is used the next time ppx-tui starts.")
    if "user_transcript" in changed:
        state = "on" if user_transcript else "off"
        notices.append(f"Your transcript is {state} from the next time ppx-tui starts.")
    if changed & PROCESSING_FIELDS:
        notices.append("The mic's processing changed; a running conversation's audio restarts.")
    return notices
