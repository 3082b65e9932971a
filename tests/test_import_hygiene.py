"""Layering: `model` must not pull in the app, the UI or audio devices."""

import subprocess
import sys


def _loaded_after(import_line: str) -> set[str]:
    code = f"import sys; {import_line}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_model_is_pure_computation():
    mods = _loaded_after("import model")
    for banned in ("textual", "sounddevice", "personaplex_tui", "torch"):
        assert banned not in mods, f"importing model loaded {banned}"


def test_cli_entry_does_not_load_ui_or_audio():
    mods = _loaded_after("import personaplex_tui.cli")
    assert "textual" not in mods
    assert "sounddevice" not in mods
