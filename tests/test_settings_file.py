"""The settings file as the app saves it: only what the user changed, into the file a symlink
points at, with its permissions. Found by an audit of the files the app writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import tomlkit

from personaplex_tui.settings import PERSISTED, SettingsStore


def test_a_save_writes_what_changed_and_keeps_the_rest_following_the_defaults(tmp_path):
    """The first save pinned every default (prompt, max_steps, the sampling values...), so a
    later version's defaults never reached this user."""
    path = tmp_path / "settings.toml"
    path.write_text('# mine\nvoice = "NATF2"  # my voice\nmode = "turn"\n\n[mytable]\nx = 1\n')
    SettingsStore(path).update(voice="NATM1")
    doc = tomlkit.parse(path.read_text())
    assert {k for k in doc if k in PERSISTED} == {"voice", "mode"}
    assert doc["voice"] == "NATM1" and doc["mytable"]["x"] == 1
    assert "# mine" in path.read_text()
    SettingsStore(path).update(max_steps=240)
    assert {k for k in tomlkit.parse(path.read_text()) if k in PERSISTED} == {
        "voice", "mode", "max_steps"
    }  # fmt: skip


def test_a_symlinked_settings_file_is_saved_through_the_link_with_its_permissions(tmp_path):
    """The save replaced the link by a new file (mode 0644) and left the real file unchanged."""
    real = tmp_path / "dotfiles" / "ppx.toml"
    real.parent.mkdir()
    real.write_text('# secret\nvoice = "NATF2"\n')
    os.chmod(real, 0o600)
    link = tmp_path / "settings.toml"
    link.symlink_to(real)
    SettingsStore(link).update(voice="NATM1")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert 'voice = "NATM1"' in real.read_text() and "# secret" in real.read_text()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert not list(Path(real.parent).glob("*.tmp")) and not list(tmp_path.glob("*.tmp"))
