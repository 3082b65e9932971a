"""Peer worker: Kyutai's `moshi_mlx` (PyPI) on PersonaPlex's shapes with random weights.

`lm`: `LmGen.step` per frame (temporal transformer, text sampling, `--depformer-steps` depformer
slices, tokens evaluated and the last audio tokens read), and the full-duplex step built from
moshi_mlx's own parts (its MLX Mimi's `encode_step`, `LmGen.step`, `decode_step` of the agent's
codes, audio copied to the host; moshi_mlx's app decodes with the Rust `rustymimi` instead).
`mimi`: its MLX Mimi's streaming encode and decode of one 80 ms frame, timed separately.

The LM in bfloat16, quantized with `nn.quantize` (as moshi_mlx's `local.py` does) to `--bits`
with PersonaPlex's group size (64); Mimi in float32. moshi_mlx runs eagerly, as shipped.

    python benchmarks/peers_mlx.py lm --bits 4 --depformer-steps 8 --steps 300
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers_common import (  # noqa: E402
    codec_timed,
    emit,
    emit_missing,
    noise_frames,
    shapes,
    timed,
    user_codes,
    worker_parser,
)
from model.config import MimiConfig, PersonaPlexConfig, TransformerConfig  # noqa: E402
from personaplex_tui.benchmark import device_name  # noqa: E402

GROUP_SIZE = 64  # PersonaPlex's converted checkpoints (model.config.QuantizationConfig)


def _ff(t: TransformerConfig) -> int:
    """The `dim_feedforward` for which moshi_mlx's gated FFN has PersonaPlex's hidden size."""
    if t.dim_feedforward == 11 * t.d_model // 4:
        return 4 * t.d_model  # moshi_mlx's special case (11264 for 4096)
    ff = -(-3 * t.dim_feedforward // 2)
    if 2 * ff // 3 != t.dim_feedforward:
        raise ValueError(f"moshi_mlx cannot build a gated FFN of {t.dim_feedforward} units")
    return ff


def lm_config(cfg: PersonaPlexConfig, dep_q: int):
    """moshi_mlx's LmConfig for PersonaPlex's shapes: its Moshi 7B config, resized."""
    from dataclasses import replace

    from moshi_mlx import models

    base = models.config_v0_1()
    t, d, lm = cfg.lm.temporal, cfg.lm.depformer, cfg.lm
    temporal = replace(
        base.transformer, d_model=t.d_model, num_heads=t.num_heads, num_layers=t.num_layers,
        dim_feedforward=_ff(t), context=t.context, max_period=int(t.max_period),
    )  # fmt: skip
    dep = replace(
        base.depformer.transformer, d_model=d.d_model, num_heads=d.num_heads,
        num_layers=d.num_layers, dim_feedforward=_ff(d), context=d.context,
    )  # fmt: skip
    return replace(
        base,
        transformer=temporal,
        depformer=replace(base.depformer, transformer=dep, num_slices=dep_q),
        text_in_vocab_size=lm.text_card + 1,
        text_out_vocab_size=lm.text_card,
        audio_vocab_size=lm.card + 1,
        audio_codebooks=lm.n_audio,
        audio_delays=list(lm.delays[1:]),
    )


def mimi_config(cfg: MimiConfig):
    """moshi_mlx's MimiConfig for PersonaPlex's Mimi (or the tiny test shape)."""
    from dataclasses import replace

    from moshi_mlx.models import mimi

    base = mimi.mimi_202407(cfg.num_codebooks)
    seanet = replace(
        base.seanet, dimension=cfg.dimension, nfilters=cfg.n_filters, ratios=list(cfg.ratios),
        ksize=cfg.kernel_size, residual_ksize=cfg.residual_kernel_size,
        last_ksize=cfg.last_kernel_size, dilation_base=cfg.dilation_base, compress=cfg.compress,
        nresidual_layers=cfg.n_residual_layers,
    )  # fmt: skip
    transformer = replace(
        base.transformer, d_model=cfg.dimension, num_heads=cfg.num_heads,
        num_layers=cfg.num_layers, dim_feedforward=cfg.dim_feedforward, context=cfg.context,
        layer_scale=cfg.layer_scale,
    )  # fmt: skip
    return replace(
        base, seanet=seanet, transformer=transformer, quantizer_bins=cfg.codebook_size,
        quantizer_dim=cfg.codebook_dim,
    )  # fmt: skip


def _text(out):
    """The text token from `LmGen.step` (0.3.0 returns it with the transformer's output)."""
    return out[0] if isinstance(out, tuple) else out


def main(argv: list[str] | None = None) -> int:
    args = worker_parser(__doc__.splitlines()[0]).parse_args(argv)
    try:
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_flatten
        from moshi_mlx import models, utils
        from moshi_mlx.models.mimi import Mimi
    except ImportError as exc:
        return emit_missing("moshi_mlx", exc)

    mx.random.seed(args.seed)
    cfg = shapes(args.small)
    n = args.warmup_steps + args.steps
    frames = [mx.array(x)[None, None] for x in noise_frames(n, args.seed)]
    version = f"moshi_mlx {metadata.version('moshi_mlx')}, MLX {mx.__version__} on {device_name()}"
    q = cfg.mimi.num_codebooks
    mimi = Mimi(mimi_config(cfg.mimi))
    mx.eval(mimi.parameters())

    def encode(i: int) -> mx.array:
        codes = mimi.encode_step(frames[i])
        mx.eval(codes)
        return codes

    def decode(codes: mx.array) -> np.ndarray:
        pcm = mimi.decode_step(codes)
        mx.eval(pcm)
        return np.array(pcm)

    if args.part == "mimi":
        enc, dec = codec_timed(encode, decode, args.warmup_steps, args.steps)
        dtype = str(tree_flatten(mimi.parameters())[0][1].dtype).split(".")[-1]
        emit(f"{version}, Mimi {dtype}", {"encode": enc, "decode": dec})
        return 0

    model = models.Lm(lm_config(cfg, args.depformer_steps))
    model.set_dtype(mx.bfloat16)
    weights = "bf16"
    if args.bits != 16:
        nn.quantize(model, bits=args.bits, group_size=GROUP_SIZE)
        weights = f"{args.bits}-bit"
    mx.eval(model.parameters())
    model.warmup()
    need = cfg.lm.n_audio - args.depformer_steps  # the user's codes LmGen takes (0 with 16)
    codes = mx.array(user_codes(n, q, cfg.lm.card, args.seed)[:, :need].astype(np.int32))
    s = cfg.sampling

    def generator():
        for c in model.transformer_cache:
            c.reset()
        return models.LmGen(
            model=model, max_steps=n + 1,
            text_sampler=utils.Sampler(temp=s.text_temperature, top_k=s.text_top_k),
            audio_sampler=utils.Sampler(temp=s.audio_temperature, top_k=s.audio_top_k),
        )  # fmt: skip

    def lm_step(i: int) -> None:
        text = _text(gen.step(codes[i : i + 1]))
        mx.eval(text, gen.gen_sequence)
        text.item()
        tokens = gen.last_audio_tokens()
        if tokens is not None:
            np.array(tokens)

    def full_step(i: int) -> None:
        user = encode(i)
        text = _text(gen.step(user[:, :need, 0]))
        mx.eval(text, gen.gen_sequence)
        text.item()
        tokens = gen.last_audio_tokens()
        if tokens is not None:
            decode(tokens[:, :q, None])

    gen = generator()
    lm_ms = timed(lm_step, args.warmup_steps, args.steps)
    gen = generator()
    full_ms = timed(full_step, args.warmup_steps, args.steps)
    label = f"{version}, {weights}"
    emit(label, {"lm": lm_ms, "full": full_ms}, depformer_steps=args.depformer_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
