"""What a fresh Python process has loaded after some imports (import hygiene checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules_loaded_by(import_line: str) -> set[str]:
    """The names in `sys.modules` of a new interpreter (run in the repo root) after `import_line`."""
    code = f"import sys; {import_line}; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())
