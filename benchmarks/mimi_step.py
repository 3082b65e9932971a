"""Per-frame streaming Mimi timings: this MLX codec vs PyPI moshi's PyTorch Mimi on the same weights.

Prints a table (nothing is asserted). Random weights of the full-size Mimi unless --tiny.

    python benchmarks/mimi_step.py [--frames 20] [--tiny] [--no-torch] [--threads 1,2]
                                   [--torch-device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import MimiConfig, mimi_tiny  # noqa: E402
from model.mimi import MimiCodec, random_mimi_weights, save_weights  # noqa: E402


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:8.2f} {np.percentile(samples, 90) * 1e3:8.2f}"


def time_mlx(codec: MimiCodec, pcm: np.ndarray, frames: int, warmup: int) -> tuple[list, list]:
    enc, dec = [], []
    frame = codec.frame_size
    codec.reset()
    for i in range(warmup + frames):
        x = mx.array(pcm[i * frame : (i + 1) * frame])
        mx.eval(x)
        t = time.perf_counter()
        codes = codec.encode_step(x)
        mx.eval(codes)
        t1 = time.perf_counter()
        out = codec.decode_step(codes)
        mx.eval(out)
        t2 = time.perf_counter()
        if i >= warmup:
            enc.append(t1 - t)
            dec.append(t2 - t1)
    return enc, dec


def time_torch(
    cfg: MimiConfig, weights_file: Path, pcm: np.ndarray, frames: int, warmup: int, device: str
):
    import torch

    from tests.mimi_reference import moshi_mimi

    mimi = moshi_mimi(cfg, weights_file, device)
    frame = cfg.frame_size
    enc, dec = [], []

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad(), mimi.streaming(1):
        for i in range(warmup + frames):
            x = torch.from_numpy(pcm[i * frame : (i + 1) * frame])[None, None].to(device)
            sync()
            t = time.perf_counter()
            codes = mimi.encode(x)
            sync()
            t1 = time.perf_counter()
            mimi.decode(codes)
            sync()
            t2 = time.perf_counter()
            if i >= warmup:
                enc.append(t1 - t)
                dec.append(t2 - t1)
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

    cfg = mimi_tiny() if args.tiny else MimiConfig()
    n = args.frames + args.warmup
    rng = np.random.default_rng(0)
    pcm = (0.1 * rng.standard_normal(n * cfg.frame_size)).astype(np.float32)
    weights = random_mimi_weights(cfg, seed=0)
    print(
        f"MLX {mx.__version__} on {mx.default_device()}, {'tiny' if args.tiny else 'full-size'} "
        f"Mimi, {args.frames} frames after {args.warmup} warm-up"
    )
    print(
        f"{'implementation':34s} {'enc p50':>8s} {'enc p90':>8s} {'dec p50':>8s} {'dec p90':>8s}  (ms)"
    )
    for compiled in (False, True):
        codec = MimiCodec(cfg, compile=compiled)
        codec.load_weights(weights)
        enc, dec = time_mlx(codec, pcm, args.frames, args.warmup)
        name = "MLX MimiCodec" + (" (mx.compile)" if compiled else " (eager)")
        print(f"{name:34s} {_ms(enc)} {_ms(dec)}")
    if not args.no_torch:
        import torch

        default_threads = torch.get_num_threads()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "mimi.safetensors"
            save_weights(path, weights)
            for threads in [int(t) or default_threads for t in args.threads.split(",")]:
                torch.set_num_threads(threads)
                enc, dec = time_torch(cfg, path, pcm, args.frames, args.warmup, args.torch_device)
                where = "CUDA" if args.torch_device == "cuda" else f"CPU, {threads} threads"
                print(f"{'PyTorch moshi (' + where + ')':34s} {_ms(enc)} {_ms(dec)}")


if __name__ == "__main__":
    main()
