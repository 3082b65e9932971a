"""Memory the process uses right now (resident set size), without psutil."""

from __future__ import annotations

import ctypes
import os
import resource
import sys


def _linux_rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class _MachTaskBasicInfo(ctypes.Structure):
    _fields_ = [
        ("virtual_size", ctypes.c_uint64),
        ("resident_size", ctypes.c_uint64),
        ("resident_size_max", ctypes.c_uint64),
        ("user_time", ctypes.c_int32 * 2),
        ("system_time", ctypes.c_int32 * 2),
        ("policy", ctypes.c_int32),
        ("suspend_count", ctypes.c_int32),
    ]


def _macos_rss() -> int:
    libc = ctypes.CDLL(None)
    task = ctypes.c_uint32.in_dll(libc, "mach_task_self_")
    info = _MachTaskBasicInfo()
    count = ctypes.c_uint32(ctypes.sizeof(info) // 4)
    mach_task_basic_info = 20
    if libc.task_info(task, mach_task_basic_info, ctypes.byref(info), ctypes.byref(count)) != 0:
        raise OSError("task_info failed")
    return int(info.resident_size)


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def process_rss_bytes() -> int:
    """Resident memory of this process in bytes (the peak where the current is unavailable)."""
    try:
        if sys.platform.startswith("linux"):
            return _linux_rss()
        if sys.platform == "darwin":
            return _macos_rss()
    except (OSError, ValueError, AttributeError):
        pass
    return _peak_rss()
