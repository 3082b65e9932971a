"""The import contracts of pyproject.toml's [tool.importlinter] hold (`lint-imports`), and a
breach of one is caught."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """`lint-imports` (the one installed beside this Python) on the tree at `cwd`."""
    script = Path(sys.executable).with_name("lint-imports")
    command = [str(script)] if script.exists() else [shutil.which("lint-imports") or "lint-imports"]
    return subprocess.run(
        [*command, "--no-cache"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
    )


def test_the_import_contracts_are_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_thread_in_model_breaks_its_contract(tmp_path):
    for package in ("model", "personaplex_tui"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    errors = tmp_path / "model" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport threading  # noqa: E402\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "model is not allowed to import threading" in result.stdout
    assert "model.errors -> threading" in result.stdout


def test_reaching_past_the_cuda_seam_breaks_its_contract(tmp_path):
    for package in ("model", "personaplex_tui"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    lm = tmp_path / "model" / "lm" / "model.py"
    lm.write_text(lm.read_text() + "\nfrom model.cuda import temporal  # noqa: E402,F401\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "model.lm.model -> model.cuda.temporal" in result.stdout
