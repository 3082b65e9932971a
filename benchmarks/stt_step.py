"""Per-frame cost of Kyutai STT 1B on this machine: the STT step (one 80 ms frame of 32 codes in,
a text token and the end-of-turn probabilities out) with random weights of the published shape,
and Mimi's streaming encode with 32 codebooks against 8 (what PersonaPlex alone needs).

Prints one JSON line per row (median / p90 ms over the timed frames; each frame evaluated on its
own, as the live step would). With --torch, also PyPI moshi's `LMGen` on the same shape (random
weights of its own, its own device: cuda when there is one).

    python -m benchmarks.stt_step [--frames 200] [--bits 16 8 4] [--parts] [--mimi] [--torch] [--tiny]

--parts also times the step's parts, each compiled and evaluated on its own: the input embedding,
the transformer (on CUDA the temporal kernel, for a quantized model) and the norm + heads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import mlx.core as mx
import numpy as np

from model.config import MimiConfig, mimi_tiny
from model.cuda import TEMPORAL
from model.mimi import MimiCodec
from model.stt import SttConfig, SttLM, SttStream, stt_1b_en_fr
from model.stt.model import initial_column


def summary(name: str, times: list[float], **extra: object) -> None:
    ms = sorted(1000 * t for t in times)
    row = {
        "row": name,
        "frames": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
        **extra,
    }
    print(json.dumps(row), flush=True)


def random_stt(cfg: SttConfig, bits: int) -> SttLM:
    """The published shape with random weights (bfloat16 on a GPU, float32 on the CPU)."""
    lm = SttLM(cfg)
    gpu = mx.default_device().type == mx.DeviceType.gpu
    dtype = mx.bfloat16 if gpu else mx.float32
    lm.set_dtype(dtype)
    for layer in lm.transformer.layers:  # norms stay float32, as loaded
        layer.norm1.alpha = layer.norm1.alpha.astype(mx.float32)
        layer.norm2.alpha = layer.norm2.alpha.astype(mx.float32)
    lm.out_norm.alpha = lm.out_norm.alpha.astype(mx.float32)
    if bits < 16:
        lm.quantize(bits)
    mx.eval(lm.parameters())
    lm.prepare()  # on CUDA: the temporal kernel for a quantized model, checked
    return lm


def time_stt(lm: SttLM, frames: int, warmup: int, start_at: int) -> list[float]:
    """Steps at positions start_at.. (the ring full once past the context)."""
    stream = SttStream(lm)
    rng = np.random.default_rng(0)
    codes = [mx.array(rng.integers(0, 2048, lm.config.n_q).astype(np.int32)) for _ in range(16)]
    for c in codes:
        mx.eval(c)
    stream.frames = start_at  # positions only: the rings' contents do not change the cost
    for cache in stream.caches:
        cache.offset = start_at
    times = []
    for i in range(warmup + frames):
        t = time.perf_counter()
        step = stream.step(codes[i % len(codes)])
        mx.eval(step.text_token, step.end_of_turn, stream.state_arrays())
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def time_parts(lm: SttLM, frames: int, warmup: int, start_at: int, bits: int) -> None:
    """The step's parts at position `start_at`, each compiled and evaluated on its own."""
    cfg = lm.config
    caches = lm.make_cache()
    for cache in caches:
        cache.offset = start_at
    column = initial_column(cfg.n_q, cfg.text_initial, cfg.audio_initial)
    pos = mx.array(start_at, dtype=mx.int32)
    window = caches[0].step_window()
    x = lm.embed(column)
    h = mx.random.normal(x.shape).astype(lm.dtype)
    mx.eval(x, h)

    def transformer(x: mx.array, pos: mx.array, states: list) -> tuple[mx.array, list]:
        out = lm.kernels.temporal_step(lm, x, pos, states)
        return (out if out is not None else lm.transformer.step(x, states, pos, window)), states

    parts = {
        "embedding": (mx.compile(lm.embed), lambda: (column,)),
        "transformer": (mx.compile(transformer), lambda: (x, pos, [c.state for c in caches])),
        "norm + heads": (mx.compile(lambda h: lm.heads(lm.out_norm(h))), lambda: (h,)),
    }
    kernel = lm.kernels.stack(TEMPORAL, lm) is not None and TEMPORAL.enabled()
    for name, (fn, args) in parts.items():
        times = []
        for i in range(warmup + frames):
            t = time.perf_counter()
            mx.eval(fn(*args()))
            if i >= warmup:
                times.append(time.perf_counter() - t)
        summary(f"stt part: {name}", times, bits=bits, temporal_kernel=kernel)


def time_mimi(cfg: MimiConfig, frames: int, warmup: int) -> list[float]:
    codec = MimiCodec(cfg)
    rng = np.random.default_rng(1)
    pcm = [mx.array(rng.standard_normal(1920).astype(np.float32) * 0.1) for _ in range(8)]
    times = []
    for i in range(warmup + frames):
        t = time.perf_counter()
        codes = codec.encode_step(pcm[i % len(pcm)])
        mx.eval(codes, codec.state_arrays())
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def time_torch(cfg: SttConfig, frames: int, warmup: int) -> None:
    import torch
    from moshi.models import LMGen, loaders

    device = "cuda" if torch.cuda.is_available() else "cpu"
    t = cfg.transformer
    kwargs = {
        "dim": t.d_model, "text_card": cfg.text_card, "existing_text_padding_id": 3,
        "n_q": cfg.n_q, "dep_q": 0, "card": cfg.card, "num_heads": t.num_heads,
        "num_layers": t.num_layers, "hidden_scale": 4.125, "causal": True,
        "context": t.context, "max_period": t.max_period, "gating": "silu",
        "norm": "rms_norm_f32", "positional_embedding": "rope", "depformer_multi_linear": True,
        "delays": [0] * (cfg.n_q + 1), "extra_heads_num_heads": cfg.extra_heads,
        "extra_heads_dim": cfg.extra_heads_dim,
    }  # fmt: skip
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    lm = loaders.get_moshi_lm(None, lm_kwargs=kwargs, device=device, dtype=dtype)
    gen = LMGen(lm, use_sampling=False, temp=0.0, temp_text=0.0)
    codes = torch.randint(0, cfg.card, (1, cfg.n_q, 1), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    with torch.no_grad(), gen.streaming(1):
        for i in range(warmup + frames):
            sync()
            start = time.perf_counter()
            gen.step_with_extra_heads(codes)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    summary("torch LMGen stt step", times, device=device, dtype=str(dtype))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--bits", type=int, nargs="+", default=[16, 8, 4])
    p.add_argument("--parts", action="store_true", help="also the step's parts, one by one")
    p.add_argument("--mimi", action="store_true", help="also Mimi encode, 32 vs 8 codebooks")
    p.add_argument("--torch", action="store_true", help="also moshi's PyTorch LMGen")
    p.add_argument("--tiny", action="store_true", help="a small model (CPU smoke test)")
    args = p.parse_args()
    cfg = replace(stt_1b_en_fr(), extra_heads=4)
    mimi = MimiConfig()
    if args.tiny:
        cfg = SttConfig.from_dict({"dim": 256, "num_heads": 4, "num_layers": 2, "context": 50})
        cfg = replace(cfg, extra_heads=4)
        mimi = replace(mimi_tiny(), n_q=32)
    print(json.dumps({"device": str(mx.default_device()), "mlx": mx.__version__}), flush=True)
    for bits in args.bits:
        lm = random_stt(cfg, bits)
        ctx = cfg.transformer.context
        for label, start in (("position 100", 100), ("ring full", 2 * ctx)):
            times = time_stt(lm, args.frames, args.warmup, start)
            summary(f"stt step, {label}", times, bits=bits)
        if args.parts:
            time_parts(lm, args.frames, args.warmup, 2 * cfg.transformer.context, bits)
        del lm
    if args.mimi:
        for n in (8, 32):
            summary(
                f"mimi encode, {n} codebooks",
                time_mimi(replace(mimi, num_codebooks=n), args.frames, args.warmup),
            )
    if args.torch:
        time_torch(cfg, args.frames, args.warmup)


if __name__ == "__main__":
    main()
