"""The echo canceller: every figure of the synthetic echo paths (as tests/test_echo_cancel.py
measures them) and the processing cost per 80 ms frame.

    PYTHONPATH=. python benchmarks/echo_cancel.py [--frames 1000] [--no-table] [--no-profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from personaplex_tui.audio import FRAME_SAMPLES
from personaplex_tui.audio.aec import EchoCanceller, ProcessingOptions
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
    print("| " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for delay_s, gain in CASES:
        f = measure_case(delay_s, gain, options)
        print("| " + " | ".join(fmt.format(f[key]) for key, _, fmt in COLUMNS) + " |")


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
    """Before (livekit's documented API, the delay set every block) against after (requests
    serialized once, `personaplex_tui.audio.apm_calls`), frame by frame in one run."""
    before = EchoCanceller(options, direct_calls=False)
    after = EchoCanceller(options)
    times = _run({"before": before, "after": after}, frames)
    print(
        f"cost per 80 ms frame, {frames} frames, {options}, load average {os.getloadavg()[0]:.1f}:"
    )
    for name in times:
        way = "direct" if name == "after" and after.direct_calls else "documented API"
        wall = sorted(t[0] for t in times[name])
        print(
            f"  {name:6s} ({way}): CPU median {_median(times[name], 1):.3f} ms, "
            f"wall median {_median(times[name], 0):.3f} ms, "
            f"wall p95 {wall[int(0.95 * len(wall))]:.3f} ms"
        )
    print(
        f"  before/after: CPU x{_median(times['before'], 1) / _median(times['after'], 1):.2f}, "
        f"wall x{_median(times['before'], 0) / _median(times['after'], 0):.2f}"
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
    public, direct = EchoCanceller(off, direct_calls=False), EchoCanceller(off)
    public_call = _per_call_ms(public._calls.forward)
    delay_call = _per_call_ms(lambda: public._apm.set_stream_delay_ms(0))
    direct_call = _per_call_ms(direct._calls.forward)
    conversions = _median(_run({"direct": direct}, 200)["direct"], 1) - 8 * direct_call
    times = _run({"before": EchoCanceller(direct_calls=False), "after": EchoCanceller()}, frames)
    before, after = _median(times["before"], 1), _median(times["after"], 1)
    print(
        f"where the time goes (CPU medians; {frames} frames, defaults, "
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--no-table", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
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
