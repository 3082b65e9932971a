"""Per-frame streaming Mimi timings: this MLX codec vs PyPI moshi's PyTorch Mimi on the same weights.

Prints a table (nothing is asserted). Random weights of the full-size Mimi unless --tiny.
Wall-clock milliseconds per frame (median, 90th percentile) and the process's CPU time per
frame (median), which a busy shared machine disturbs less.

    python benchmarks/mimi_step.py [--frames 20] [--tiny] [--no-torch] [--threads 1,2]
                                   [--torch-device cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import MimiConfig, mimi_tiny  # noqa: E402
from model.mimi import MimiCodec, random_mimi_weights, save_weights  # noqa: E402
from personaplex_tui.cuda_launches import launch_directly  # noqa: E402


class Timer:
    """Collects (wall, CPU) seconds of one phase over the timed frames."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self) -> Timer:
        self._t, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_) -> None:
        self.wall.append(time.perf_counter() - self._t)
        self.cpu.append(time.process_time() - self._c)

    def row(self, skip: int) -> str:
        wall, cpu = np.array(self.wall[skip:]) * 1e3, np.array(self.cpu[skip:]) * 1e3
        return f"{np.median(wall):8.1f} {np.percentile(wall, 90):8.1f} {np.median(cpu):8.1f}"


HEADER = " ".join(
    [
        f"{'':34s}",
        *(f"{h:>8s}" for h in ("enc p50", "p90", "cpu")),
        "  ",
        *(f"{h:>8s}" for h in ("dec p50", "p90", "cpu")),
    ]
)


def time_mlx(codec: MimiCodec, pcm: np.ndarray, frames: int) -> tuple[Timer, Timer]:
    enc, dec = Timer(), Timer()
    frame = codec.frame_size
    codec.reset()
    for i in range(frames):
        x = mx.array(pcm[i * frame : (i + 1) * frame])
        mx.eval(x)
        with enc:
            codes = codec.encode_step(x)
            mx.eval(codes, codec.state_arrays())
        with dec:
            out = codec.decode_step(codes)
            mx.eval(out, codec.state_arrays())
    return enc, dec


def time_torch(
    cfg: MimiConfig, weights_file: Path, pcm: np.ndarray, frames: int, device: str
) -> tuple[Timer, Timer]:
    import torch

    from tests.mimi_reference import moshi_mimi

    mimi = moshi_mimi(cfg, weights_file, device)
    frame = cfg.frame_size
    enc, dec = Timer(), Timer()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad(), mimi.streaming(1):
        for i in range(frames):
            x = torch.from_numpy(pcm[i * frame : (i + 1) * frame])[None, None].to(device)
            sync()
            with enc:
                codes = mimi.encode(x)
                sync()
            with dec:
                mimi.decode(codes)
                sync()
    return enc, dec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the small test config")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument(
        "--threads", default="1,0", help="torch thread counts to time, comma-separated (0: default)"
    )
    parser.add_argument("--torch-device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    launch_directly()  # MLX's CUDA kernels launched as the app launches them

    cfg = mimi_tiny() if args.tiny else MimiConfig()
    n = args.frames + args.warmup
    rng = np.random.default_rng(0)
    pcm = (0.1 * rng.standard_normal(n * cfg.frame_size)).astype(np.float32)
    weights = random_mimi_weights(cfg, seed=0)
    print(
        f"MLX {mx.__version__} on {mx.default_device()}, {'tiny' if args.tiny else 'full-size'} "
        f"Mimi, {args.frames} frames after {args.warmup} warm-up"
    )
    print(f"ms per frame; load average before: {os.getloadavg()[0]:.2f}")
    print(HEADER)
    for compiled in (False, True):
        codec = MimiCodec(cfg, compile=compiled)
        codec.load_weights(weights)
        enc, dec = time_mlx(codec, pcm, n)
        name = "MLX MimiCodec" + (" (mx.compile)" if compiled else " (eager)")
        print(f"{name:34s} {enc.row(args.warmup)}    {dec.row(args.warmup)}")
    if not args.no_torch:
        import torch

        default_threads = torch.get_num_threads()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "mimi.safetensors"
            save_weights(path, weights)
            for threads in [int(t) or default_threads for t in args.threads.split(",")]:
                torch.set_num_threads(threads)
                enc, dec = time_torch(cfg, path, pcm, n, args.torch_device)
                where = "CUDA" if args.torch_device == "cuda" else f"{threads} threads"
                name = f"PyTorch moshi ({where})"
                print(f"{name:34s} {enc.row(args.warmup)}    {dec.row(args.warmup)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
