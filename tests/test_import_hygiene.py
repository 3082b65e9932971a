"""Layering: `model` must not pull in the app, the UI or audio devices."""

from tests.import_probe import modules_loaded_by


def test_model_is_pure_computation():
    mods = modules_loaded_by("import model")
    for banned in ("textual", "sounddevice", "personaplex_tui", "torch"):
        assert banned not in mods, f"importing model loaded {banned}"


def test_cli_entry_does_not_load_ui_or_audio():
    mods = modules_loaded_by("import personaplex_tui.cli")
    assert "textual" not in mods
    assert "sounddevice" not in mods
