"""The CUDA kernel cache folder: a lasting per-MLX-version folder unless the user chose one."""

from __future__ import annotations

import os
from importlib import metadata

from personaplex_tui.kernel_cache import ENV_VAR, persistent_kernel_cache


def test_sets_a_versioned_folder_when_unset(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    folder = persistent_kernel_cache(tmp_path)
    assert folder == tmp_path / "mlx-kernels" / metadata.version("mlx")
    assert os.environ[ENV_VAR] == str(folder)


def test_keeps_the_users_choice(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, "/somewhere/else")
    assert persistent_kernel_cache(tmp_path) is None
    assert os.environ[ENV_VAR] == "/somewhere/else"
