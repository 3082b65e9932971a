"""Peer worker for this project's Mimi (`model.mimi.MimiCodec`, random weights), per 80 ms frame.

`mimi`: the codec's compiled streaming `encode_step` and `decode_step` of one frame, timed
separately (codes evaluated; audio evaluated and copied to the host), float32 like the peers'.
The LM step and the full-duplex step are `ppx-tui bench`'s, which `benchmarks/peers.py` runs.

    python benchmarks/peers_ours.py mimi --steps 300
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers_common import codec_timed, emit, noise_frames, shapes, worker_parser  # noqa: E402
from model.mimi import MimiCodec  # noqa: E402
from personaplex_tui.benchmark import device_name  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = worker_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    if args.part != "mimi":
        parser.error("ppx-tui's LM step is measured by `python -m personaplex_tui bench`.")
    cfg = shapes(args.small)
    codec = MimiCodec.random(cfg.mimi, seed=args.seed)
    frames = [mx.array(x) for x in noise_frames(args.warmup_steps + args.steps, args.seed)]

    def encode(i: int) -> mx.array:
        codes = codec.encode_step(frames[i])
        mx.eval(codes, codec.state_arrays())
        return codes

    def decode(codes: mx.array) -> np.ndarray:
        pcm = codec.decode_step(codes)
        mx.eval(pcm, codec.state_arrays())
        return np.array(pcm)

    enc, dec = codec_timed(encode, decode, args.warmup_steps, args.steps)
    dtype = str(tree_flatten(codec.model.parameters())[0][1].dtype).split(".")[-1]
    label = f"ppx-tui, MLX {mx.__version__} on {device_name()}, Mimi {dtype}"
    emit(label, {"encode": enc, "decode": dec})
    return 0


if __name__ == "__main__":
    sys.exit(main())
