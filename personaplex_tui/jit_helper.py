"""One JIT helper process (started by personaplex_tui/jit_workers.py): compile some of MLX's
CUDA kernels into its own cache folder, kept in step with the shared one.

    python -m personaplex_tui.jit_helper SHARED prime KIND VALUE INDEX
    python -m personaplex_tui.jit_helper SHARED mimi encode|decode|encode:PART OPTIONS_JSON
    python -m personaplex_tui.jit_helper SHARED graphs I N OPTIONS_JSON
    python -m personaplex_tui.jit_helper SHARED stt tail|stream OPTIONS_JSON
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


# The LM helpers' model: every layer runs the same kernels (on CUDA the temporal transformer and
# the depformer are one custom kernel each, compiled in every process anyway), so two of each
# give the step graphs' modules without building 7B parameters first.
HELPER_LAYERS = 2
# Helpers yield the CPUs to the main process; the primers less so than the others: the main
# process's load and its first (eager) steps wait for their modules, while the graph helpers'
# work is needed only once the session switches to its compiled graphs.
PRIMER_NICENESS = 5
HELPER_NICENESS = 15
# The LM and STT helpers run our kernels as empty stand-ins, unchecked (`precompiled.
# use_stand_ins`): they reach the step graphs seconds sooner. `off`: the real kernels, checked.
STAND_INS_VAR = "PPX_JIT_STAND_INS"


def _lm_graph(name: str) -> bool:
    """The warm-up graphs that need the language model (the others are Mimi's)."""
    return not name.startswith(("encode", "decode"))


def _warm_graphs(options: dict[str, Any], part: int, parts: int) -> None:
    """Build the model and session the benchmark builds, or a random model of the app's
    checkpoint's configuration with a session of its default settings (HELPER_LAYERS deep
    either way), and warm up its LM graphs part::parts (Mimi's have helpers of their own,
    which need no LM and start sooner)."""
    from personaplex_tui.benchmark import BenchOptions, bench_session, build_model

    if "checkpoint" in options:
        session = _checkpoint_session(options)
    else:
        opts = BenchOptions(**options)
        model, voice, tokens = build_model(opts, layers=HELPER_LAYERS)
        session = bench_session(model, voice, tokens, opts)
    session.warm_up(part=(part, parts), graphs=_lm_graph)


def _checkpoint_session(options: dict[str, Any]) -> Any:
    """A session of the checkpoint's default settings (its sampling replaced by `sampling`,
    the conversation's, when given) on random weights of its configuration (HELPER_LAYERS deep;
    quantized as the app loads it: its own bits, or `quantize`)."""
    from model.checkpoints.load import loaded_quantization
    from personaplex_tui.benchmark import random_prompted_model, shallow

    config, seed = _persona_config(options)
    quant = loaded_quantization(Path(options["checkpoint"]), options.get("quantize"))
    bits = quant.bits if quant is not None else None
    cfg = shallow(config, HELPER_LAYERS)
    model, voice, tokens = random_prompted_model(cfg, bits, None, seed, 8, 8)
    settings = model.default_settings(voice=None, **options.get("sampling", {}))
    return model.session(settings, voice=voice, system_tokens=tokens)


def _warm_mimi(options: dict[str, Any], graph: str) -> None:
    """Build only the benchmark's Mimi and run its first `graph` ("encode" or "decode") through
    the step graphs' own compile (the same kernels as the session's), or one part of the
    encode graph compiled alone ("encode:PART", `model.mimi.warm_parts`)."""
    import mlx.core as mx

    from model.conversation.step_graphs import StepGraphs
    from model.mimi.codec import MimiCodec
    from model.mimi.warm_parts import compile_encode_part

    config, seed = _persona_config(options)
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


def _persona_config(options: dict[str, Any]) -> tuple[Any, int]:
    """(PersonaPlex configuration, seed): the checkpoint's own (the app) or the benchmark's."""
    if "checkpoint" in options:
        from model.checkpoints.config_io import detect_layout, read_config

        folder = Path(options["checkpoint"])
        return read_config(folder, detect_layout(folder)), 0
    from personaplex_tui.benchmark import BenchOptions, random_config

    opts = BenchOptions(**options)
    return random_config(opts), opts.seed


def _stt_config(options: dict[str, Any]) -> Any:
    """The STT's configuration: for the app, its STT model's (config.json, fetched if need
    be); for the benchmark, the random STT's that it builds (`bench_transcript`)."""
    from model.stt.random_listener import default_random_stt_config, tiny_stt_config

    if "checkpoint" not in options:
        return tiny_stt_config() if options.get("small") else default_random_stt_config()
    from model.checkpoints.hub import resolve_model
    from model.stt.loader import CONFIG_FILE, DEFAULT_STT_MODEL, read_stt_config
    from personaplex_tui.user_transcript import STT_FLAG

    folder = resolve_model(
        options.get("stt_model"),
        allow_patterns=[CONFIG_FILE],
        default=DEFAULT_STT_MODEL,
        flag=STT_FLAG,
    )
    return read_stt_config(folder, STT_FLAG)


def _warm_stt(options: dict[str, Any], what: str) -> None:
    """The user transcript's first graphs, with random weights of the STT's and the model's
    shapes: "tail", the end of Mimi's encode graph with the listener's quantizer (all the STT's
    codebooks), or "stream", the STT's load-time kernel check and its step graphs (every
    attention window)."""
    import mlx.core as mx

    from model.backend import on_cuda
    from model.conversation.persona import default_dtype
    from model.mimi.codec import MimiCodec
    from model.mimi.warm_parts import compile_encode_part
    from model.stt.random_listener import random_listener_quantizer, random_stt_lm
    from model.stt.stream import SttStream
    from personaplex_tui.user_transcript import stt_bits

    config, seed = _persona_config(options)
    stt = _stt_config(options)
    mx.random.seed(seed)
    if what == "tail":
        codec = MimiCodec.random(config.mimi, seed=seed)
        compile_encode_part(codec, "tail", random_listener_quantizer(codec, stt.n_q))
        return
    dtype = getattr(mx, options["dtype"]) if options.get("dtype") else default_dtype()
    bits = None if options.get("small") else stt_bits(options.get("stt_quantize"), on_cuda())
    lm = random_stt_lm(stt, dtype, bits)
    lm.prepare()
    SttStream(lm).warm_up()


def worker_main(argv: list[str]) -> int:
    """`python -m personaplex_tui.jit_helper SHARED TASK ARGS...`: `prime KIND VALUE
    INDEX`, `mimi encode|decode|encode:PART JSON`, `graphs I N JSON` or `stt tail|stream JSON`
    (JSON: the benchmark's options, or the app's {"checkpoint": FOLDER, "stt_model": ...,
    "stt_quantize": ...}).
    One helper, compiling into its own folder (`$MLX_PTX_CACHE_DIR`) synced with SHARED."""
    shared, task, *args = argv
    try:  # a helper must not slow the main process down: it yields the CPUs to it
        os.nice(PRIMER_NICENESS if task == "prime" else HELPER_NICENESS)
    except OSError:
        pass
    own = Path(os.environ[ENV_VAR])
    sync = CacheSync(own, Path(shared))
    sync.once()  # start from what the others already finished
    stop = threading.Event()
    thread = sync.run_in_background(stop)
    log(f"start {task} {' '.join(a[:20] for a in args)}")
    if task in ("graphs", "stt") and os.environ.get(STAND_INS_VAR, "").lower() != "off":
        from model.cuda import precompiled

        precompiled.use_stand_ins()  # our kernels' results are never used here
    try:
        if task == "prime":
            _prime(*args)
        elif task == "graphs":
            _warm_graphs(json.loads(args[2]), int(args[0]), int(args[1]))
        elif task == "mimi":
            _warm_mimi(json.loads(args[1]), args[0])
        elif task == "stt":
            _warm_stt(json.loads(args[1]), args[0])
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
