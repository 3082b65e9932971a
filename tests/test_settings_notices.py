"""The sentences the chat shows for settings that take effect later (tui/settings_notices.py)."""

from personaplex_tui.tui.settings_notices import PROCESSING_FIELDS, settings_notices


def test_no_notice_for_settings_a_conversation_adopts():
    assert settings_notices({"voice", "mode", "temperature"}, user_transcript=False) == []


def test_each_later_change_has_one_sentence():
    assert PROCESSING_FIELDS, "the settings screen lists the mic's processing switches"
    changed = {"model", "user_transcript", *PROCESSING_FIELDS}
    notices = settings_notices(changed, user_transcript=True)
    assert notices == [
        "The new model is used the next time ppx-tui starts.",
        "Your transcript is on from the next time ppx-tui starts.",
        "The mic's processing changed; a running conversation's audio restarts.",
    ]
    assert "is off from" in settings_notices(["user_transcript"], user_transcript=False)[0]
