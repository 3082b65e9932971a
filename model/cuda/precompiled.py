"""Our kernels compiled by us (NVRTC) and run as MLX precompiled kernels, cached on disk.

`mx.fast.cuda_kernel` compiles a kernel's source in every process and keeps the result in memory
only, so each start of the app paid for our kernels again (seconds each: NVRTC parses MLX's
headers every time). `make_kernel` returns a stand-in for the function `mx.fast.cuda_kernel`
returns: on its first call for a set of input dtypes it writes the whole translation unit itself
(a lean prelude instead of MLX's headers, an `extern "C"` signature), compiles it with
`model.cuda.nvrtc`, keeps the cubin in `$PPX_CUDA_KERNEL_CACHE` (when set: `cubins`), and launches it
through `mx.fast.precompiled_cuda_kernel`. A later process, or a helper process that compiled it
first, finds it on disk. Input shapes a body reads (`x_shape[i]`) become int arguments after the
outputs. Off by `PPX_PRECOMPILED=off`, without NVRTC, or without MLX's precompiled kernels: then
MLX's JIT compiles the kernel as before. docs/cuda-kernels.md §Kernels compiled ahead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import mlx.core as mx

from model.cuda import cubins, nvrtc, units
from model.cuda.env_switch import says

ENV_SWITCH = "PPX_PRECOMPILED"

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


def switched_on() -> bool:
    """`$PPX_PRECOMPILED` does not say off."""
    return not says(ENV_SWITCH, "off", "0", "no", "mlx")


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
        # the inputs whose shape the body reads (`x_shape[i]`): their dimensions are int args
        self._reads_shape = [f"{n}_shape" in source for n in input_names]
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
                shared_memory=self.shared_memory,
            )
        return self._fallback

    def _scalars(self, inputs: list[mx.array]) -> list[int]:
        """The int arguments after the outputs: each dimension of each input whose shape the
        body reads."""
        return [
            int(dim)
            for reads, a in zip(self._reads_shape, inputs, strict=True)
            if reads
            for dim in a.shape
        ]

    def unit(
        self, inputs: list[mx.array], output_dtypes: list[mx.Dtype], template: Any
    ) -> tuple[str, str]:
        """(symbol, source) of the translation unit for these inputs."""
        return units.translation_unit(
            self.name,
            self.header,
            self.body,
            [(n, a.dtype, a.ndim) for n, a in zip(self.input_names, inputs, strict=True)],
            list(zip(self.output_names, output_dtypes, strict=True)),
            list(template or []),
        )

    def _binary(
        self, inputs: list[mx.array], output_dtypes: list[mx.Dtype], template: Any
    ) -> tuple[str, bytes] | None:
        """(symbol, cubin) for these inputs, compiled once (a stand-in's where `use_stand_ins`);
        None when NVRTC fails, with the reason kept in `unavailable_reason`."""
        global unavailable_reason
        key = (
            tuple((a.dtype, a.ndim) for a in inputs),
            tuple(output_dtypes),
            tuple(template or []),
        )
        if key not in self._units:
            try:
                symbol, source = self.unit(inputs, output_dtypes, template)
                if _stand_ins:
                    symbol, source = units.stand_in_unit(
                        symbol, len(inputs), len(output_dtypes), len(self._scalars(inputs))
                    )
                self._units[key] = (
                    symbol,
                    cubins.compiled(symbol, source, *cubins.device_target()),
                )
            except (nvrtc.NvrtcError, ValueError, KeyError, OSError) as err:
                unavailable_reason = f"{self.name}: {err}"
                return None
        return self._units[key]

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
        if _collected is not None:
            _collected.append(self.unit(inputs, output_dtypes, template))
            return [
                mx.zeros(tuple(sh), dtype=d)
                for sh, d in zip(output_shapes, output_dtypes, strict=True)
            ]
        found = self._binary(inputs, output_dtypes, template) if self._fallback is None else None
        if found is not None:
            symbol, binary = found
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
        "dir": os.environ.get(cubins.ENV_CACHE, ""),
        "compiled": int(cubins.stats["compiled"]),
        "compile_s": round(cubins.stats["compile_s"], 3),
        "from_disk": int(cubins.stats["from_disk"]),
        "fallback": unavailable_reason,
    }


def make_kernel(**kw: Any) -> Any:
    """`mx.fast.cuda_kernel(**kw)`, or its precompiled stand-in where `usable()`."""
    if usable():
        return PrecompiledKernel(**kw)
    return mx.fast.cuda_kernel(**kw)
