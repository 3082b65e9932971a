"""Other echo cancellers on PyPI against the app's (livekit's AEC3): issue 17's figures and cost.

    PYTHONPATH=.:/tmp/aec-alt python -m benchmarks.echo_alternatives [--frames 500] [--no-table]
    PYTHONPATH=.:/tmp/aec-alt python -m benchmarks.echo_alternatives --noise [--frames 500]

The candidates are not dependencies of the app: install them beside it, e.g.
`pip install --no-deps --target /tmp/aec-alt pyaec pywebrtc-audio voiceclean webrtc-noise-gain`,
and put that folder on PYTHONPATH; one that does not import is listed and left out. Each
adapter takes and returns 24 kHz float32 in whole 10 ms blocks, like `EchoCanceller`, so that
`measure_case` (tests/echo_paths.py) measures every one the same way. The cost is the CPU time
of this thread per 80 ms frame, all cancellers interleaved frame by frame on the same audio,
median past the first tenth, and its ratio to the app's canceller.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.echo_cancel import interleaved_ms
from personaplex_tui.audio import FRAME_SAMPLES, SAMPLE_RATE
from personaplex_tui.audio.aec import EchoCanceller, ProcessingOptions, _to_int16
from tests.echo_paths import CASES, measure_case

BLOCK = SAMPLE_RATE // 100


class SpeexMdf:
    """`pyaec` (aec-rs: SpeexDSP's MDF echo canceller, then Speex's preprocessor with the echo
    state: residual echo suppression and denoising), through its C API on numpy buffers."""

    def __init__(self, tail_s: float = 0.5, frame: int = BLOCK, preprocess: bool = True) -> None:
        from pyaec import lib

        self._lib = lib
        self._frame = frame
        self._handle = lib.AecNew(frame, int(tail_s * SAMPLE_RATE), SAMPLE_RATE, preprocess)
        if not self._handle:
            raise RuntimeError("pyaec: AecNew failed")
        self._out = np.zeros(frame, np.int16)
        self._ptr = ctypes.POINTER(ctypes.c_int16)

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        mic16, far16 = _to_int16(mic), _to_int16(far)
        out = np.empty(len(mic16), np.float32)
        f, ptr, lib = self._frame, self._ptr, self._lib
        out_p = self._out.ctypes.data_as(ptr)
        for s in range(0, len(mic16) - f + 1, f):
            m, e = mic16[s : s + f], far16[s : s + f]
            lib.AecCancelEcho(self._handle, m.ctypes.data_as(ptr), e.ctypes.data_as(ptr), out_p, f)
            out[s : s + f] = self._out
        return out / 32767.0

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.AecDestroy(self._handle)
            self._handle = None


class PyWebrtcAudio:
    """`pywebrtc-audio`: its own build of WebRTC's APM (`AudioProcessor`, AEC3 with NS and the
    high-pass filter) or AEC3 alone (`EchoCanceller`), 80 ms per call."""

    def __init__(self, full: bool = True) -> None:
        import pywebrtc_audio as pw

        if full:
            self._p = pw.AudioProcessor(
                sample_rate=SAMPLE_RATE,
                echo_cancellation=True,
                noise_suppression=True,
                high_pass_filter=True,
            )
        else:
            self._p = pw.EchoCanceller(sample_rate=SAMPLE_RATE)

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        mic16, far16 = _to_int16(mic), _to_int16(far)
        out = np.empty(len(mic16), np.float32)
        for s in range(0, len(mic16), FRAME_SAMPLES):
            e = min(s + FRAME_SAMPLES, len(mic16))
            out[s:e] = self._p.process(mic16[s:e], far16[s:e])
        return out / 32767.0


class PyWebrtcAec16k:
    """`pywebrtc-audio`'s `EchoCanceller` (AEC3 without the rest of the APM: it takes 16, 32 or
    48 kHz, not 24) at 16 kHz, soxr around it, then livekit's noise suppression and high-pass
    filter at 24 kHz (without them the echo under -50 dBFS noise is never 25 dB down).
    `streaming=True` resamples frame by frame as the app would (the cost row, 75+ ms of added
    latency); `streaming=False` resamples whole signals, so the output stays aligned (the
    figures)."""

    RATE = 16000

    def __init__(self, streaming: bool = True) -> None:
        import pywebrtc_audio as pw

        from personaplex_tui.audio.resample import StreamResampler

        self._ec = pw.EchoCanceller(sample_rate=self.RATE)
        self._post = EchoCanceller(ProcessingOptions(echo_cancellation=False))
        self._streaming = streaming
        if streaming:
            n = self.RATE * FRAME_SAMPLES // SAMPLE_RATE
            self._mic_in = StreamResampler(SAMPLE_RATE, self.RATE)
            self._far_in = StreamResampler(SAMPLE_RATE, self.RATE)
            self._out = StreamResampler(self.RATE, SAMPLE_RATE, n)

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        from personaplex_tui.audio.resample import resample

        if self._streaming:
            mic_r, far_r = self._mic_in.process(mic), self._far_in.process(far)
        else:
            n = len(mic) * self.RATE // SAMPLE_RATE
            mic_r = np.pad(resample(mic, SAMPLE_RATE, self.RATE), (0, n))[:n]
            far_r = np.pad(resample(far, SAMPLE_RATE, self.RATE), (0, n))[:n]
        clean = self._ec.process(_to_int16(mic_r), _to_int16(far_r)) / np.float32(32767.0)
        if self._streaming:
            back = self._out.process(clean)
        else:
            back = np.pad(resample(clean, self.RATE, SAMPLE_RATE), (0, len(mic)))[: len(mic)]
        return self._post.process(back, np.zeros_like(back))


class VoiceClean:
    """`voiceclean`: no adaptive filter; cross-correlates the mic with the far end per 40 ms and
    attenuates the chunks (spectral mask) where it finds the echo."""

    def __init__(self) -> None:
        from voiceclean.aec import AEC

        self._aec = AEC(sample_rate=SAMPLE_RATE)

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        mic16, far16 = _to_int16(mic), _to_int16(far)
        out = np.zeros(len(mic16), np.float32)
        for s in range(0, len(mic16), FRAME_SAMPLES):
            e = min(s + FRAME_SAMPLES, len(mic16))
            self._aec.feed_reference(far16[s:e].tobytes())
            got = np.frombuffer(self._aec.process(mic16[s:e].tobytes()), np.int16)
            out[s : s + len(got)] = got
        return out / 32767.0


def candidates() -> dict[str, Callable[[], Any]]:
    """Each canceller that imports here, by its row's name; the app's first."""
    made: dict[str, Callable[[], Any]] = {
        "livekit AEC3+NS+HPF (app)": lambda: EchoCanceller(ProcessingOptions()),
        "livekit AEC3 alone": lambda: EchoCanceller(
            ProcessingOptions(noise_suppression=False, high_pass=False)
        ),
        "pyaec speex 10 ms blocks, 0.5 s tail": lambda: SpeexMdf(0.5),
        "pyaec speex 20 ms blocks, 0.5 s tail": lambda: SpeexMdf(0.5, 2 * BLOCK),
        "pyaec speex 20 ms blocks, 0.3 s tail": lambda: SpeexMdf(0.3, 2 * BLOCK),
        "pyaec speex 10 ms blocks, 0.5 s tail, MDF alone": lambda: SpeexMdf(0.5, preprocess=False),
        "pywebrtc-audio AEC3+NS+HPF": lambda: PyWebrtcAudio(full=True),
        "pywebrtc-audio AEC3 alone at 16 kHz + livekit NS+HPF": PyWebrtcAec16k,
        "voiceclean": VoiceClean,
    }
    usable = {}
    for name, make in made.items():
        try:
            make()
        except Exception as e:  # not installed, or its native library does not load
            print(f"left out: {name} ({type(e).__name__}: {e})")
            continue
        usable[name] = make
    return usable


def aligned(make: Callable[[], Any]) -> Callable[[], Any]:
    """The maker for the figures: whole-signal resampling where the canceller resamples."""
    return (lambda: PyWebrtcAec16k(streaming=False)) if make is PyWebrtcAec16k else make


def cost(makers: dict[str, Callable[[], Any]], frames: int) -> dict[str, float]:
    """CPU ms of this thread per 80 ms frame, median past the warm-up, all interleaved."""
    times = interleaved_ms({name: make() for name, make in makers.items()}, frames)
    return {name: statistics.median(t[frames // 10 :]) for name, t in times.items()}


CHECKS: list[tuple[str, str, Callable[[dict[str, float]], bool]]] = [
    ("erle_alone_db", "ERLE alone", lambda f: f["erle_alone_db"] >= 25.0),
    ("corr_clean_near", "r(clean,near)", lambda f: f["corr_clean_near"] >= 0.7),
    (
        "corr_clean_echo",
        "r(clean,echo)",
        lambda f: f["corr_clean_echo"] <= min(0.15, f["corr_near_echo"] + 0.1),
    ),
    ("level_vs_near_db", "level vs near", lambda f: abs(f["level_vs_near_db"]) <= 3.0),
    (
        "erle_jump_1_2s_db",
        "jump 1-2 s",
        lambda f: f["erle_jump_1_2s_db"] >= 20.0,
    ),
    ("erle_jump_2_4s_db", "jump 2-4 s", lambda f: f["erle_jump_2_4s_db"] >= 20.0),
]


def quality(makers: dict[str, Callable[[], Any]]) -> None:
    """issue 17's figures per canceller and echo path; `!` marks a figure that misses its goal
    (the thresholds of tests/test_echo_cancel.py)."""
    print("| canceller | delay ms | gain | " + " | ".join(t for _, t, _ in CHECKS) + " | goals |")
    print("|" + "---|" * (4 + len(CHECKS)))
    for name, make in makers.items():
        for delay_s, gain in CASES:
            f = measure_case(delay_s, gain, canceller=aligned(make))
            cells, missed = [], 0
            for key, _, ok in CHECKS:
                good = ok(f)
                missed += not good
                fmt = "{:+.1f}" if key == "level_vs_near_db" else "{:.2f}"
                fmt = "{:.1f}" if key.startswith("erle") else fmt
                cells.append(fmt.format(f[key]) + ("" if good else " !"))
            print(
                f"| {name} | {1000 * delay_s:.0f} | {gain:.1f} | "
                + " | ".join(cells)
                + f" | {'all met' if not missed else f'{missed} missed'} |"
            )


class WebrtcNoiseGain16k:
    """`webrtc-noise-gain`'s noise suppression (WebRTC NS; it takes 10 ms at 16 kHz only) on
    the mic, soxr streams to 16 kHz and back around it: what replacing livekit's NS would cost."""

    def __init__(self, level: int = 2) -> None:
        from webrtc_noise_gain import AudioProcessor

        from personaplex_tui.audio.resample import StreamResampler

        self._ns = AudioProcessor(0, level)
        self._in = StreamResampler(SAMPLE_RATE, 16000)
        self._out = StreamResampler(16000, SAMPLE_RATE, 16000 * FRAME_SAMPLES // SAMPLE_RATE)
        self.ns_ms = 0.0  # CPU ms of the last call's noise suppression alone

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        pcm = _to_int16(self._in.process(mic))
        c0 = time.thread_time()
        out = b"".join(
            self._ns.Process10ms(pcm[s : s + 160].tobytes()).audio
            for s in range(0, len(pcm) - 159, 160)
        )
        self.ns_ms = 1000 * (time.thread_time() - c0)
        return self._out.process(np.frombuffer(out, np.int16) / np.float32(32767.0))


def noise_costs(frames: int) -> None:
    """What livekit's noise suppression costs (with it against without it) and what
    `webrtc-noise-gain`'s would, all interleaved frame by frame."""
    rows: dict[str, Any] = {
        "livekit AEC3+NS+HPF (app)": EchoCanceller(ProcessingOptions()),
        "livekit AEC3+HPF": EchoCanceller(ProcessingOptions(noise_suppression=False)),
    }
    try:
        rows["webrtc-noise-gain NS at 16 kHz, soxr around it"] = WebrtcNoiseGain16k()
    except ImportError as e:
        print(f"left out: webrtc-noise-gain ({e})")
    ns_alone: list[float] = []

    def note_ns(_name: str, proc: Any) -> None:
        if isinstance(proc, WebrtcNoiseGain16k):
            ns_alone.append(proc.ns_ms)

    times = interleaved_ms(rows, frames, note_ns)
    skip = frames // 10
    print(f"\nnoise suppression alone (CPU ms per 80 ms frame, median, {frames} frames):\n")
    print("| processing | CPU ms per 80 ms |")
    print("|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t[skip:]):.3f} |")
    if ns_alone:
        print(f"| of it webrtc-noise-gain's NS alone | {statistics.median(ns_alone[skip:]):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--no-table", action="store_true")
    parser.add_argument(
        "--noise", action="store_true", help="only the cost of noise suppression alternatives"
    )
    args = parser.parse_args()
    if args.noise:
        noise_costs(args.frames)
        return
    makers = candidates()
    app = next(iter(makers))
    ms = cost(makers, args.frames)
    print(
        f"\ncost per 80 ms frame (CPU ms of this thread, median, {args.frames} frames "
        f"interleaved, load average {os.getloadavg()[0]:.1f}):\n"
    )
    print("| canceller | CPU ms per 80 ms | vs the app's |")
    print("|---|---|---|")
    for name, t in ms.items():
        print(f"| {name} | {t:.3f} | x{t / ms[app]:.2f} |")
    if not args.no_table:
        print()
        quality(makers)


if __name__ == "__main__":
    main()
