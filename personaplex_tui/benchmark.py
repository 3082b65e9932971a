"""Measure a model: load, warm-up, prompt prefill, the step (full and LM-only), phases, turn latency.

Pure measurement, no UI: `run_benchmark` returns a `BenchResult` that `ppx-tui bench` prints as a
Rich table or JSON. Never imports textual or sounddevice (it runs on headless GPU machines).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import mlx.core as mx
import numpy as np

from model import PersonaPlex, load, random_model
from model.backend import on_cuda
from model.checkpoints.voices import VoicePrompt
from model.config import FRAME_SAMPLES, PersonaPlexConfig, config_7b, mimi_tiny, tiny
from model.conversation.persona import default_dtype
from model.conversation.session import Session
from model.cuda import precompiled
from personaplex_tui.bench_turn import turn_latency
from personaplex_tui.cuda_launches import cuda_graphs
from personaplex_tui.jit_workers import defer_compile, start_jit_workers
from personaplex_tui.kernel_cache import ENV_VAR as KERNEL_CACHE_VAR
from personaplex_tui.kernel_cache import cached_kernels
from personaplex_tui.kernels_ahead import AheadCompile, compile_ahead, compile_stt_ahead
from personaplex_tui.kernels_in_use import (
    depformer_kernels,
    matvec_kernels,
    mimi_kernels,
    temporal_kernels,
)
from personaplex_tui.soak_meter import random_voice

BUDGET_MS = 80.0


@dataclass
class BenchOptions:
    """What to measure and on which model."""

    model: str | None = None  # repo id or folder; None with random_weights
    random_weights: bool = False
    small: bool = False  # a tiny model of the same structure (CPU, CI)
    bits: int = 4  # random weights: 4, 8 or 16 (= bfloat16, unquantized)
    dtype: str | None = None
    quantize: int | None = None
    steps: int = 300
    warmup_steps: int = 20
    voice_frames: int = 50  # random weights: voice prompt length
    prompt_tokens: int = 20  # random weights: system prompt length
    phases: bool = True
    turn: bool = False
    seed: int = 0
    user_transcript: bool = False  # also time the step with the user's transcript on
    stt_model: str | None = None  # its STT model (a real checkpoint's); None: the default
    stt_quantize: int | None = None
    full_ring: bool = False  # time steps attending a full context (sessions step there first)


@dataclass
class Stats:
    """Percentiles of a list of milliseconds."""

    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        a = np.asarray(values, dtype=np.float64)
        q = np.percentile(a, [50, 90, 99])
        return cls(*(round(float(v), 3) for v in (*q, a.max(), a.mean())), n=int(a.size))


@dataclass
class Warmup:
    """Where the warm-up went (seconds unless marked ms).

    session_s: the first session (its prompt prefill is the first use of the eager kernels);
    graphs: the first use of each step graph (`Session.warm_up`): trace_ms traces and compiles
    it, first_run_ms is its first evaluation (on a GPU: JIT-compiling or loading its kernels);
    graphs_s: all of `warm_up`; steps_s: the warm-up steps after it; new_session_ms: a second
    session with the same options, warm_up included (graphs are shared: new_session_traces is
    0); prefill_new_length_ms: the first prefill of another prompt length (a voice one frame
    longer); kernel_cache: the GPU kernel cache folder and its module count before and after;
    jit_workers: the helper processes that compiled kernels beside the load and warm-up on a
    fresh CUDA machine (personaplex_tui/jit_workers.py; empty when none ran); deferred: with
    helpers at work, the warm-up compiles nothing and the warm-up steps run eagerly
    (`Session.warm_up(defer=True)`, `$PPX_DEFER_COMPILE=off` to compile first), then the bench
    waits for the helpers and warms the compiled graphs one by one, as the app does between
    steps (`_finish_deferred`; empty when not deferred).
    """

    session_s: float = 0.0
    prefill_first_ms: float = 0.0
    graphs: list[dict[str, Any]] = field(default_factory=list)
    graphs_s: float = 0.0
    steps_s: float = 0.0
    new_session_ms: float = 0.0
    new_session_traces: int = 0
    prefill_new_length_ms: float = 0.0
    kernel_cache: dict[str, Any] = field(default_factory=dict)
    jit_workers: dict[str, Any] = field(default_factory=dict)
    deferred: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchResult:
    model: str
    quantization: str
    dtype: str
    device: str
    platform: str
    load_s: float
    warmup_s: float
    prefill_ms: float
    prefill_positions: int
    step_ms: Stats
    # where the timed full-duplex steps started (prefill included), of the temporal context:
    # at or past `context`, each step attends the whole ring, as a conversation's do after
    # its first four minutes
    timed_from_position: int
    context: int
    lm_step_ms: Stats
    phases_ms: dict[str, float] = field(default_factory=dict)
    rtf: float = 0.0
    peak_memory_gb: float = 0.0
    turn: dict[str, float] = field(default_factory=dict)
    warmup: Warmup = field(default_factory=Warmup)
    options: dict[str, Any] = field(default_factory=dict)
    matvec: str = ""  # which kernels multiply quantized weights by one row
    depformer: str = ""  # which kernels run the depformer
    temporal: str = ""  # which kernels run the temporal transformer's step
    mimi: str = ""  # which kernels run Mimi's transformers and quantizer
    cuda_graphs: str = ""  # CUDA: "off" (MLX's kernels launched directly) or "on"; else ""
    transcript: dict[str, Any] = field(default_factory=dict)  # `bench_transcript.time_transcript`

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name() -> str:
    """'gpu (NVIDIA H200)', 'gpu (Apple M2 Max)' or 'cpu'."""
    dev = mx.default_device()
    if dev != mx.gpu:
        return "cpu"
    try:
        info = mx.device_info()
        name = info.get("device_name") or info.get("architecture") or ""
    except Exception:  # device_info differs across backends and versions
        name = ""
    return f"gpu ({name})" if name else "gpu"


def random_config(opts: BenchOptions) -> PersonaPlexConfig:
    """The configuration a `--small` or `--random-weights` benchmark builds."""
    return tiny(mimi=mimi_tiny()) if opts.small else config_7b()


def shallow(config: PersonaPlexConfig, layers: int) -> PersonaPlexConfig:
    """`config` with at most `layers` temporal and depformer layers."""
    lm = config.lm
    return replace(
        config,
        lm=replace(
            lm,
            temporal=replace(lm.temporal, num_layers=min(layers, lm.temporal.num_layers)),
            depformer=replace(lm.depformer, num_layers=min(layers, lm.depformer.num_layers)),
        ),
    )


def random_prompted_model(
    cfg: PersonaPlexConfig,
    bits: int | None,
    dtype: mx.Dtype | None,
    seed: int,
    voice_frames: int,
    prompt_tokens: int,
) -> tuple[PersonaPlex, VoicePrompt | None, list[int]]:
    """A model of random weights of `cfg`'s shape, a random voice prompt (None for 0 frames:
    no voice prompt, as a checkpoint without voices) and prompt tokens."""
    model = random_model(cfg, bits=bits, dtype=dtype, seed=seed)
    mx.eval(model.lm.parameters())
    voice = random_voice(model, voice_frames, seed) if voice_frames else None
    rng = np.random.default_rng(seed + 1)
    tokens = [int(t) for t in rng.integers(4, model.lm.config.text_card, prompt_tokens)]
    return model, voice, tokens


def build_model(
    opts: BenchOptions, *, layers: int | None = None
) -> tuple[PersonaPlex, VoicePrompt | None, list[int]]:
    """The benchmark's model, voice prompt and prompt tokens. `layers`: random weights with
    at most that many temporal and depformer layers (the JIT helpers: the same kernels, built
    in a fraction of the time)."""
    dtype = getattr(mx, opts.dtype) if opts.dtype else None
    if opts.random_weights or opts.small:
        cfg = random_config(opts)
        if layers is not None:
            cfg = shallow(cfg, layers)
        bits = None if opts.bits == 16 else opts.bits
        if opts.small and bits:
            cfg.quantization = None  # tiny dims are not multiples of the group size
            bits = None
        return random_prompted_model(
            cfg, bits, dtype, opts.seed, opts.voice_frames, opts.prompt_tokens
        )
    from model.checkpoints.hub import resolve_model
    from personaplex_tui.checkpoint_voices import MODEL_FLAG
    from personaplex_tui.stop_signals import POLICY

    with POLICY.abrupt():  # (the hub's download threads: a Ctrl+C ends them with the process)
        folder = resolve_model(opts.model, flag=MODEL_FLAG)  # the sentence names the flag
    model = load(folder, dtype=dtype, quantize=opts.quantize)
    voice = model.voice(model.voices[0]) if model.voices else None
    return model, voice, model.system_tokens("assistant")


def _compile_ahead(opts: BenchOptions) -> AheadCompile | None:
    """Start compiling our kernels for the random model the benchmark builds (a loaded model's
    compile as the load reaches them)."""
    if not opts.random_weights or opts.small or opts.bits == 16:
        return None
    cfg = random_config(opts)
    group = cfg.quantization.group_size if cfg.quantization else 64
    dtype = getattr(mx, opts.dtype) if opts.dtype else default_dtype()
    if opts.user_transcript:  # the random STT the transcript timings load (bench_transcript.py)
        from model.stt.loader import GROUP_SIZE
        from model.stt.random_listener import default_random_stt_config
        from personaplex_tui.user_transcript import stt_bits

        bits = stt_bits(opts.stt_quantize, on_cuda())
        stt_config = default_random_stt_config()
        compile_stt_ahead(stt_config.transformer, dtype, bits, GROUP_SIZE, cfg.mimi, stt_config.n_q)
    return compile_ahead(cfg.lm, dtype, opts.bits, group, cfg.mimi)


AUDIO_POOL = 500  # distinct input frames; longer runs cycle through them (40 s of audio)


def _audio(n: int, seed: int) -> list[np.ndarray]:
    """Speech-like input: noise bursts with pauses (the codec's cost does not depend on content).
    At most AUDIO_POOL distinct frames are made, so a long run does not hold its whole input."""
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(min(n, AUDIO_POOL)):
        loud = (i // 25) % 2 == 0
        pool.append(
            (rng.standard_normal(FRAME_SAMPLES) * (0.1 if loud else 0.001)).astype(np.float32)
        )
    return [pool[i % len(pool)] for i in range(n)] if pool else []


def bench_session(model: PersonaPlex, voice, tokens, opts: BenchOptions, **kw) -> Session:
    """A session with the prepared voice prompt (or none) and prompt tokens."""
    settings = model.default_settings(voice=None, seed=opts.seed)
    return model.session(settings, voice=voice, system_tokens=tokens, **kw)


def transcribing_session(
    model: PersonaPlex, opts: BenchOptions, audio: list[np.ndarray], warm: int = 10
) -> Session:
    """For measurement scripts: a second session of `model` that transcribes the user, on the
    bench's random STT (stt-1b's shape at the bits the app picks here; the tiny one with
    `opts.small`), without voice or system prompt, warmed up and stepped `warm` frames."""
    from model.stt.random_listener import random_listener, tiny_stt_config
    from personaplex_tui.user_transcript import stt_bits

    config = tiny_stt_config() if opts.small else None
    bits = None if opts.small else stt_bits(opts.stt_quantize, on_cuda())
    model.listener = random_listener(model, config, bits=bits, seed=opts.seed)
    session = bench_session(model, None, [], opts, transcribe_user=True)
    session.warm_up()
    for pcm in audio[:warm]:
        session.step(pcm)
    return session


def fill_context(session: Session, audio: list[np.ndarray], context: int) -> int:
    """Step `session` (untimed) until its next step attends a full context of `context`
    positions, cycling `audio`; the number of frames stepped."""
    n = max(0, context - session.position)
    for i in range(n):
        session.step(audio[i % len(audio)])
    return n


def warmed_session(
    opts: BenchOptions, frames: int, warm: int
) -> tuple[PersonaPlex, Session, list[np.ndarray]]:
    """For measurement scripts: the benchmark's model, a session warmed up (its graphs) and
    stepped through `warm` frames, and `frames` more frames of input audio."""
    model, voice, tokens = build_model(opts)
    session = bench_session(model, voice, tokens, opts)
    session.warm_up()
    audio = _audio(warm + frames, 0)
    for pcm in audio[:warm]:
        session.step(pcm)
    return model, session, audio[warm:]


def run_benchmark(opts: BenchOptions, progress=lambda message: None) -> BenchResult:
    """Load, warm up and time everything `opts` asks for."""
    mx.reset_peak_memory()
    t0 = start = time.perf_counter()
    helpers = start_jit_workers(asdict(opts) if opts.random_weights or opts.small else None)
    early = _compile_ahead(opts)
    progress("building random weights" if opts.random_weights or opts.small else "loading")
    model, voice, tokens = build_model(opts)
    load_s = time.perf_counter() - t0

    progress("warming up")
    kernels_before = cached_kernels()
    t0 = time.perf_counter()
    session = bench_session(model, voice, tokens, opts)
    warm = Warmup(session_s=round(time.perf_counter() - t0, 3))
    warm.prefill_first_ms = round(session.prefill_ms, 3)
    graphs = model.step_graphs()
    defer = helpers is not None and defer_compile()
    t = time.perf_counter()
    # every attention window's graph, so that none compiles while timed (or, deferred, none)
    session.warm_up(defer=defer)
    warm.graphs_s = round(time.perf_counter() - t, 3)
    audio = _audio(max(opts.steps, opts.warmup_steps) + 50, opts.seed)
    t = time.perf_counter()
    warm_steps = []
    for pcm in audio[: opts.warmup_steps]:
        warm_steps.append(session.step(pcm).timings.total_ms)
    session.step_codes(np.zeros(8, np.int32))
    warm.steps_s = round(time.perf_counter() - t, 3)
    warmup_s = time.perf_counter() - t0
    if defer and helpers is not None:
        progress("waiting for the JIT helpers, then compiling the step graphs")
        warm.deferred = _finish_deferred(session, helpers, warm_steps, start)
    warm.graphs = [asdict(g) for g in graphs.timings]
    if helpers is not None:
        warm.jit_workers = helpers.stop()
    traces = graphs.traces
    t = time.perf_counter()
    bench_session(model, voice, tokens, opts).warm_up()
    warm.new_session_ms = round(1000 * (time.perf_counter() - t), 3)
    warm.new_session_traces = graphs.traces - traces
    longer = random_voice(model, (voice.frames if voice else 0) + 1, opts.seed + 3)
    warm.prefill_new_length_ms = round(bench_session(model, longer, tokens, opts).prefill_ms, 3)
    warm.kernel_cache = {
        "dir": os.environ.get(KERNEL_CACHE_VAR, ""),
        "modules_before": kernels_before,
        "modules_after": cached_kernels(),
        "precompiled": precompiled.report(),
        "ahead": early.report() if early is not None else None,
    }

    progress("timing the prompt prefill")
    prefills = []
    for _ in range(3):
        session.reset()
        prefills.append(session.prefill_ms)

    context = model.lm.config.temporal.context

    def fill(s: Session) -> None:
        """With --full-ring, step a timed session (untimed) to a full context."""
        if opts.full_ring:
            fill_context(s, audio, context)

    if opts.full_ring:
        progress(f"stepping to a full context ({context} positions)")
    fill(session)
    timed_from = session.position
    progress(f"timing {opts.steps} steps")
    step_ms = [session.step(pcm).timings.total_ms for pcm in audio[: opts.steps]]

    progress(f"timing {opts.steps} LM-only steps")
    lm_ms = []
    rng = np.random.default_rng(opts.seed)
    for _ in range(opts.steps):
        codes = rng.integers(0, model.lm.config.card, 8)
        t = time.perf_counter()
        session.step_codes(codes)
        lm_ms.append(1000 * (time.perf_counter() - t))

    phases: dict[str, float] = {}
    if opts.phases:
        progress("timing the phases")
        phased = bench_session(model, voice, tokens, opts, measure_phases=True)
        phased.warm_up()
        fill(phased)
        # the first 5 steps aside, at least 5 timed ones (a phase's median of none is NaN)
        timings = [phased.step(pcm).timings for pcm in audio[: min(max(opts.steps, 10), 100)]][5:]
        for name in ("encode", "temporal", "depformer", "decode"):
            phases[name] = round(float(np.median([getattr(t, f"{name}_ms") for t in timings])), 3)

    turn = {}
    if opts.turn:
        turn_session = bench_session(model, voice, tokens, opts)
        turn_session.warm_up()
        turn = turn_latency(turn_session, _audio(40, opts.seed + 2))
    transcript: dict[str, Any] = {}
    if opts.user_transcript:
        from personaplex_tui.bench_transcript import time_transcript

        def make(**kw: Any) -> Session:
            return bench_session(model, voice, tokens, opts, **kw)

        transcript = time_transcript(model, make, audio, opts, progress, Stats.of, fill)
    steps = Stats.of(step_ms)
    return BenchResult(
        model=model.source,
        quantization=model.quantization,
        dtype=str(model.lm.dtype).split(".")[-1],
        device=device_name(),
        platform=f"{platform.system()} {platform.machine()}, MLX {mx.__version__}",
        load_s=round(load_s, 3),
        warmup_s=round(warmup_s, 3),
        prefill_ms=round(float(np.median(prefills)), 3),
        prefill_positions=session.prompt_positions,
        step_ms=steps,
        timed_from_position=timed_from,
        context=context,
        lm_step_ms=Stats.of(lm_ms),
        phases_ms=phases,
        rtf=round(steps.p50 / BUDGET_MS, 4),
        peak_memory_gb=round(mx.get_peak_memory() / 1e9, 3),
        turn=turn,
        warmup=warm,
        options=asdict(opts),
        matvec=matvec_kernels(model),
        depformer=depformer_kernels(model),
        temporal=temporal_kernels(model),
        mimi=mimi_kernels(model),
        cuda_graphs=cuda_graphs() if on_cuda() else "",
        transcript=transcript,
    )


HELPERS_WAIT_S = 600.0


def _finish_deferred(
    session: Session, helpers: Any, warm_steps: list[float], start: float
) -> dict[str, Any]:
    """After a deferred warm-up: wait for the helpers, then warm the compiled graphs one at a
    time, as the app does between steps. Seconds are from the start of the load."""
    eager = Stats.of(warm_steps[1:]) if len(warm_steps) > 1 else None
    deadline = time.perf_counter() + HELPERS_WAIT_S
    while helpers.running() and time.perf_counter() < deadline:
        time.sleep(0.05)
    helpers_done_s = time.perf_counter() - start
    compiled = []
    while session.steps_eagerly:
        t = time.perf_counter()
        name = session.compile_next()
        compiled.append({"graph": name, "ms": round(1000 * (time.perf_counter() - t), 3)})
    return {
        "first_eager_step_ms": round(warm_steps[0], 3) if warm_steps else None,
        "eager_step_ms": asdict(eager) if eager is not None else None,
        "helpers_done_s": round(helpers_done_s, 3),
        "compile_next": compiled,
        "compiled_s": round(time.perf_counter() - start, 3),
    }
