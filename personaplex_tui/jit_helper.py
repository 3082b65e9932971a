"""One JIT helper process (started by personaplex_tui/jit_workers.py): compile some of MLX's
CUDA kernels into its own cache folder, kept in step with the shared one.

    python -m personaplex_tui.jit_helper SHARED prime KIND VALUE INDEX
    python -m personaplex_tui.jit_helper SHARED mimi encode|decode|encode:PART OPTIONS_JSON
    python -m personaplex_tui.jit_helper SHARED graphs I N OPTIONS_JSON
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from personaplex_tui.jit_workers import ENV_VAR, CacheSync, log


def _prime(kind: str, value: str, index: str) -> None:
    """Compile MLX's gather or scatter module for one (value, index) dtype pair."""
    import mlx.core as mx

    a = mx.zeros((4, 2), dtype=getattr(mx, value))
    idx = mx.zeros((1,), dtype=getattr(mx, index))
    if kind == "gather":
        mx.eval(mx.take(a, idx, axis=0))
    else:
        where = mx.zeros((1, 2), dtype=getattr(mx, index))
        mx.eval(mx.put_along_axis(a, where, mx.ones((1, 2), dtype=a.dtype), axis=0))


def _lm_graph(name: str) -> bool:
    """The warm-up graphs that need the language model (the others are Mimi's)."""
    return not name.startswith(("encode", "decode"))


def _warm_graphs(options: dict[str, Any], part: int, parts: int) -> None:
    """Build the model and session the benchmark builds and warm up its LM graphs part::parts
    (Mimi's have helpers of their own, which need no LM and start sooner)."""
    from personaplex_tui.benchmark import BenchOptions, bench_session, build_model

    opts = BenchOptions(**options)
    model, voice, tokens = build_model(opts)
    bench_session(model, voice, tokens, opts).warm_up(part=(part, parts), graphs=_lm_graph)


def _warm_mimi(options: dict[str, Any], graph: str) -> None:
    """Build only the benchmark's Mimi and run its first `graph` ("encode" or "decode") through
    the step graphs' own compile (the same kernels as the session's), or one part of the
    encode graph compiled alone ("encode:PART", `model.mimi.warm_parts`)."""
    import mlx.core as mx

    from model.conversation.step_graphs import StepGraphs
    from model.mimi.codec import MimiCodec
    from model.mimi.warm_parts import compile_encode_part
    from personaplex_tui.benchmark import BenchOptions, random_config

    if "checkpoint" in options:  # the app: the checkpoint's own configuration
        from model.checkpoints.config_io import detect_layout, read_config

        folder = Path(options["checkpoint"])
        config = read_config(folder, detect_layout(folder))
        seed = 0
    else:
        opts = BenchOptions(**options)
        config, seed = random_config(opts), opts.seed
    codec = MimiCodec.random(config.mimi, seed=seed)  # the weights' values change no kernel
    if graph.startswith("encode:"):
        compile_encode_part(codec, graph.split(":", 1)[1])
        return
    graphs = StepGraphs(None, codec)  # type: ignore[arg-type]  # Mimi's graphs use no LM
    mimi = codec.model
    if graph == "encode":
        pcm = mx.zeros((codec.frame_size,), dtype=mx.float32)
        out = graphs.encode(False)(pcm, mimi.init_encode_state())
    else:
        codes = mx.zeros((config.lm.n_q_agent,), dtype=mx.int32)
        out = graphs.decode(False)(codes, mimi.init_decode_state())
    mx.eval(out)


def worker_main(argv: list[str]) -> int:
    """`python -m personaplex_tui.jit_helper SHARED TASK ARGS...`: `prime KIND VALUE
    INDEX`, `mimi encode|decode|encode:PART JSON` or `graphs I N JSON` (JSON: the benchmark's options, or {"checkpoint": FOLDER} for Mimi's).
    One helper, compiling into its own folder (`$MLX_PTX_CACHE_DIR`) synced with SHARED."""
    shared, task, *args = argv
    own = Path(os.environ[ENV_VAR])
    sync = CacheSync(own, Path(shared))
    sync.once()  # start from what the others already finished
    stop = threading.Event()
    thread = sync.run_in_background(stop)
    log(f"start {task} {' '.join(a[:20] for a in args)}")
    try:
        if task == "prime":
            _prime(*args)
        elif task == "graphs":
            _warm_graphs(json.loads(args[2]), int(args[0]), int(args[1]))
        elif task == "mimi":
            _warm_mimi(json.loads(args[1]), args[0])
        else:
            raise SystemExit(f"unknown task {task!r}")
        import mlx.core as mx

        mx.synchronize()
        log("done")
    finally:
        stop.set()
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
