"""The per-10 ms calls into livekit's audio processing module, on two fixed int16 buffers.

livekit's documented API (`AudioProcessingModule.process_stream` and friends) builds, serializes
and parses a protobuf message around every 10 ms call: about 15 µs of Python per call, 16-24
calls per 80 ms frame. `DirectCalls` serializes the two requests once (the buffers never move)
and hands them straight to livekit's FFI library, checking each answer against the answer that
means success. It leans on livekit's private modules, so it is used only with the major version
it was tested on (1.x) and only when those modules load; otherwise `PublicCalls` makes the same
calls through the documented API. Both give bit-identical output (tests/test_echo_cancel.py).
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

TESTED_MAJOR = "1"  # livekit's major version whose FFI requests DirectCalls builds


class ApmCalls(Protocol):
    """Process `far` as the reverse (speaker) stream and `near` in place as the mic stream."""

    far: np.ndarray
    near: np.ndarray
    direct: bool

    def reverse(self) -> None: ...

    def forward(self) -> None: ...

    def set_delay(self, delay_ms: int) -> None: ...


class PublicCalls:
    """Through livekit's documented API; the stream delay is set before every mic block."""

    direct = False

    def __init__(self, rtc: Any, apm: Any, sample_rate: int, block: int) -> None:
        self._apm = apm
        self._far = rtc.AudioFrame.create(sample_rate, 1, block)
        self._near = rtc.AudioFrame.create(sample_rate, 1, block)
        # Views on the frames' own buffers: no allocation per block.
        self.far = np.frombuffer(self._far._data, dtype=np.int16)
        self.near = np.frombuffer(self._near._data, dtype=np.int16)
        self._delay_ms: int | None = None

    def reverse(self) -> None:
        self._apm.process_reverse_stream(self._far)

    def forward(self) -> None:
        if self._delay_ms is not None:
            self._apm.set_stream_delay_ms(self._delay_ms)
        self._apm.process_stream(self._near)

    def set_delay(self, delay_ms: int) -> None:
        self._delay_ms = delay_ms


class DirectCalls:
    """Requests serialized once, sent straight to livekit's FFI library.

    WebRTC keeps the stream delay until it is set again, so it is sent only when it changes
    (the documented API's way, once per block, gives the same output)."""

    direct = True

    def __init__(self, apm: Any, sample_rate: int, block: int) -> None:
        from livekit.rtc._ffi_client import FfiClient
        from livekit.rtc._proto import ffi_pb2

        self._apm = apm  # keeps the native module alive as long as the requests name it
        self.far = np.zeros(block, np.int16)
        self.near = np.zeros(block, np.int16)
        lib = FfiClient.instance._ffi_lib
        self._request = lib.livekit_ffi_request
        self._drop = lib.livekit_ffi_drop_handle
        self._pb = ffi_pb2
        self._rev, self._rev_ok = self._serialize(
            "apm_process_reverse_stream", self.far, sample_rate
        )
        self._fwd, self._fwd_ok = self._serialize("apm_process_stream", self.near, sample_rate)
        self._answer = ctypes.POINTER(ctypes.c_ubyte)()
        self._answer_len = ctypes.c_size_t()
        self._answer_ref = ctypes.byref(self._answer)
        self._answer_len_ref = ctypes.byref(self._answer_len)
        self._delay_ms: int | None = None

    def _serialize(self, kind: str, buffer: np.ndarray, sample_rate: int) -> tuple[Any, bytes]:
        request = self._pb.FfiRequest()
        message = getattr(request, kind)
        message.apm_handle = self._apm._ffi_handle.handle
        message.data_ptr = buffer.ctypes.data
        message.size = buffer.nbytes
        message.sample_rate = sample_rate
        message.num_channels = 1
        raw = request.SerializeToString()
        ok = self._pb.FfiResponse()
        getattr(ok, kind).SetInParent()
        return (ctypes.c_ubyte * len(raw)).from_buffer_copy(raw), ok.SerializeToString()

    def _call(self, request: Any, ok: bytes, kind: str) -> None:
        handle = self._request(request, len(request), self._answer_ref, self._answer_len_ref)
        if not handle:
            raise RuntimeError(f"livekit refused the {kind} request")
        try:
            answer = ctypes.string_at(self._answer, self._answer_len.value)
        finally:
            self._drop(handle)
        if answer != ok:
            response = self._pb.FfiResponse()
            response.ParseFromString(answer)
            raise RuntimeError(getattr(response, kind).error or f"livekit: {kind} failed")

    def reverse(self) -> None:
        self._call(self._rev, self._rev_ok, "apm_process_reverse_stream")

    def forward(self) -> None:
        self._call(self._fwd, self._fwd_ok, "apm_process_stream")

    def set_delay(self, delay_ms: int) -> None:
        if delay_ms != self._delay_ms:
            self._apm.set_stream_delay_ms(delay_ms)
            self._delay_ms = delay_ms


def open_calls(
    rtc: Any, apm: Any, sample_rate: int, block: int, direct: bool = True
) -> PublicCalls | DirectCalls:
    """`DirectCalls` where livekit's private FFI modules are those it was written for, else
    `PublicCalls`."""
    if direct and str(getattr(rtc, "__version__", "")).split(".")[0] == TESTED_MAJOR:
        try:
            return DirectCalls(apm, sample_rate, block)
        except (ImportError, AttributeError, TypeError, ValueError):
            pass  # livekit's internals moved: the documented API still works
    return PublicCalls(rtc, apm, sample_rate, block)
