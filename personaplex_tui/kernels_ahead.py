"""Our CUDA kernels compiled on other threads while the model loads, so that the load-time
checks find them done (model/cuda/ahead.py names them; model/cuda/precompiled.py compiles and
caches them). NVRTC runs outside the GIL, so the units compile side by side, and beside the
main thread's work; the threads touch no MLX array. docs/cuda-kernels.md §Kernels compiled ahead.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import mlx.core as mx

from model.cuda import ahead, cubins


class AheadCompile:
    """One thread per unit, compiling into the kernel cache; `report()` says what they did."""

    def __init__(self, units: list[tuple[str, str]]) -> None:
        self.seconds: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.symbols = [symbol for symbol, _ in units]
        arch, cubin = cubins.device_target()
        self._threads = [
            threading.Thread(
                target=self._compile,
                args=(symbol, source, arch, cubin),
                daemon=True,
                name=f"kernel-ahead-{n}",
            )  # fmt: skip
            for n, (symbol, source) in enumerate(units)
        ]
        for thread in self._threads:
            thread.start()

    def _compile(self, symbol: str, source: str, arch: str, cubin: bool) -> None:
        t0 = time.perf_counter()
        try:
            cubins.compiled(symbol, source, arch, cubin)
        except Exception as err:  # the main thread then compiles it itself, or falls back
            self.errors[symbol] = str(err)[:200]
        self.seconds[symbol] = round(time.perf_counter() - t0, 3)

    def report(self) -> dict[str, Any]:
        """The units, each one's seconds (None: still compiling) and any errors."""
        return {
            "units": len(self.symbols),
            "seconds": {s: self.seconds.get(s) for s in self.symbols},
            "errors": dict(self.errors),
        }


def compile_ahead(
    lm_config: Any,
    dtype: mx.Dtype | None,
    bits: int | None,
    group_size: int = 64,
    mimi_config: Any = None,
) -> AheadCompile | None:
    """Start compiling the kernels a model of `lm_config` (and its Mimi of `mimi_config`) will
    use (None: nothing to compile here: no quantization, not CUDA, kernels not compiled ahead,
    or no unit). Call it on the MLX thread: naming the units builds lazy MLX arrays."""
    if not bits:
        return None
    try:
        found = ahead.units(lm_config, dtype or mx.bfloat16, bits, group_size, mimi_config)
        return AheadCompile(found) if found else None
    except Exception:  # naming the units is an optimisation: the load compiles them anyway
        return None


def compile_stt_ahead(
    transformer_config: Any,
    dtype: mx.Dtype | None,
    bits: int | None,
    group_size: int = 64,
    mimi_config: Any = None,
    codebooks: int = 0,
) -> AheadCompile | None:
    """Start compiling the kernels of the Kyutai STT's transformer (`transformer_config`,
    quantized to `bits`: the temporal kernel, the mat-vec) and, with `mimi_config` (PersonaPlex's
    Mimi), its listener's quantizer kernel for `codebooks` codebooks, while its weights load;
    None as `compile_ahead` (and where neither applies: a float STT without `mimi_config`)."""
    try:
        found = ahead.stt_units(
            transformer_config, dtype or mx.bfloat16, bits, group_size, mimi_config, codebooks
        )
        return AheadCompile(found) if found else None
    except Exception:  # an optimisation: the STT's load compiles it anyway
        return None
