"""Test helper: `ppx-tui ARGS` run as a user runs it, in a subprocess from the repository root,
offline, with this checkout first on the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ppx(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The finished run (text output captured), with `env` added to the environment; with
    `check`, it must have exited 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "personaplex_tui", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def size_now(path: Path) -> int:
    """`path`'s size in bytes, -1 while it does not exist. A run's start creates each output file
    and removes it again (its writability probe, `personaplex_tui/commands/paths.py`), so a
    waiting test can see the file exist and then be gone before it asks for the size."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1
