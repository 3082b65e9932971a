"""The echo canceller: every figure of the synthetic echo paths (as tests/test_echo_cancel.py
measures them) and the processing cost per 80 ms frame, for both builds of AEC3 (the library
built here, `webrtc`, and livekit's).

    PYTHONPATH=. python -m benchmarks.echo_cancel [--frames 1000] [--no-table] [--no-profile]
    PYTHONPATH=. python -m benchmarks.echo_cancel --rates 16000 24000 32000 48000 [--frames N]

`--rates` runs WebRTC at other rates than the app's 24 kHz, with soxr resampling around it
(`RatedCanceller`), and prints only the cost of each rate and the figures of the echo paths.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from personaplex_tui.audio import FRAME_SAMPLES, SAMPLE_RATE
from personaplex_tui.audio.aec import (
    EchoCanceller,
    ProcessingOptions,
    _load_rtc,
    _to_int16,
)
from personaplex_tui.audio.apm_calls import open_calls
from personaplex_tui.audio.resample import StreamResampler, resample
from tests.echo_paths import CASES, echo, far_talk, impulse_response, measure_case, noise

COLUMNS = [
    ("delay_ms", "delay ms", "{:.0f}"),
    ("gain", "gain", "{:.1f}"),
    ("erle_alone_db", "ERLE far alone dB", "{:.1f}"),
    ("corr_clean_near", "r(clean,near)", "{:.2f}"),
    ("corr_clean_echo", "r(clean,echo)", "{:.2f}"),
    ("corr_mic_echo", "r(mic,echo)", "{:.2f}"),
    ("corr_near_echo", "r(near,echo)", "{:.2f}"),
    ("level_vs_near_db", "level vs near dB", "{:+.1f}"),
    ("level_double_talk_db", "of it: with echo", "{:+.1f}"),
    ("level_near_alone_db", "without echo", "{:+.1f}"),
    ("erle_jump_0_1s_db", "jump ERLE 0-1 s", "{:.1f}"),
    ("erle_jump_1_2s_db", "jump ERLE 1-2 s", "{:.1f}"),
    ("erle_jump_2_4s_db", "jump ERLE 2-4 s", "{:.1f}"),
]


def table(options: ProcessingOptions) -> None:
    print("| canceller | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|" + "---|" * (1 + len(COLUMNS)))
    for backend, tuned in [("webrtc", True), ("webrtc", False), ("livekit", True)]:
        label = backend if tuned else f"{backend}, WebRTC's own settings"
        for delay_s, gain in CASES:
            f = measure_case(
                delay_s,
                gain,
                canceller=lambda b=backend, t=tuned: EchoCanceller(options, backend=b, tuned=t),
            )
            cells = " | ".join(fmt.format(f[key]) for key, _, fmt in COLUMNS)
            print(f"| {label} | {cells} |")


def interleaved_ms(
    procs: dict[str, Any], frames: int, after: Callable[[str, Any], None] | None = None
) -> dict[str, list[float]]:
    """CPU ms of this thread of each `proc.process(mic, far)` per 80 ms frame, the processors
    taking turns frame by frame on `_signals(frames)`; `after(name, proc)` follows each call."""
    mic, far = _signals(frames)
    times: dict[str, list[float]] = {name: [] for name in procs}
    for i in range(frames):
        s = slice(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        for name, proc in procs.items():
            c0 = time.thread_time()
            proc.process(mic[s], far[s])
            times[name].append(1000 * (time.thread_time() - c0))
            if after is not None:
                after(name, proc)
    return times


def _signals(frames: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    far = far_talk(frames * FRAME_SAMPLES / 24000 + 1)
    mic = (
        echo(far, 0.1, 0.5, impulse_response(rng))
        + noise(len(far), rng)
        + 0.3 * np.roll(far, 48000)
    )
    return mic, far


def _run(cancellers: dict[str, EchoCanceller], frames: int) -> dict[str, list[list[float]]]:
    """Per frame, each canceller in turn on the same audio (so that both see the same load):
    [wall ms, CPU ms of this thread] per frame and canceller."""
    mic, far = _signals(frames)
    times: dict[str, list[list[float]]] = {name: [] for name in cancellers}
    for i in range(frames):
        s = slice(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        for name, aec in cancellers.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            aec.process(mic[s], far[s])
            times[name].append(
                [1000 * (time.perf_counter() - w0), 1000 * (time.thread_time() - c0)]
            )
    return times


def _median(times: list[list[float]], column: int) -> float:
    return statistics.median(t[column] for t in times[len(times) // 10 :])  # past the warm-up


def cost(options: ProcessingOptions, frames: int) -> None:
    """livekit's documented API (the delay set every block), livekit with its requests
    serialized once (`personaplex_tui.audio.apm_calls`) and the library built here
    (`apm_native`), frame by frame in one run."""
    cancellers = {
        "livekit, documented API": EchoCanceller(options, direct_calls=False),
        "livekit, direct": EchoCanceller(options, backend="livekit"),
        "webrtc, built here": EchoCanceller(options, backend="webrtc"),
    }
    times = _run(cancellers, frames)
    print(
        f"cost per 80 ms frame, {frames} frames, {options}, load average {os.getloadavg()[0]:.1f}:"
    )
    base = _median(times["livekit, direct"], 1)
    for name in times:
        wall = sorted(t[0] for t in times[name])
        print(
            f"  {name:24s}: CPU median {_median(times[name], 1):.3f} ms "
            f"(x{_median(times[name], 1) / base:.2f} livekit direct), "
            f"wall median {_median(times[name], 0):.3f} ms, "
            f"wall p95 {wall[int(0.95 * len(wall))]:.3f} ms"
        )


def _per_call_ms(call: Callable[[], object], repeat: int = 2000) -> float:
    """CPU median of one call, timed in batches of 50."""
    batches = []
    for _ in range(repeat // 50):
        c0 = time.thread_time()
        for _ in range(50):
            call()
        batches.append(1000 * (time.thread_time() - c0) / 50)
    return statistics.median(batches)


def where_the_time_goes(frames: int) -> None:
    """Per-call overhead against WebRTC's own processing: one call on a module with every
    feature off (WebRTC copies the 10 ms through) is the overhead of a call; a default frame
    makes 16 such calls (8 far end, 8 mic) plus, through the documented API, 8 delay settings;
    the rest of a frame is the int16 conversions and WebRTC's processing."""
    off = ProcessingOptions(echo_cancellation=False, noise_suppression=False, high_pass=False)
    public = EchoCanceller(off, direct_calls=False)
    direct = EchoCanceller(off, backend="livekit")
    public_call = _per_call_ms(public._calls.forward)
    delay_call = _per_call_ms(lambda: public._calls._apm.set_stream_delay_ms(0))  # type: ignore[attr-defined]
    direct_call = _per_call_ms(direct._calls.forward)
    conversions = _median(_run({"direct": direct}, 200)["direct"], 1) - 8 * direct_call
    times = _run(
        {"before": EchoCanceller(direct_calls=False), "after": EchoCanceller(backend="livekit")},
        frames,
    )
    before, after = _median(times["before"], 1), _median(times["after"], 1)
    print(
        f"where livekit's time goes (CPU medians; {frames} frames, defaults, "
        f"load average {os.getloadavg()[0]:.1f}):"
    )
    print(
        f"  one call: documented API {1000 * public_call:.1f} us, its delay setting "
        f"{1000 * delay_call:.1f} us, direct {1000 * direct_call:.1f} us"
    )
    print(f"  int16 conversions and the Python loop: {conversions:.3f} ms per frame")
    print(
        f"  frame, defaults: before {before:.3f} ms, after {after:.3f} ms; the calls alone "
        f"explain {16 * public_call + 8 * delay_call - 16 * direct_call:.3f} ms of the "
        f"{before - after:.3f} ms saved (the rest shows only in the full loop)"
    )
    print(
        f"  after: calls {16 * direct_call:.3f} ms + conversions {conversions:.3f} ms + "
        f"WebRTC's processing {after - 16 * direct_call - conversions:.3f} ms"
    )


class RatedCanceller:
    """The canceller's call path (direct calls, int16, 10 ms blocks) with WebRTC at `rate`.

    It takes and returns 24 kHz like `EchoCanceller`. `streaming=True` is what the app would run:
    the mic and the far end go through soxr streams to `rate`, the cleaned mic through one back,
    frame by frame, at the cost of the resamplers' latency (`latency_ms`). `streaming=False`
    resamples whole signals (no latency), for the echo paths' figures, which need the output
    aligned with the input. `resample_ms` is the CPU time of the last call's resampling.
    """

    def __init__(
        self, rate: int, options: ProcessingOptions | None = None, streaming: bool = True
    ) -> None:
        o = options if options is not None else ProcessingOptions()
        rtc = _load_rtc()
        self.rate = rate
        self.block = rate // 100
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=o.echo_cancellation,
            noise_suppression=o.noise_suppression,
            high_pass_filter=o.high_pass,
            auto_gain_control=o.auto_gain,
        )
        self._calls = open_calls(rtc, self._apm, rate, self.block)
        self.streaming = streaming and rate != SAMPLE_RATE
        self.latency_ms = 0.0
        if self.streaming:
            self._mic_in = StreamResampler(SAMPLE_RATE, rate)
            self._far_in = StreamResampler(SAMPLE_RATE, rate)
            self._out = StreamResampler(rate, SAMPLE_RATE, rate * FRAME_SAMPLES // SAMPLE_RATE)
            self.latency_ms = 1000 * (self._mic_in.latency_s + self._out.latency_s)
        self.resample_ms = 0.0

    def _in(self, pcm: np.ndarray, stream: str) -> np.ndarray:
        if self.rate == SAMPLE_RATE:
            return np.asarray(pcm, np.float32)
        if self.streaming:
            return getattr(self, stream).process(pcm)
        n = len(pcm) * self.rate // SAMPLE_RATE
        return np.pad(resample(pcm, SAMPLE_RATE, self.rate), (0, n))[:n]

    def _back(self, pcm: np.ndarray, n: int) -> np.ndarray:
        if self.rate == SAMPLE_RATE:
            return pcm
        if self.streaming:
            return self._out.process(pcm)
        return np.pad(resample(pcm, self.rate, SAMPLE_RATE), (0, n))[:n]

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        c0 = time.thread_time()
        mic_r, far_r = self._in(mic, "_mic_in"), self._in(far, "_far_in")
        c1 = time.thread_time()
        mic16, far16 = _to_int16(mic_r), _to_int16(far_r)
        out = np.empty(len(mic16), np.float32)
        calls, b = self._calls, self.block
        for start in range(0, len(mic16) - b + 1, b):
            block = slice(start, start + b)
            calls.far[:] = far16[block]
            calls.reverse()
            calls.set_delay(0)
            calls.near[:] = mic16[block]
            calls.forward()
            out[block] = calls.near
        out /= 32767.0
        c2 = time.thread_time()
        clean = self._back(out, len(mic))
        self.resample_ms = 1000 * (c1 - c0 + time.thread_time() - c2)
        return clean


def rate_costs(rates: list[int], frames: int) -> None:
    """CPU ms per 80 ms frame of every rate and processing choice, all interleaved frame by
    frame on the same audio; 24 kHz is the app's own `EchoCanceller`."""
    choices = {
        "AEC+NS+HPF": ProcessingOptions(),
        "AEC+HPF": ProcessingOptions(noise_suppression=False),
        "AEC": ProcessingOptions(noise_suppression=False, high_pass=False),
    }
    cancellers: dict[str, EchoCanceller | RatedCanceller] = {}
    for label, options in choices.items():
        for rate in rates:
            key = f"{rate // 1000:2d} kHz {label}"
            rated = rate != SAMPLE_RATE
            cancellers[key] = RatedCanceller(rate, options) if rated else EchoCanceller(options)
    part: dict[str, list[float]] = {k: [] for k in cancellers}
    total = interleaved_ms(
        cancellers, frames, lambda key, aec: part[key].append(getattr(aec, "resample_ms", 0.0))
    )
    skip = frames // 10  # the warm-up
    print(
        f"cost per 80 ms frame by WebRTC's rate (CPU ms of the thread, {frames} frames, "
        f"interleaved; load average {os.getloadavg()[0]:.1f}):\n"
    )
    print(
        "| rate | processing | p50 ms | of it resampling | p50 without it | p90 ms "
        "| vs 24 kHz | without resampling vs 24 kHz | added latency |"
    )
    print("|" + "---|" * 9)
    for key, aec in cancellers.items():
        t = sorted(total[key][skip:])
        p50 = statistics.median(t)
        bare = statistics.median(
            a - b for a, b in zip(total[key][skip:], part[key][skip:], strict=True)
        )
        base = statistics.median(total[f"{SAMPLE_RATE // 1000} kHz {key[7:]}"][skip:])
        latency = getattr(aec, "latency_ms", 0.0)
        print(
            f"| {key[:6]} | {key[7:]} | {p50:.3f} | {statistics.median(part[key][skip:]):.3f} | "
            f"{bare:.3f} | {t[int(0.9 * len(t))]:.3f} | x{p50 / base:.2f} | x{bare / base:.2f} "
            f"| {latency:.0f} ms |"
        )


def rate_quality(rates: list[int]) -> None:
    """The echo paths' figures with WebRTC at each rate (defaults: AEC, NS, HPF), whole signals
    resampled (no latency)."""
    print("\nthe echo paths by WebRTC's rate (defaults; whole-signal resampling):\n")
    keys = [
        ("erle_alone_db", "ERLE far alone dB", "{:.1f}"),
        ("level_vs_near_db", "double-talk level vs near dB", "{:+.1f}"),
        ("corr_clean_near", "r(clean,near)", "{:.2f}"),
        ("corr_clean_echo", "r(clean,echo)", "{:.2f}"),
        ("erle_jump_0_1s_db", "jump ERLE 0-1 s", "{:.1f}"),
        ("erle_jump_1_2s_db", "jump ERLE 1-2 s", "{:.1f}"),
        ("erle_jump_2_4s_db", "jump ERLE 2-4 s", "{:.1f}"),
    ]
    print("| rate | delay ms | gain | " + " | ".join(title for _, title, _ in keys) + " |")
    print("|" + "---|" * (3 + len(keys)))
    for delay_s, gain in CASES:
        for rate in rates:
            f = measure_case(
                delay_s, gain, canceller=lambda r=rate: RatedCanceller(r, streaming=False)
            )
            print(
                f"| {rate // 1000} kHz | {1000 * delay_s:.0f} | {gain:.1f} | "
                + " | ".join(fmt.format(f[key]) for key, _, fmt in keys)
                + " |"
            )
    near = far_talk()
    spectrum = np.abs(np.fft.rfft(near.astype(np.float64))) ** 2
    above = spectrum[int(len(spectrum) * 8000 / 12000) :].sum() / spectrum.sum()
    print(
        f"\nthe test speech's energy above 8 kHz (cut by WebRTC at 16 kHz): "
        f"{10 * np.log10(above + 1e-20):.1f} dB of the total ({100 * above:.2f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--no-table", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--rates",
        type=int,
        nargs="+",
        choices=(16000, 24000, 32000, 48000),
        help="compare WebRTC at these rates (soxr around it) instead",
    )
    args = parser.parse_args()
    if args.rates:
        rates = sorted(set(args.rates) | {SAMPLE_RATE})
        rate_costs(rates, args.frames)
        if not args.no_table:
            rate_quality(rates)
        return
    for options in (
        ProcessingOptions(),
        ProcessingOptions(noise_suppression=False),
        ProcessingOptions(noise_suppression=False, high_pass=False),
    ):
        if not args.no_table:
            print(f"\n{options}\n")
            table(options)
            print()
        cost(options, args.frames)
    if not args.no_profile:
        print()
        where_the_time_goes(args.frames)


if __name__ == "__main__":
    main()
