"""The CUDA kernel cache folder: a lasting per-MLX-version folder unless the user chose one."""

from __future__ import annotations

import os
from importlib import metadata

from personaplex_tui.kernel_cache import (
    ENV_VAR,
    FEW_MODULES,
    kernels_to_compile,
    persistent_kernel_cache,
    precompiled_kernel_cache,
)


def test_sets_a_versioned_folder_when_unset(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    folder = persistent_kernel_cache(tmp_path)
    assert folder == tmp_path / "mlx-kernels" / metadata.version("mlx")
    assert os.environ[ENV_VAR] == str(folder)


def test_keeps_the_users_choice(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, "/somewhere/else")
    assert persistent_kernel_cache(tmp_path) is None
    assert os.environ[ENV_VAR] == "/somewhere/else"


def test_our_precompiled_kernels_get_a_folder_of_their_own(monkeypatch, tmp_path):
    from model.cuda.cubins import ENV_CACHE

    monkeypatch.delenv(ENV_CACHE, raising=False)
    assert precompiled_kernel_cache(tmp_path) == tmp_path / "cuda-kernels"
    assert os.environ[ENV_CACHE] == str(tmp_path / "cuda-kernels")
    monkeypatch.setenv(ENV_CACHE, "/somewhere/else")
    assert precompiled_kernel_cache(tmp_path) is None
    assert os.environ[ENV_CACHE] == "/somewhere/else"


def test_kernels_to_compile_on_cuda_with_a_nearly_empty_cache(monkeypatch, tmp_path):
    """The first-run note is for MLX's CUDA backend (Metal and the CPU keep no PTX cache)."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setattr("model.backend.on_cuda", lambda: True)
    assert kernels_to_compile()
    for i in range(FEW_MODULES):
        (tmp_path / f"k{i}.ptx").write_text("")
    assert not kernels_to_compile()  # a warm cache: later runs start in seconds
    monkeypatch.setattr("model.backend.on_cuda", lambda: False)
    (tmp_path / "k0.ptx").unlink()
    assert not kernels_to_compile()
