"""Where one frame of Mimi's streaming step goes, part by part, and its transformer on the CUDA
kernel against MLX's ops.

Each part of the full-size codec (random weights) is compiled and evaluated alone, so each row
includes a launch and a sync (ms p50 and p90 of `--calls`): the SEANet encoder, the encoder
transformer (on the kernel where it is on, and on MLX's ops), the downsampling and quantizer, the
dequantizer and upsampling, the SEANet decoder, then whole `encode_step` / `decode_step` calls
once the caches are full. Last, the transformer's GPU time per call: 50 calls chained in one
evaluation (no sync between them), three rounds. Run it with `PPX_MIMI=mlx` for MLX's ops
everywhere. docs/cuda-kernels.md §Mimi's transformer.

    python benchmarks/mimi_parts.py [--calls 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import MimiConfig  # noqa: E402
from model.mimi import MimiCodec  # noqa: E402


def timed(fn: Callable[[], object], calls: int, warm: int = 10) -> str:
    for _ in range(warm):
        mx.eval(fn())
    ms = []
    for _ in range(calls):
        t0 = time.perf_counter()
        mx.eval(fn())
        ms.append((time.perf_counter() - t0) * 1e3)
    return f"p50 {np.median(ms):.3f} p90 {np.percentile(ms, 90):.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    codec = MimiCodec.random(MimiConfig(), seed=0)
    m = codec.model
    tr = m.encoder_transformer
    print(f"MLX {mx.__version__} on {mx.default_device()}; transformers on the kernel:", end=" ")
    print(tr.on_kernel(), m.decoder_transformer.on_kernel())
    enc_state, dec_state = m.init_encode_state(), m.init_decode_state()
    pcm = mx.random.normal((1, codec.frame_size, 1)) * 0.1
    encoder = mx.compile(m.encoder)
    x, _ = encoder(pcm, enc_state["encoder"])
    mx.eval(x)
    print("SEANet encoder        ", timed(lambda: encoder(pcm, enc_state["encoder"]), args.calls))
    state = [tr.init_state()]

    def kernel_step():
        y, state[0] = tr.step(x, state[0])
        return y, state[0]

    if tr.on_kernel():
        print("transformer (kernel)  ", timed(kernel_step, args.calls))
    mlx_state = [tr.init_state()]
    mlx_full = mx.compile(lambda x, s: tr.mlx_step(x, s, True))

    def mlx_step():
        y, mlx_state[0] = mlx_full(x, mlx_state[0])
        return y, mlx_state[0]

    print("transformer (MLX ops) ", timed(mlx_step, args.calls))
    tail = mx.compile(m.quantize_step)
    print("downsample + quantize ", timed(lambda: tail(x, enc_state["downsample"]), args.calls))
    codes = mx.zeros((codec.num_codebooks,), mx.int32)

    def dequantize(codes, up):
        return m.upsample(m.quantizer.decode(codes.reshape(1, 1, -1)), up)

    head = mx.compile(dequantize)
    print("dequantize + upsample ", timed(lambda: head(codes, dec_state["upsample"]), args.calls))
    decoder = mx.compile(m.decoder)
    print("SEANet decoder        ", timed(lambda: decoder(x, dec_state["decoder"]), args.calls))
    frame = pcm.reshape(-1)
    for _ in range(m.cfg.context // m.cfg.steps_per_frame + 5):  # fill the caches
        mx.eval(codec.encode_step(frame), codec.decode_step(codes), codec.state_arrays())
    print(
        "codec encode_step     ",
        timed(lambda: (codec.encode_step(frame), codec.state_arrays()), args.calls),
    )
    print(
        "codec decode_step     ",
        timed(lambda: (codec.decode_step(codes), codec.state_arrays()), args.calls),
    )
    paths = [("kernel", lambda s: tr.step(x, s), state)] if tr.on_kernel() else []
    paths.append(("MLX ops", lambda s: mlx_full(x, s), mlx_state))
    for name, step, holder in paths:
        for _ in range(3):
            t0 = time.perf_counter()
            outs, s = [], holder[0]
            for _ in range(50):
                y, s = step(s)
                outs.append(y)
            mx.eval(outs, s)
            holder[0] = s
            per_call = (time.perf_counter() - t0) * 1e3 / 50
            print(f"transformer ({name}), 50 calls in one evaluation: {per_call:.3f} ms per call")


if __name__ == "__main__":
    main()
