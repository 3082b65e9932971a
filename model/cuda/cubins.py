"""A translation unit compiled once per machine: NVRTC's options for the device, the cubin kept
in `$PPX_CUDA_KERNEL_CACHE` under a lock (docs/cuda-kernels.md §Kernels compiled ahead)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx

from model.cuda import nvrtc
from model.cuda.gpu_facts import compute_capability

ENV_CACHE = "PPX_CUDA_KERNEL_CACHE"
# The headers a unit includes (`model/cuda/units.py`): a cached unit is only as good as the
# headers it was compiled against.
HEADERS = ("cuda_bf16.h", "cuda_fp16.h", "cuda/std/cstdint", "cuda/std/cstddef")

_memory: dict[str, bytes] = {}
# What this process did: units compiled by NVRTC (and the seconds it took), units read from disk.
stats: dict[str, float] = {"compiled": 0, "compile_s": 0.0, "from_disk": 0}


def include_dirs() -> list[str]:
    """Where the CUDA headers are, as MLX's backend looks for them: MLX's bundled headers (with
    CCCL), the `nvidia` Python packages beside it, `$CUDA_HOME`/`$CUDA_PATH`, /usr/local/cuda."""
    mlx_dir = Path(mx.__file__).resolve().parent
    site = mlx_dir.parent
    found = [
        mlx_dir / "include",
        mlx_dir / "include" / "cccl",
        site / "nvidia" / "cu13" / "include",
        site / "nvidia" / "cu13" / "include" / "cccl",
        site / "nvidia" / "cuda_runtime" / "include",
        site / "nvidia" / "cuda_cccl" / "include",
    ]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            found += [Path(os.environ[var]) / "include", Path(os.environ[var]) / "include" / "cccl"]
    found += [Path("/usr/local/cuda/include"), Path("/usr/local/cuda/include/cccl")]
    out: list[str] = []
    for p in found:
        if p.is_dir() and str(p) not in out:
            out.append(str(p))
    return out


def target(major: int, minor: int) -> tuple[str, bool]:
    """NVRTC's --gpu-architecture for a device, and whether it yields a cubin (else PTX), as
    MLX's backend chooses: machine code when NVRTC knows the device, with the `a` features on
    SM 9.0 and later."""
    cubin = major * 10 + minor in nvrtc.supported_archs()
    suffix = "a" if major >= 9 else ""
    return (f"{'sm' if cubin else 'compute'}_{major}{minor}{suffix}", cubin)


def options(arch: str) -> list[str]:
    """NVRTC's options for `arch`: MLX's (device code by default), C++17, the header folders."""
    return [
        "--device-as-default-execution-space",
        f"--gpu-architecture={arch}",
        "-std=c++17",
        *[f"--include-path={d}" for d in include_dirs()],
    ]


@functools.cache
def headers_fingerprint() -> str:
    """Which file each of `HEADERS` is (the first include folder that has it, as NVRTC searches)
    with its size and modification time: a new CUDA toolkit or CCCL beside the same NVRTC changes
    it, and so every unit's cache key."""
    folders = include_dirs()
    parts: list[str] = []
    for name in HEADERS:
        for folder in folders:
            path = Path(folder) / name
            if path.is_file():
                st = path.stat()
                parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
                break
        else:
            parts.append(f"{name}:none")
    return "\n".join(parts)


def compiled(symbol: str, source: str, arch: str, cubin: bool) -> bytes:
    """The kernel's cubin or PTX: from memory, from `$PPX_CUDA_KERNEL_CACHE`, or compiled now
    (and written there, atomically, for the next process). The key: NVRTC's version, the
    architecture, the headers' files (`headers_fingerprint`) and the source."""
    major, minor = nvrtc.version()
    ident = f"{major}.{minor}\0{arch}\0{headers_fingerprint()}\0{source}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:20]
    if key in _memory:
        return _memory[key]
    folder = os.environ.get(ENV_CACHE)
    path = Path(folder) / f"{symbol}-{key}.{'cubin' if cubin else 'ptx'}" if folder else None
    with _compiling(path):  # another process (or thread) compiling it: wait, then read it
        if path is not None and path.is_file():
            data = path.read_bytes()
            stats["from_disk"] += 1
        else:
            t0 = time.perf_counter()
            data = nvrtc.compile_source(source, f"{symbol}.cu", options(arch), cubin)
            stats["compiled"] += 1
            stats["compile_s"] += time.perf_counter() - t0
            if path is not None:
                _store(path, data)
    _memory[key] = data
    return data


@contextlib.contextmanager
def _compiling(path: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` (POSIX `flock`, which processes and threads with
    their own open file see alike); no lock without a cache folder, or where one cannot be
    taken."""
    handle = None
    if path is not None:
        try:
            import fcntl

            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115
            fcntl.flock(handle, fcntl.LOCK_EX)
        except (OSError, ImportError):
            if handle is not None:
                handle.close()
            handle = None
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def _store(path: Path, data: bytes) -> None:
    """Write `data` to `path` by an atomic rename (readers never see half a file); a cache that
    cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass


def device_target() -> tuple[str, bool]:
    """NVRTC's --gpu-architecture for CUDA device 0, and whether it yields a cubin."""
    cc = compute_capability()
    if cc is None:
        raise nvrtc.NvrtcError("the GPU's compute capability is not known")
    return target(*cc)
