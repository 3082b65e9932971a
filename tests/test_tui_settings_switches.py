"""The settings screen's switches for the mic's processing (echo cancellation, noise suppression,
auto gain) and the user's transcript: shown as set, saved, applied, and what they need said."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Label, Switch

from personaplex_tui.settings import Settings, SettingsStore, load_settings
from personaplex_tui.tui.screens.settings_screen import SettingsScreen
from tests.test_tui_app import SIZE, build, fake_of, ready, until

pytestmark = pytest.mark.asyncio

SWITCHES = [
    ("#echo-cancellation", "echo_cancellation", "audio restarts"),
    ("#noise-suppression", "noise_suppression", "audio restarts"),
    ("#auto-gain", "auto_gain", "audio restarts"),
    ("#user-transcript", "user_transcript", "the next time ppx-tui starts"),
]


async def toggle(pilot, app, selector: str) -> None:
    """Focus the switch (scrolling the form to it) and flip it with the space bar."""
    switch = app.screen.query_one(selector, Switch)
    switch.focus()
    await pilot.pause()
    before = switch.value
    await pilot.press("space")
    await until(pilot, lambda: switch.value != before)


@pytest.mark.parametrize(("selector", "name", "said"), SWITCHES)
async def test_each_switch_is_saved_applied_and_says_when_it_takes_effect(
    tmp_path: Path, selector: str, name: str, said: str
):
    store = SettingsStore(tmp_path / "settings.toml")
    app, factory, notes = build(store=store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        before = app.settings
        await pilot.press("s")
        assert isinstance(app.screen, SettingsScreen)
        assert app.screen.query_one(selector, Switch).value == getattr(before, name)
        await toggle(pilot, app, selector)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        flipped = not getattr(before, name)
        assert app.settings == before.replace(**{name: flipped})
        assert getattr(load_settings(store.path), name) is flipped
        fake = fake_of(factory)
        await until(pilot, lambda: fake.calls[-1][0] == "apply_settings")
        assert fake.calls[-1] == ("apply_settings", app.settings)
        assert [n for n in notes if said in n]
        await pilot.pause()
        assert not app.pending_reset  # neither waits for a reset of the conversation


async def test_the_switches_show_the_settings_and_cancel_keeps_them():
    settings = Settings(
        echo_cancellation=False, noise_suppression=False, auto_gain=True, user_transcript=False
    )
    app, factory, notes = build(settings)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        screen = app.screen
        shown = {name: screen.query_one(sel, Switch).value for sel, name, _ in SWITCHES}
        assert shown == {name: getattr(settings, name) for _, name, _ in SWITCHES}
        for selector, _, _ in SWITCHES:
            await toggle(pilot, app, selector)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.settings == settings
        assert "apply_settings" not in fake_of(factory).names()
        assert not notes


async def test_the_echo_cancellation_hint_follows_the_switch():
    app, _, _ = build()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        switch = app.screen.query_one("#echo-cancellation", Switch)
        hint = switch.parent.query_one(".field-hint", Label)  # type: ignore[union-attr]
        assert switch.value and "speakers are fine" in str(hint.render())
        await toggle(pilot, app, "#echo-cancellation")
        await pilot.pause()
        assert "use headphones" in str(hint.render())
        assert "restarts the audio" in str(hint.render())
        mute = app.screen.query_one("#echo", Switch)  # the old mute-while-speaking stays
        assert mute.value is False
