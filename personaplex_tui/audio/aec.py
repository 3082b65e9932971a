"""Acoustic echo cancellation: WebRTC's audio processing (AEC3), built here or livekit's.

The canceller takes the microphone and the far end (the agent audio that went to the speaker,
aligned to the moment it was heard) in any whole number of 10 ms blocks at 24 kHz, and returns
the microphone with the echo removed, optionally with noise suppression, a high-pass filter and
automatic gain. AEC3 finds the remaining delay between the two by itself (its matched filters),
so the alignment only has to be roughly right.

Two builds of it (docs/echo-cancellation.md): `webrtc`, webrtc-audio-processing 2.1 built here
by `apm_build` with AEC3's suppressor tuned to keep more of the near end in double talk, used
wherever it is built; else `livekit`, the `livekit` wheel's (imported on first use). Where
neither loads, `CancellerUnavailableError` says why in one sentence.
"""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from personaplex_tui.audio.apm_calls import ApmCalls, open_calls
from personaplex_tui.audio.apm_library import ENV_LIBRARY
from personaplex_tui.audio.apm_native import NativeCalls, load_library
from personaplex_tui.audio.errors import CancellerUnavailableError
from personaplex_tui.audio.frames import SAMPLE_RATE

log = logging.getLogger(__name__)
BLOCK_SAMPLES = SAMPLE_RATE // 100  # WebRTC processes 10 ms blocks
BACKENDS = ("webrtc", "livekit")
BACKEND_NAMES = {
    "webrtc": "WebRTC AEC3 (webrtc-audio-processing 2.1, built here, tuned for double talk)",
    "livekit": "WebRTC AEC3 (livekit's)",
}
_INT16 = 32767.0


@dataclass(frozen=True)
class ProcessingOptions:
    """Which parts of WebRTC's processing run on the microphone."""

    echo_cancellation: bool = True
    noise_suppression: bool = True
    auto_gain: bool = False
    high_pass: bool = True


def _load_rtc() -> Any:
    try:
        from livekit import rtc
    except Exception as e:  # ImportError, OSError from a native library that will not load
        reason = str(e).strip().rstrip(".") or type(e).__name__
        raise CancellerUnavailableError(
            f"The echo canceller could not be loaded (livekit: {reason})."
        ) from None
    return rtc


class EchoCanceller:
    """One WebRTC audio processing module at 24 kHz mono; not thread-safe (one caller thread).

    `process(mic, far)` takes float32 audio of the same length, a multiple of 240 samples
    (10 ms): `far[i]` must be what the speaker played at about the time `mic[i]` was captured
    (up to a few hundred ms of remaining delay is found by AEC3 itself).
    """

    def __init__(
        self,
        options: ProcessingOptions | None = None,
        stream_delay_ms: int = 0,
        direct_calls: bool = True,
        backend: str | None = None,
        tuned: bool = True,
    ) -> None:
        """`backend`: "webrtc" (the library built here; CancellerUnavailableError where it is
        not), "livekit", or None: the built library where it loads, else livekit's.
        `direct_calls=False` is livekit's documented API (the benchmark's "before").
        `tuned=False` runs the built library with WebRTC's own AEC3 settings (for comparison)."""
        self.options = options if options is not None else ProcessingOptions()
        if backend not in (None, *BACKENDS):
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if backend == "webrtc" and not direct_calls:
            raise ValueError("direct_calls=False is livekit's documented API: backend='livekit'")
        lib = load_library() if backend != "livekit" and direct_calls else None
        if backend == "webrtc" and lib is None:
            raise CancellerUnavailableError(
                f"The tuned echo canceller is not built here ({shlex.quote(sys.executable)} -m "
                f"personaplex_tui.audio.apm_build builds it; {ENV_LIBRARY} names another file)."
            )
        o = self.options
        self._calls: ApmCalls
        native = None
        if lib is not None:
            try:
                native = NativeCalls(
                    lib,
                    SAMPLE_RATE,
                    BLOCK_SAMPLES,
                    echo=o.echo_cancellation,
                    noise=o.noise_suppression,
                    high_pass=o.high_pass,
                    gain=o.auto_gain,
                    tuned=tuned,
                )
            except RuntimeError as e:
                if backend == "webrtc":
                    raise CancellerUnavailableError(
                        f"The echo canceller could not be started ({e})."
                    ) from None
                log.warning("the built echo canceller did not start (%s): livekit's is used", e)
        if native is not None:
            self._calls = native
            self.backend = "webrtc"
        else:
            self._calls = _livekit_calls(o, direct_calls)
            self.backend = "livekit"
        self.stream_delay_ms = int(stream_delay_ms)
        self.blocks = 0

    @property
    def name(self) -> str:
        """Which build of AEC3 runs, in words."""
        return BACKEND_NAMES[self.backend]

    @property
    def direct_calls(self) -> bool:
        """Whether the 10 ms calls skip livekit's per-call protobuf (see `apm_calls`); always
        so for the library built here."""
        return self._calls.direct

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        """The microphone with the far end's echo removed (float32, same length as `mic`)."""
        mic = np.asarray(mic, dtype=np.float32).reshape(-1)
        far = np.asarray(far, dtype=np.float32).reshape(-1)
        if len(mic) != len(far) or len(mic) % BLOCK_SAMPLES:
            raise ValueError(
                f"mic and far must have the same length, a multiple of {BLOCK_SAMPLES} samples "
                f"(got {len(mic)} and {len(far)})"
            )
        mic16 = _to_int16(mic)
        far16 = _to_int16(far)
        out = np.empty(len(mic), dtype=np.float32)
        calls = self._calls
        cancel = self.options.echo_cancellation
        for start in range(0, len(mic), BLOCK_SAMPLES):
            block = slice(start, start + BLOCK_SAMPLES)
            if cancel:
                calls.far[:] = far16[block]
                calls.reverse()
                calls.set_delay(self.stream_delay_ms)
            calls.near[:] = mic16[block]
            calls.forward()
            out[block] = calls.near
            self.blocks += 1
        out /= _INT16
        return out


def _livekit_calls(o: ProcessingOptions, direct_calls: bool) -> ApmCalls:
    rtc = _load_rtc()
    try:
        apm = rtc.AudioProcessingModule(
            echo_cancellation=o.echo_cancellation,
            noise_suppression=o.noise_suppression,
            high_pass_filter=o.high_pass,
            auto_gain_control=o.auto_gain,
        )
        return open_calls(rtc, apm, SAMPLE_RATE, BLOCK_SAMPLES, direct_calls)
    except Exception as e:  # the native runtime failed to start
        reason = str(e).strip().rstrip(".") or type(e).__name__
        raise CancellerUnavailableError(
            f"The echo canceller could not be started (livekit: {reason})."
        ) from None


def _to_int16(pcm: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(pcm, -1.0, 1.0) * _INT16).astype(np.int16)


def canceller_available() -> str | None:
    """None when the canceller can be made here, else the sentence saying why not."""
    try:
        EchoCanceller()
    except CancellerUnavailableError as e:
        return str(e)
    return None
