"""Facts about CUDA device 0 from the driver (libcuda through ctypes): SM count, compute capability, shared memory."""

from __future__ import annotations

import ctypes
import functools

from model.backend import on_cuda


def _device_attribute(attribute: int) -> int | None:
    """One attribute of CUDA device 0 from the driver (None: not known, or no CUDA)."""
    if not on_cuda():
        return None
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        device, value = ctypes.c_int(), ctypes.c_int()
        if lib.cuInit(0) or lib.cuDeviceGet(ctypes.byref(device), 0):
            return None
        if lib.cuDeviceGetAttribute(ctypes.byref(value), attribute, device):
            return None
    except (OSError, AttributeError):
        return None
    return value.value


@functools.lru_cache(maxsize=1)
def sm_count() -> int | None:
    """Streaming multiprocessors of CUDA device 0, from the driver (None: not known, or no
    CUDA). Kernels that keep one block per SM resident need it."""
    count = _device_attribute(16)  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
    return count if count is not None and count > 0 else None


@functools.lru_cache(maxsize=1)
def compute_capability() -> tuple[int, int] | None:
    """(major, minor) compute capability of CUDA device 0 (None: not known, or no CUDA)."""
    major, minor = _device_attribute(75), _device_attribute(76)  # CU_DEVICE_ATTRIBUTE_COMPUTE_...
    return (major, minor) if major and minor is not None else None


@functools.lru_cache(maxsize=1)
def shared_memory_optin() -> int | None:
    """The most shared memory (bytes) one block of CUDA device 0 may ask for, dynamic and static
    together (None: not known, or no CUDA). 227 KiB on an H100/H200."""
    size = _device_attribute(97)  # CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    return size if size is not None and size > 0 else None
