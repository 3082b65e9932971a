"""Every module of both packages imports in a fresh interpreter, and importing them does no more
than it should: `model` loads no app, UI, audio or event-loop library, and no module starts a
thread or loads PortAudio. (The static rules are import-linter's: tests/test_import_contracts.py.)
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_probe import modules_loaded_by

ROOT = Path(__file__).resolve().parents[1]

# Imports every module of a package (but `__main__`, which runs the command line), then reports.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys, threading
package = importlib.import_module(sys.argv[1])
names = [package.__name__] + [
    m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    if m.name.rsplit(".", 1)[-1] != "__main__"
]
for name in names:
    importlib.import_module(name)
print(json.dumps({
    "modules": names,
    "loaded": sorted(sys.modules),
    "threads": [t.name for t in threading.enumerate()],
}))
"""


@functools.cache
def _import_all(package: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, package],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _modules_on_disk(package: str) -> set[str]:
    """Module names of the package's .py files (`__main__` left out, as in the walk)."""
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            names.add(".".join(parts))
    return names


@pytest.fixture(params=["model", "personaplex_tui"])
def imported(request):
    return request.param, _import_all(request.param)


def test_every_module_imports_and_the_walk_finds_them_all(imported):
    package, report = imported
    # A folder without __init__.py would be missed by the walk (and by the wheel).
    assert set(report["modules"]) == _modules_on_disk(package)
    assert len(report["modules"]) > 20


def test_importing_starts_no_thread_and_opens_no_audio_device(imported):
    _, report = imported
    assert report["threads"] == ["MainThread"]
    loaded = set(report["loaded"])
    # PortAudio, the VAD's runtime and the test-only reference load on use, never on import.
    assert loaded & {"sounddevice", "onnxruntime", "torch"} == set()


def test_model_loads_no_app_ui_audio_or_event_loop():
    loaded = set(_import_all("model")["loaded"])
    banned = {
        "personaplex_tui",
        "textual",
        "rich",
        "sounddevice",
        "soundfile",
        "onnxruntime",
        "asyncio",
        "concurrent.futures",
        "torch",
        "huggingface_hub",  # the hub client is imported only to download
    }
    assert loaded & banned == set()
    assert "mlx.core" in loaded  # the walk really imported the computation


def test_cli_entry_does_not_load_ui_or_audio():
    mods = modules_loaded_by("import personaplex_tui.cli")
    assert "textual" not in mods
    assert "sounddevice" not in mods
