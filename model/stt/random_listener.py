"""A listener of random weights for a PersonaPlex model (benchmarks): the STT LM of a given shape
(default stt-1b-en_fr with its 4 end-of-turn heads) and a 32-codebook quantizer whose first
codebooks are the model's own, so that timing the step with the transcript on needs no download."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import mlx.core as mx

from model.mimi.quantizer import SplitResidualQuantizer
from model.stt.config import SttConfig, stt_1b_en_fr
from model.stt.listener import Listener
from model.stt.model import SttLM


def tiny_stt_config(n_q: int = 32) -> SttConfig:
    """A small STT of the published structure (CPU tests and `bench --small`)."""
    from model.config import TransformerConfig

    t = TransformerConfig(d_model=64, num_heads=4, num_layers=2, dim_feedforward=176, context=16)
    return SttConfig(transformer=t, n_q=n_q, text_card=400, extra_heads=4)


def random_listener(
    persona: Any,
    config: SttConfig | None = None,
    *,
    bits: int | None = None,
    dtype: mx.Dtype | None = None,
    seed: int = 0,
) -> Listener:
    """A `Listener` of random weights for `persona` (its encoder, its first codebooks)."""
    config = config or default_random_stt_config()
    mx.random.seed(seed)
    lm = random_stt_lm(config, dtype or persona.lm.dtype, bits)
    quantizer = random_listener_quantizer(persona.mimi, config.n_q)
    lm.prepare()
    return Listener(
        config=config, lm=lm, quantizer=quantizer, tokenizer=None, source="random weights"
    )


def default_random_stt_config() -> SttConfig:
    """stt-1b-en_fr's shape with its 4 end-of-turn heads."""
    return replace(stt_1b_en_fr(), extra_heads=4)


def random_stt_lm(config: SttConfig, dtype: mx.Dtype, bits: int | None = None) -> SttLM:
    """The STT LM of `config`'s shape with random weights (from MLX's current seed), evaluated
    and not yet prepared."""
    lm = SttLM(config)
    lm.set_dtype(dtype)
    if bits is not None:
        lm.quantize(bits)
    lm.eval()
    mx.eval(lm.parameters())
    return lm


def random_listener_quantizer(mimi: Any, n_q: int) -> SplitResidualQuantizer:
    """A quantizer of `n_q` codebooks whose first ones and projections are `mimi`'s (a
    `MimiCodec`), the others random, prepared."""
    ours = mimi.model.quantizer
    cfg = mimi.cfg
    quantizer = SplitResidualQuantizer(replace(cfg, n_q=max(cfg.n_q, n_q), num_codebooks=n_q))
    n = ours.codebooks.shape[0]
    extra = mx.random.normal((n_q - n, *ours.codebooks.shape[1:])) * 0.5
    quantizer.codebooks = mx.concatenate([ours.codebooks, extra.astype(ours.codebooks.dtype)])
    for name in (
        "semantic_input_proj",
        "acoustic_input_proj",
        "semantic_output_proj",
        "acoustic_output_proj",
    ):
        setattr(quantizer, name, getattr(ours, name))
    quantizer.prepare()
    quantizer.prepare_kernel()  # on CUDA: its encode as one kernel, checked now
    return quantizer
