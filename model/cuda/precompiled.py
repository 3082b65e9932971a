"""Our kernels compiled by us (NVRTC) and run as MLX precompiled kernels, cached on disk.

`mx.fast.cuda_kernel` compiles a kernel's source in every process and keeps the result in memory
only, so each start of the app paid for our kernels again (seconds each: NVRTC parses MLX's
headers every time). `make_kernel` returns a stand-in for the function `mx.fast.cuda_kernel`
returns: on its first call for a set of input dtypes it writes the whole translation unit itself
(a lean prelude instead of MLX's headers, an `extern "C"` signature), compiles it with
`model.cuda.nvrtc`, keeps the cubin in `$PPX_CUDA_KERNEL_CACHE` (when set), and launches it
through `mx.fast.precompiled_cuda_kernel`. A later process, or a helper process that compiled it
first, finds it on disk. Input shapes a body reads (`x_shape[i]`) become int arguments after the
outputs. Off by `PPX_PRECOMPILED=off`, without NVRTC, or without MLX's precompiled kernels: then
MLX's JIT compiles the kernel as before. docs/cuda-kernels.md §Kernels compiled ahead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx

from model.cuda import nvrtc
from model.cuda.gpu_facts import compute_capability

ENV_SWITCH = "PPX_PRECOMPILED"
ENV_CACHE = "PPX_CUDA_KERNEL_CACHE"

_TYPES = {
    mx.bfloat16: ("__nv_bfloat16", "bfloat16"),
    mx.float16: ("__half", "float16"),
    mx.float32: ("float", "float32"),
    mx.int32: ("int32_t", "int32"),
    mx.uint32: ("uint32_t", "uint32"),
    mx.int64: ("int64_t", "int64"),
    mx.uint8: ("uint8_t", "uint8"),
    mx.bool_: ("bool", "bool"),
}

PRELUDE = """// Written by ppx-tui's model/cuda/precompiled.py (docs/cuda-kernels.md).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/cstdint>
#include <cooperative_groups.h>
using cuda::std::int32_t;
using cuda::std::int64_t;
using cuda::std::uint32_t;
using cuda::std::uint8_t;
using cuda::std::size_t;
namespace cg = cooperative_groups;
"""

_memory: dict[str, bytes] = {}
# What this process did: units compiled by NVRTC (and the seconds it took), units read from disk.
stats: dict[str, float] = {"compiled": 0, "compile_s": 0.0, "from_disk": 0}
unavailable_reason: str | None = None  # why kernels fell back to MLX's JIT (None: they did not)
_stand_ins = False
_collected: list[tuple[str, str]] | None = None  # while `collecting`: the units kernels asked for


@contextlib.contextmanager
def collecting() -> Iterator[list[tuple[str, str]]]:
    """Within it, kernels compile and launch nothing: each call adds its (symbol, source) to the
    list yielded and returns zeros of its outputs' shapes (lazy arrays, never evaluated), so
    that the units a model will need can be named before it exists (`model.cuda.ahead`)."""
    global _collected
    _collected = []
    try:
        yield _collected
    finally:
        _collected = None


def use_stand_ins() -> None:
    """For processes that only compile MLX's own kernels around ours and use no result
    (personaplex_tui/jit_helper.py): from now on every kernel runs as an empty stand-in of the
    same signature (its outputs stay at their initial value) and skips its load-time check
    (`Kernel.try_check`). The graphs around a kernel, and so MLX's modules for them, are the
    same; the stand-in compiles in a fraction of a second."""
    global _stand_ins
    _stand_ins = True


def stand_ins() -> bool:
    """Whether `use_stand_ins` was called in this process."""
    return _stand_ins


def stand_in_unit(symbol: str, inputs: int, outputs: int, scalars: int) -> tuple[str, str]:
    """(symbol, source) of an empty kernel taking `inputs` + `outputs` pointers and `scalars`
    ints, as a kernel of `translation_unit` does."""
    params = [f"const void* i{k}" for k in range(inputs)]
    params += [f"void* o{k}" for k in range(outputs)]
    params += [f"int s{k}" for k in range(scalars)]
    stand_in = f"{symbol}_stand_in"
    return stand_in, f'extern "C" __global__ void {stand_in}({", ".join(params)}) {{}}\n'


def switched_on() -> bool:
    """`$PPX_PRECOMPILED` does not say off."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() not in ("off", "0", "no", "mlx")


def cuda_type(dtype: mx.Dtype) -> str:
    """The CUDA C++ type of an MLX dtype."""
    return _TYPES[dtype][0]


def template_suffix(template: list[tuple[str, Any]]) -> str:
    """What MLX appends to a kernel's name for its template arguments (`_bfloat16_4_64`)."""
    parts = []
    for _, v in template:
        if isinstance(v, mx.Dtype):
            parts.append(_TYPES[v][1])
        elif isinstance(v, bool):
            parts.append("t" if v else "f")
        else:
            parts.append(str(int(v)))
    return "".join(f"_{p}" for p in parts)


def translation_unit(
    name: str,
    header: str,
    body: str,
    inputs: list[tuple[str, mx.Dtype, int]],
    outputs: list[tuple[str, mx.Dtype]],
    template: list[tuple[str, Any]],
) -> tuple[str, str]:
    """(the kernel's symbol, the whole CUDA C++ source) for inputs of these (name, dtype, ndim).

    The same kernel as MLX's `cuda_kernel` builds, declared `extern "C"`: inputs as `const T*`,
    outputs as `T*`, then `int <input>_shape_<i>` for each dimension of each input whose shape
    the body reads (rebuilt as a local `<input>_shape[]`), and the template as constants."""
    symbol = f"custom_kernel_{name}{template_suffix(template)}"
    params = [f"    const {cuda_type(d)}* {n}" for n, d, _ in inputs]
    params += [f"    {cuda_type(d)}* {n}" for n, d in outputs]
    locals_ = []
    for n, _, ndim in inputs:
        if f"{n}_strides" in body or f"{n}_ndim" in body:
            raise ValueError(f"{name}: a precompiled kernel gets no strides or ndim ({n})")
        if f"{n}_shape" in body and ndim > 0:
            dims = [f"{n}_shape_{i}" for i in range(ndim)]
            params += [f"    int {d}" for d in dims]
            locals_.append(f"  const int {n}_shape[{ndim}] = {{{', '.join(dims)}}};\n")
    consts = []
    for k, v in template:
        if isinstance(v, mx.Dtype):
            consts.append(f"  using {k} = {cuda_type(v)};\n")
        elif isinstance(v, bool):
            consts.append(f"  constexpr bool {k} = {'true' if v else 'false'};\n")
        else:
            consts.append(f"  constexpr int {k} = {int(v)};\n")
    source = (
        PRELUDE
        + header
        + f'\nextern "C" __global__ void {symbol}(\n'
        + ",\n".join(params)
        + ") {\n"
        + "".join(locals_)
        + "".join(consts)
        + body
        + "\n}\n"
    )
    return symbol, source


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
    return [
        "--device-as-default-execution-space",
        f"--gpu-architecture={arch}",
        "-std=c++17",
        *[f"--include-path={d}" for d in include_dirs()],
    ]


def compiled(symbol: str, source: str, arch: str, cubin: bool) -> bytes:
    """The kernel's cubin or PTX: from memory, from `$PPX_CUDA_KERNEL_CACHE`, or compiled now
    (and written there, atomically, for the next process)."""
    major, minor = nvrtc.version()
    key = hashlib.sha256(f"{major}.{minor}\0{arch}\0{source}".encode()).hexdigest()[:20]
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


class PrecompiledKernel:
    """Called like the function `mx.fast.cuda_kernel` returns (keyword arguments), for kernels
    without strides, ndim or scalars; falls back to MLX's JIT for good if NVRTC fails."""

    def __init__(
        self,
        name: str,
        input_names: list[str],
        output_names: list[str],
        source: str,
        header: str = "",
        ensure_row_contiguous: bool = True,
        shared_memory: int = 0,
    ) -> None:
        self.name, self.input_names, self.output_names = name, input_names, output_names
        self.body, self.header = source, header
        self.ensure_row_contiguous, self.shared_memory = ensure_row_contiguous, shared_memory
        self._fallback: Any = None
        self._units: dict[tuple, tuple[str, bytes]] = {}  # (dtypes, ndims, template) -> binary

    def _mlx(self) -> Any:
        if self._fallback is None:
            self._fallback = mx.fast.cuda_kernel(
                name=self.name,
                input_names=self.input_names,
                output_names=self.output_names,
                source=self.body,
                header=self.header,
                ensure_row_contiguous=self.ensure_row_contiguous,
            )
        return self._fallback

    def _scalars(self, inputs: list[mx.array]) -> list[int]:
        """The int arguments after the outputs: each dimension of each input whose shape the
        body reads."""
        return [
            int(a.shape[i])
            for n, a in zip(self.input_names, inputs, strict=True)
            if f"{n}_shape" in self.body
            for i in range(a.ndim)
        ]

    def unit(
        self, inputs: list[mx.array], output_dtypes: list[mx.Dtype], template: Any
    ) -> tuple[str, str]:
        """(symbol, source) of the translation unit for these inputs."""
        return translation_unit(
            self.name,
            self.header,
            self.body,
            [(n, a.dtype, a.ndim) for n, a in zip(self.input_names, inputs, strict=True)],
            list(zip(self.output_names, output_dtypes, strict=True)),
            list(template or []),
        )

    def __call__(
        self,
        *,
        inputs: list[mx.array],
        output_shapes: list[Any],
        output_dtypes: list[mx.Dtype],
        grid: tuple[int, int, int],
        threadgroup: tuple[int, int, int],
        template: Any = None,
        init_value: float | None = None,
        verbose: bool = False,
        stream: Any = None,
    ) -> list[mx.array]:
        global unavailable_reason
        if _collected is not None:
            _collected.append(self.unit(inputs, output_dtypes, template))
            return [
                mx.zeros(tuple(sh), dtype=d)
                for sh, d in zip(output_shapes, output_dtypes, strict=True)
            ]
        if self._fallback is None:
            key = (
                tuple((a.dtype, a.ndim) for a in inputs),
                tuple(output_dtypes),
                tuple(template or []),
            )
            try:
                if key not in self._units:
                    symbol, source = self.unit(inputs, output_dtypes, template)
                    if _stand_ins:
                        symbol, source = stand_in_unit(
                            symbol, len(inputs), len(output_dtypes), len(self._scalars(inputs))
                        )
                    self._units[key] = (symbol, compiled(symbol, source, *device_target()))
                symbol, binary = self._units[key]
            except (nvrtc.NvrtcError, ValueError, KeyError, OSError) as err:
                unavailable_reason = f"{self.name}: {err}"
                binary = b""
            if binary:
                return mx.fast.precompiled_cuda_kernel(
                    name=symbol,
                    compiled_source=binary,
                    inputs=inputs,
                    output_shapes=output_shapes,
                    output_dtypes=output_dtypes,
                    scalars=self._scalars(inputs),
                    grid=grid,
                    threadgroup=threadgroup,
                    shared_memory=self.shared_memory,
                    # a stand-in writes nothing: its outputs start at 0, never as garbage
                    init_value=0.0 if _stand_ins and init_value is None else init_value,
                    ensure_row_contiguous=self.ensure_row_contiguous,
                    stream=stream,
                )
        return self._mlx()(
            inputs=inputs,
            output_shapes=output_shapes,
            output_dtypes=output_dtypes,
            grid=grid,
            threadgroup=threadgroup,
            template=template,
            init_value=init_value,
            verbose=verbose,
            stream=stream,
        )


def usable() -> bool:
    """Kernels may be compiled ahead here: switched on, MLX has precompiled kernels, the CUDA
    backend is there, and NVRTC loads."""
    if not switched_on() or not hasattr(mx.fast, "precompiled_cuda_kernel"):
        return False
    cuda = getattr(mx, "cuda", None)
    if cuda is None or not cuda.is_available():
        return False
    try:
        nvrtc.library()
    except nvrtc.NvrtcError:
        return False
    return True


def report() -> dict[str, Any]:
    """For reports: whether kernels are compiled ahead here, the cache folder, what this process
    compiled or read, and why a kernel fell back to MLX's JIT (None: none did)."""
    return {
        "on": usable(),
        "dir": os.environ.get(ENV_CACHE, ""),
        "compiled": int(stats["compiled"]),
        "compile_s": round(stats["compile_s"], 3),
        "from_disk": int(stats["from_disk"]),
        "fallback": unavailable_reason,
    }


def make_kernel(**kw: Any) -> Any:
    """`mx.fast.cuda_kernel(**kw)`, or its precompiled stand-in where `usable()`."""
    if usable():
        return PrecompiledKernel(**kw)
    return mx.fast.cuda_kernel(**kw)
