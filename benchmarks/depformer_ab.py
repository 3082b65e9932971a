"""The depformer kernel built from several `src/` folders, timed alternately on a CUDA GPU.

Each folder holds a version's `common.cuh`, `depformer.cuh` and `depformer.cu`. For 4 and 8 bits
(one random 7B model each) and for sampled (0.8, top-k 250) and greedy columns, every version's
8-step column is traced with `mx.compile`, run on 20 keys (the tokens must be the same for every
version: they are compared), then timed in four rounds that alternate the versions (order
flipped every round), median ms per column over 100 calls.

    python3 benchmarks/depformer_ab.py OLD_SRC NEW_SRC
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402

from model import cuda, random_model  # noqa: E402
from model.config import config_7b  # noqa: E402
from model.sampling import SamplingParams  # noqa: E402
from personaplex_tui.kernel_cache import persistent_kernel_cache  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="folders of src/ files")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args()
    persistent_kernel_cache()
    kernel = cuda.DEPFORMER
    for bits in (4, 8):
        lm = random_model(config_7b(), bits=bits, seed=0).lm
        h = mx.random.normal((1, 1, lm.config.temporal.d_model), key=mx.random.key(8))
        h = h.astype(lm.dtype)
        text = mx.array(3, dtype=mx.int32)
        for params in (SamplingParams(0.8, 250), SamplingParams(0.0, 0)):
            fns, tokens = {}, {}
            for folder in args.folders:
                kernel.body = (folder / "depformer.cu").read_text()
                kernel.header = (folder / "common.cuh").read_text() + (
                    folder / "depformer.cuh"
                ).read_text()
                fn = mx.compile(
                    lambda h, t, k, p=params, m=lm: m.depformer_step(
                        h, t, n_steps=8, params=p, key=k
                    )
                )
                outs = [fn(h, text, mx.random.key(s)) for s in range(20)]
                mx.eval(outs)
                fns[folder.name] = fn
                tokens[folder.name] = [o.tolist() for o in outs]
            names = list(fns)
            same = all(tokens[n] == tokens[names[0]] for n in names)
            times: dict[str, list[float]] = {n: [] for n in names}
            for r in range(args.rounds):
                for n in names if r % 2 == 0 else names[::-1]:
                    samples = []
                    for i in range(args.iters):
                        t0 = time.perf_counter()
                        mx.eval(fns[n](h, text, mx.random.key(i)))
                        samples.append(time.perf_counter() - t0)
                    times[n].append(round(1000 * statistics.median(samples), 3))
            print(f"{bits}-bit {params}: tokens identical {same}; ms {times}", flush=True)
        del lm
        mx.clear_cache()


if __name__ == "__main__":
    main()
