"""A lasting home for the GPU kernels MLX compiles, so that only the first run pays for the JIT.

MLX's CUDA backend compiles its kernels at first use (most of a cold warm-up) and keeps them in
`$MLX_PTX_CACHE_DIR`, by default a folder under the system's temporary directory that a reboot
may empty. Unless the user chose a folder, ppx-tui points it at its own cache folder, one
subfolder per MLX version (the cached kernels are only valid for the version that built them).
Metal and the CPU ignore it.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from personaplex_tui.settings import APP_NAME

ENV_VAR = "MLX_PTX_CACHE_DIR"


def persistent_kernel_cache(cache_root: Path | None = None) -> Path | None:
    """Set `$MLX_PTX_CACHE_DIR` to `<user cache>/mlx-kernels/<mlx version>` unless it is set.

    Returns the folder chosen, or None when the user's own setting was kept. Call it before the
    first kernel runs (MLX reads the variable once, at its first JIT compilation).
    """
    if os.environ.get(ENV_VAR):
        return None
    cache_root = _cache_root(cache_root)
    try:
        version = metadata.version("mlx")
    except metadata.PackageNotFoundError:
        version = "unknown"
    folder = cache_root / "mlx-kernels" / version
    os.environ[ENV_VAR] = str(folder)
    return folder


def precompiled_kernel_cache(cache_root: Path | None = None) -> Path | None:
    """Set `$PPX_CUDA_KERNEL_CACHE` (our own kernels, compiled ahead: `model.cuda.precompiled`)
    to `<user cache>/cuda-kernels` unless it is set. Returns the folder chosen, or None when the
    user's own setting was kept."""
    from model.cuda.cubins import ENV_CACHE

    if os.environ.get(ENV_CACHE):
        return None
    folder = _cache_root(cache_root) / "cuda-kernels"
    os.environ[ENV_CACHE] = str(folder)
    return folder


def _cache_root(cache_root: Path | None) -> Path:
    if cache_root is not None:
        return cache_root
    try:
        import platformdirs

        return platformdirs.user_cache_path(APP_NAME)
    except ImportError:  # headless boxes with only the model's dependencies
        return Path.home() / ".cache" / APP_NAME


def cached_kernels() -> int:
    """How many compiled kernel modules `$MLX_PTX_CACHE_DIR` holds (0 when unset or empty)."""
    folder = os.environ.get(ENV_VAR)
    if not folder or not Path(folder).is_dir():
        return 0
    return sum(1 for _ in Path(folder).rglob("*.ptx"))


# Fewer cached modules than this: most of the step's CUDA kernels are still to be compiled (a
# full warm-up leaves about 30 for one quantization).
FEW_MODULES = 10


def kernels_to_compile() -> bool:
    """True on MLX's CUDA backend while the kernel cache is (nearly) empty: the warm-up will
    JIT-compile the step's kernels (about two minutes on an H200; seconds once cached)."""
    from model.backend import on_cuda

    return on_cuda() and cached_kernels() < FEW_MODULES
