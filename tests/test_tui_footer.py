"""The footer at terminal widths under and over 80 columns: no key drawn over another."""

from __future__ import annotations

import pytest
from textual.widgets._footer import FooterKey

from personaplex_tui.tui.app import PersonaPlexApp
from tests.test_tui_app import build, ready

pytestmark = pytest.mark.asyncio


def shown_keys(app: PersonaPlexApp) -> list[FooterKey]:
    return [k for k in app.main.query(FooterKey) if k.display and k.region.width > 0]


def overlaps(keys: list[FooterKey]) -> list[tuple[str, str]]:
    pairs = []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            if a.region.overlaps(b.region):
                pairs.append((a.description, b.description))
    return pairs


async def footer_labels(pilot, app: PersonaPlexApp) -> list[str]:
    """The labels of the footer's keys on screen, once it is drawn; none covers another."""
    await pilot.pause()
    keys = shown_keys(app)
    assert overlaps(keys) == []
    return [k.description for k in keys]


@pytest.mark.parametrize("width", [60, 70, 79])
async def test_a_narrow_terminal_drops_the_palette_key_rather_than_cover_the_apps_keys(width):
    app, _, _ = build()
    async with app.run_test(size=(width, 20)) as pilot:
        await ready(pilot, app)
        labels = await footer_labels(pilot, app)
        assert "palette" not in labels
        assert labels[:5] == ["Talk", "Mode", "Reset", "Voice", "Settings"]


@pytest.mark.parametrize("width", [80, 120])
async def test_from_80_columns_the_footer_shows_the_palette_key_too(width):
    app, _, _ = build()
    async with app.run_test(size=(width, 24)) as pilot:
        await ready(pilot, app)
        assert "palette" in await footer_labels(pilot, app)
        await pilot.resize_terminal(66, 24)  # and it goes when the terminal is made narrow
        assert "palette" not in await footer_labels(pilot, app)
