"""Which MLX backend runs the model: choices that are faster on one backend than on another."""

from __future__ import annotations

import ctypes
import functools

import mlx.core as mx

# MLX's CUDA backend multiplies one vector by at most this many quantized rows with its mat-vec
# kernel; beyond that it runs a GEMM (CUTLASS, JIT-compiled) that also copies the scales and
# biases at every call.
CUDA_MATVEC_ROWS = 16384


def on_cuda() -> bool:
    """True when arrays are computed on an NVIDIA GPU through MLX's CUDA backend."""
    cuda = getattr(mx, "cuda", None)
    return cuda is not None and cuda.is_available() and mx.default_device() == mx.gpu


def matvec_rows() -> int | None:
    """Quantized projections with more output rows than this are run in two halves (None: all
    in one)."""
    return CUDA_MATVEC_ROWS if on_cuda() else None


@functools.lru_cache(maxsize=1)
def sm_count() -> int | None:
    """Streaming multiprocessors of CUDA device 0, from the driver (None: not known, or no
    CUDA). Kernels that keep one block per SM resident need it."""
    if not on_cuda():
        return None
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        device, count = ctypes.c_int(), ctypes.c_int()
        if lib.cuInit(0) or lib.cuDeviceGet(ctypes.byref(device), 0):
            return None
        # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
        if lib.cuDeviceGetAttribute(ctypes.byref(count), 16, device):
            return None
    except (OSError, AttributeError):
        return None
    return count.value if count.value > 0 else None
