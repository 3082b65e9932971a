"""The echo canceller: every figure of the synthetic echo paths (as tests/test_echo_cancel.py
measures them) and the processing cost per 80 ms frame.

    PYTHONPATH=. python benchmarks/echo_cancel.py [--frames 1000] [--no-table]
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def cost(options: ProcessingOptions, frames: int) -> None:
    rng = np.random.default_rng(0)
    far = far_talk(frames * FRAME_SAMPLES / 24000 + 1)
    mic = (
        echo(far, 0.1, 0.5, impulse_response(rng))
        + noise(len(far), rng)
        + 0.3 * np.roll(far, 48000)
    )
    aec = EchoCanceller(options)
    times = []
    for i in range(frames):
        s = slice(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        t0 = time.perf_counter()
        aec.process(mic[s], far[s])
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    print(
        f"cost per 80 ms frame ({frames} frames, {options}): "
        f"median {statistics.median(times):.3f} ms, p95 {times[int(0.95 * len(times))]:.3f} ms, "
        f"max {times[-1]:.3f} ms ({100 * statistics.median(times) / 80:.1f}% of real time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--no-table", action="store_true")
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


if __name__ == "__main__":
    main()
