"""Identical sound cards in the settings screen: listed as 'name #1', 'name #2', stored so, and
opened as the same card once the settings are loaded again."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Select

from personaplex_tui.audio import DeviceInfo, devices
from personaplex_tui.commands.chat import device_names
from personaplex_tui.conversation import AudioFactory, ControllerConfig
from personaplex_tui.settings import Settings, SettingsStore, load_settings
from personaplex_tui.tui.app import PersonaPlexApp, make_app
from personaplex_tui.tui.screens.settings_screen import SettingsScreen
from tests.test_tui_app import ready, until
from tests.tui_fakes import FakeFactory

SIZE = (100, 40)
CODEC = "USB Audio CODEC"
# two identical cards under one host API, as two of one model of USB interface are listed
TWINS = [
    DeviceInfo(0, "Built-in Microphone", "ALSA", 1, 0, 48000.0, is_default_input=True),
    DeviceInfo(1, "Built-in Output", "ALSA", 0, 2, 48000.0, is_default_output=True),
    DeviceInfo(2, CODEC, "ALSA", 1, 2, 48000.0),
    DeviceInfo(3, CODEC, "ALSA", 1, 2, 48000.0),
]


@pytest.fixture
def twins(monkeypatch: pytest.MonkeyPatch) -> None:
    import personaplex_tui.audio

    monkeypatch.setattr(devices, "list_devices", lambda: TWINS)
    monkeypatch.setattr(personaplex_tui.audio, "list_devices", lambda: TWINS)


def chat_app(settings: Settings, store: SettingsStore) -> PersonaPlexApp:
    """The chat app with the real device lister (`chat.device_names`) over TWINS."""
    return make_app(
        settings,
        FakeFactory(),
        store=store,
        list_devices=device_names,
        rss_probe=None,
        cursor_blink=False,
    )


def options(app: PersonaPlexApp, selector: str) -> list[tuple[str, str]]:
    select = app.screen.query_one(selector, Select)
    return [(str(label), str(value)) for label, value in select._options]


async def pick(pilot: Pilot, app: PersonaPlexApp, selector: str, row: int) -> None:
    """Choose the option in `row` (0: the system default) with the keys, as a user does."""
    app.screen.query_one(selector, Select).focus()
    await pilot.press("enter")  # opens the list on the current option (the system default)
    await pilot.pause()
    await pilot.press(*["down"] * row, "enter")
    await pilot.pause()


def opened(settings: Settings) -> tuple[int | None, int | None]:
    """The device numbers the conversation's mic and speaker open for `settings`."""
    factory = AudioFactory(devices=lambda: TWINS, rate=lambda info, direction: 48000)
    config = ControllerConfig.from_settings(settings)
    return factory.open_mic(config).device, factory.open_speaker(config).device  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_either_of_two_identical_cards_is_chosen_and_kept_across_a_reload(
    tmp_path: Path, twins: None
):
    """Both cards were listed as 'USB Audio CODEC' and stored so: the name was refused as
    ambiguous when the conversation opened it, and neither card could be chosen here."""
    store = SettingsStore(tmp_path / "settings.toml")
    app = chat_app(Settings(), store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        assert isinstance(app.screen, SettingsScreen)
        # rows: the system default, the built-in one, the first card, the second card
        await pick(pilot, app, "#input-device", 3)
        await pick(pilot, app, "#output-device", 2)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
    saved = load_settings(store.path)
    assert opened(saved) == (3, 2)
    assert (saved.input_device, saved.output_device) == (f"{CODEC} #2", f"{CODEC} #1")

    again = chat_app(saved, store)  # the next start: the choice is shown as made
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot, again)
        await pilot.press("s")
        for selector, chosen in (
            ("#input-device", f"{CODEC} #2"),
            ("#output-device", f"{CODEC} #1"),
        ):
            assert options(again, selector)[2:] == [
                (f"{CODEC} #{k}", f"{CODEC} #{k}") for k in (1, 2)
            ]
            assert again.screen.query_one(selector, Select).value == chosen


@pytest.mark.asyncio
async def test_a_plain_name_that_identical_cards_share_says_to_pick_one(
    tmp_path: Path, twins: None
):
    """An older settings file's plain name still loads; the screen says why it is not used."""
    store = SettingsStore(tmp_path / "settings.toml")
    store.path.write_text(f'input_device = "{CODEC}"\n')
    app = chat_app(load_settings(store.path), store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        assert options(app, "#input-device")[-1] == (
            f"{CODEC} (2 devices bear this name: pick one)",
            CODEC,
        )
        assert app.screen.query_one("#input-device", Select).value == CODEC
