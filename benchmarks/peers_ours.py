"""Peer worker for this project's Mimi (`model.mimi.MimiCodec`, random weights), per 80 ms frame.

`mimi`: the codec's streaming encode and decode of one frame through the compiled graphs the
full-duplex step uses, timed separately (codes evaluated; audio evaluated and copied to the
host), float32 like the peers', with MLX's CUDA kernels launched as the app launches them.
The LM step and the full-duplex step are `ppx-tui bench`'s, which `benchmarks/peers.py` runs.

    python benchmarks/peers_ours.py mimi --steps 300
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers_common import codec_timed, emit, noise_frames, shapes, worker_parser  # noqa: E402
from model.mimi import MimiCodec  # noqa: E402
from personaplex_tui.benchmark import device_name  # noqa: E402
from personaplex_tui.cuda_launches import launch_directly  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = worker_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    launch_directly()  # as the app runs it (personaplex_tui/cuda_launches.py)
    if args.part != "mimi":
        parser.error("ppx-tui's LM step is measured by `python -m personaplex_tui bench`.")
    cfg = shapes(args.small)
    codec = MimiCodec.random(cfg.mimi, seed=args.seed)
    mimi = codec.model
    frames = [mx.array(x) for x in noise_frames(args.warmup_steps + args.steps, args.seed)]
    # The session's compiled graphs (`model.step_graphs`): one while the transformers' caches
    # fill and one once they are full; both traced now, so that none compiles while timed.
    graphs = {
        full: (mx.compile(partial(mimi.encode_step, full=full)),
               mx.compile(partial(mimi.decode_step, full=full)))
        for full in (False, True)
    }  # fmt: skip
    for enc_fn, dec_fn in graphs.values():
        codes, _ = enc_fn(frames[0], mimi.init_encode_state())
        mx.eval(codes, dec_fn(codes, mimi.init_decode_state()))
    state = {"encode": mimi.init_encode_state(), "decode": mimi.init_decode_state()}
    done = {"encode": 0, "decode": 0}

    def step(kind: str, x: mx.array) -> mx.array:
        fn = graphs[mimi.full_after(done[kind])][kind == "decode"]
        out, state[kind] = fn(x, state[kind])
        mx.eval(out, state[kind])
        done[kind] += 1
        return out

    def encode(i: int) -> mx.array:
        return step("encode", frames[i])

    def decode(codes: mx.array) -> np.ndarray:
        return np.array(step("decode", codes))

    enc, dec = codec_timed(encode, decode, args.warmup_steps, args.steps)
    dtype = str(tree_flatten(codec.model.parameters())[0][1].dtype).split(".")[-1]
    label = f"ppx-tui, MLX {mx.__version__} on {device_name()}, Mimi {dtype}"
    emit(label, {"encode": enc, "decode": dec})
    return 0


if __name__ == "__main__":
    sys.exit(main())
