"""The per-10 ms calls into the WebRTC audio processing library built here (`apm_build`).

The library is freedesktop's webrtc-audio-processing 2.1 with ppx-tui's entry points
(`audio/native/ppx_apm.cc`): AEC3 with its suppressor tuned to keep more of the near end in
double talk, which livekit's wheel cannot be told to do (docs/echo-cancellation.md §WebRTC
2.1 built here). `NativeCalls` has the shape of `apm_calls.ApmCalls`: two fixed int16 buffers,
one call each way per block. `load_library` returns None where the library is not built, is
switched off (PPX_APM_LIBRARY=off) or does not load; the canceller then uses livekit's.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from personaplex_tui.audio.apm_library import SHIM_VERSION, library_path, switched_off

_INT16_P = ctypes.POINTER(ctypes.c_int16)
_lock = threading.Lock()
_loaded: dict[Path, ctypes.CDLL | None] = {}


def load_library(path: Path | None = None) -> ctypes.CDLL | None:
    """The built library with its entry points typed, or None (not built, off, or unusable:
    another version of the entry points, a file that does not load). Loaded once per path."""
    if path is None:
        if switched_off():
            return None
        path = library_path()
    with _lock:
        if path not in _loaded:
            _loaded[path] = _open(path)
        return _loaded[path]


def _open(path: Path) -> ctypes.CDLL | None:
    if not path.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(path))
        lib.ppx_apm_version.restype = ctypes.c_int
        if lib.ppx_apm_version() != SHIM_VERSION:
            return None
        lib.ppx_apm_create.restype = ctypes.c_void_p
        lib.ppx_apm_create.argtypes = [ctypes.c_int] * 6
        lib.ppx_apm_reverse.restype = ctypes.c_int
        lib.ppx_apm_reverse.argtypes = [ctypes.c_void_p, _INT16_P, _INT16_P]
        lib.ppx_apm_forward.restype = ctypes.c_int
        lib.ppx_apm_forward.argtypes = [ctypes.c_void_p, _INT16_P, ctypes.c_int]
        lib.ppx_apm_destroy.restype = None
        lib.ppx_apm_destroy.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):  # not a library, another architecture, missing symbols
        return None
    return lib


class NativeCalls:
    """One module of the built library at `sample_rate`, mono, `block` samples (10 ms)."""

    direct = True

    def __init__(
        self,
        lib: ctypes.CDLL,
        sample_rate: int,
        block: int,
        *,
        echo: bool,
        noise: bool,
        high_pass: bool,
        gain: bool,
        tuned: bool = True,
    ) -> None:
        handle = lib.ppx_apm_create(sample_rate, echo, noise, high_pass, gain, tuned)
        if not handle:
            raise RuntimeError("WebRTC's audio processing module could not be created")
        self._lib = lib
        self._handle: int | None = handle
        self.far = np.zeros(block, np.int16)
        self.near = np.zeros(block, np.int16)
        self._scratch = np.zeros(block, np.int16)
        self._far_p = self.far.ctypes.data_as(_INT16_P)
        self._near_p = self.near.ctypes.data_as(_INT16_P)
        self._scratch_p = self._scratch.ctypes.data_as(_INT16_P)
        self._delay_ms = 0

    def reverse(self) -> None:
        if self._lib.ppx_apm_reverse(self._handle, self._far_p, self._scratch_p):
            raise RuntimeError("WebRTC's audio processing refused a far-end block")

    def forward(self) -> None:
        if self._lib.ppx_apm_forward(self._handle, self._near_p, self._delay_ms):
            raise RuntimeError("WebRTC's audio processing refused a microphone block")

    def set_delay(self, delay_ms: int) -> None:
        self._delay_ms = int(delay_ms)

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            self._lib.ppx_apm_destroy(handle)
