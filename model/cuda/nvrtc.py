"""NVIDIA's runtime compiler (NVRTC) through ctypes: CUDA C++ source in, cubin or PTX out.

The library is the one MLX's CUDA backend itself loaded (found in the process's memory map) or,
failing that, any `libnvrtc.so.13`/`.12` the loader finds. Nothing here touches a GPU: the target
architecture is an argument. docs/cuda-kernels.md §Kernels compiled ahead.
"""

from __future__ import annotations

import ctypes
import os
import re
from functools import cache
from pathlib import Path


class NvrtcError(RuntimeError):
    """NVRTC is missing, or it rejected a source (the message carries its log)."""


_NAMES = ("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so")


def _loaded_path() -> str | None:
    """The NVRTC library already mapped into this process (MLX's), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = re.search(r"(/\S*libnvrtc\.so[.\d]*)$", maps, re.MULTILINE)
    return found.group(1) if found else None


def _pip_path() -> str | None:
    """The `nvidia-cuda-nvrtc` package's library beside MLX (what MLX's CUDA wheel depends on)."""
    import mlx.core as mx

    site = Path(mx.__file__).resolve().parent.parent
    for sub in ("cu13", "cuda_nvrtc"):
        for lib in sorted((site / "nvidia" / sub / "lib").glob("libnvrtc.so*")):
            if "builtins" not in lib.name:
                return str(lib)
    return None


@cache
def library() -> ctypes.CDLL:
    """The NVRTC library; raises NvrtcError when none can be loaded."""
    candidates = [p for p in (os.environ.get("PPX_NVRTC"), _loaded_path(), _pip_path()) if p]
    for name in [*candidates, *_NAMES]:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib
    raise NvrtcError("NVIDIA's runtime compiler (libnvrtc) could not be loaded")


def _check(lib: ctypes.CDLL, result: int, what: str) -> None:
    if result != 0:
        text = lib.nvrtcGetErrorString(result).decode(errors="replace")
        raise NvrtcError(f"{what} failed: {text}")


def version() -> tuple[int, int]:
    """NVRTC's (major, minor) version."""
    lib = library()
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def supported_archs() -> list[int]:
    """The SM versions NVRTC can build machine code (SASS) for, e.g. [75, 80, ..., 90, 100]."""
    lib = library()
    count = ctypes.c_int()
    _check(lib, lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)), "nvrtcGetNumSupportedArchs")
    archs = (ctypes.c_int * count.value)()
    _check(lib, lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
    return list(archs)


def compile_source(source: str, name: str, options: list[str], cubin: bool) -> bytes:
    """Compile one translation unit: the cubin (`cubin=True`, the options must name an `sm_`
    architecture) or the PTX (null-terminated, as the driver wants it)."""
    lib = library()
    prog = ctypes.c_void_p()
    _check(
        lib,
        lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
        "nvrtcCreateProgram",
    )
    try:
        args = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        result = lib.nvrtcCompileProgram(prog, len(options), args)
        if result != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value + 1)
            lib.nvrtcGetProgramLog(prog, log)
            text = log.value.decode(errors="replace").strip()
            raise NvrtcError(f"NVRTC could not compile {name}: {text[-2000:]}")
        size = ctypes.c_size_t()
        get_size, get = (
            (lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN)
            if cubin
            else (lib.nvrtcGetPTXSize, lib.nvrtcGetPTX)
        )
        _check(lib, get_size(prog, ctypes.byref(size)), "getting the compiled size")
        out = ctypes.create_string_buffer(size.value)
        _check(lib, get(prog, out), "getting the compiled code")
        return out.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
