"""The translation units of our kernels that a model of a given configuration will compile,
named from the configuration alone, before the model exists.

Each kernel's own `run` is called on stand-ins of the model and its stacked weights (the
dtypes and shapes the kernels read; no values) while `precompiled.collecting`, which records
the unit each call would compile and launches nothing. The app compiles them on other threads
while the weights load (personaplex_tui/kernels_ahead.py), so that the load-time checks find
them done. docs/cuda-kernels.md §Kernels compiled ahead.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import mlx.core as mx

from model.cuda import precompiled
from model.cuda.depformer import KERNEL as DEPFORMER
from model.cuda.matvec import KERNEL as MATVEC
from model.cuda.mimi_quantizer import KERNEL as MIMI_QUANTIZER
from model.cuda.mimi_transformer import KERNEL as MIMI_TRANSFORMER
from model.cuda.seanet import KERNEL as MIMI_SEANET
from model.cuda.seanet import VARIANTS as SEANET_VARIANTS
from model.cuda.temporal import KERNEL as TEMPORAL
from model.sampling import SamplingParams


def _stack(bits: int, group_size: int, hidden: int, dtype: mx.Dtype) -> SimpleNamespace:
    """A persistent kernel's stacked weights as its `run` reads them: dtypes, the FFN's width
    (from `qb`), bits and group size."""
    q = mx.zeros((1, 1), dtype=mx.uint32)
    qb = mx.zeros((1, hidden * bits // 32), dtype=mx.uint32)
    z = mx.zeros((1,), dtype=dtype)
    return SimpleNamespace(
        bits=bits,
        group_size=group_size,
        eps=1e-5,
        projections=(q, z, z, qb, z, z),
        qb=qb,
        norms=z,
        heads=z,
        emb=z,
    )


def units(
    lm_config: Any, dtype: mx.Dtype, bits: int, group_size: int, mimi_config: Any = None
) -> list[tuple[str, str]]:
    """(symbol, source) of the temporal kernel, the depformer kernel and the mat-vec for a
    language model of `lm_config` in `dtype` quantized to `bits` / `group_size`, and with
    `mimi_config` the Mimi transformer, quantizer and SEANet kernels'; [] where kernels are not compiled ahead
    (`precompiled.usable`) or take no such model."""
    if not precompiled.usable():
        return []
    lm = SimpleNamespace(
        config=lm_config,
        dtype=dtype,
        transformer=SimpleNamespace(config=lm_config.temporal),
    )
    t, d = lm_config.temporal, lm_config.depformer
    with precompiled.collecting() as found:
        if TEMPORAL.enabled():
            _temporal(lm, dtype, bits, group_size)
        if DEPFORMER.enabled():
            DEPFORMER.run(
                lm,
                _stack(bits, group_size, d.dim_feedforward, dtype),
                mx.zeros((lm_config.dep_q * d.d_model,), dtype=dtype),
                mx.array(0),
                lm_config.dep_q,
                SamplingParams(0.8, 250),
                mx.zeros((lm_config.dep_q, lm_config.card), dtype=mx.float32),
            )
        if MATVEC.enabled():
            _matvec(t.d_model, dtype, bits, group_size)
        if mimi_config is not None and MIMI_TRANSFORMER.enabled():
            _mimi(mimi_config)
        if mimi_config is not None and MIMI_QUANTIZER.enabled():
            _mimi_quantizer(mimi_config, mimi_config.num_codebooks)
        if mimi_config is not None and MIMI_SEANET.enabled():
            _mimi_seanet()
    return _unique(found)


def seanet_units() -> list[tuple[str, str]]:
    """(symbol, source) of every unit the SEANet kernel may ask for ([] as `units`)."""
    if not precompiled.usable():
        return []
    with precompiled.collecting() as found:
        if MIMI_SEANET.enabled():
            _mimi_seanet()
    return _unique(found)


def _mimi_seanet() -> None:
    """One launch of each of the SEANet kernel's variants (`seanet.VARIANTS`: which one a
    convolution takes depends on its rows and channels, not on Mimi's configuration), on
    stand-ins of a convolution's launch."""
    z = mx.zeros((1,), dtype=mx.float32)
    p = mx.zeros((9,), dtype=mx.int32)
    conv = SimpleNamespace(context=1, channels=1, upsample=1)
    for tb, v in SEANET_VARIANTS:
        a = SimpleNamespace(
            variant=(tb, v), rows_out=1, outputs=1, flags=0, conv=conv, weight=z, bias=z,
            params=p, blocks=1,
        )  # fmt: skip
        MIMI_SEANET.launch(a, z, z, z)


def _mimi(cfg: Any) -> None:
    """The Mimi transformer kernel's call for a Mimi of `cfg` (a `MimiConfig`), on a stand-in
    of the transformer (the attributes its `run` reads)."""
    d, heads = cfg.dimension, cfg.num_heads
    weight = SimpleNamespace(shape=(d, cfg.dim_feedforward), dtype=mx.float32)
    attn = SimpleNamespace(
        _heads=heads, _head_dim=d // heads, _scale=(d // heads) ** -0.5, _max_period=cfg.max_period
    )
    layer = SimpleNamespace(linear1=SimpleNamespace(weight=weight), self_attn=attn)
    transformer = SimpleNamespace(
        layers=[layer] * cfg.num_layers, _context=cfg.context, _per_frame=cfg.steps_per_frame
    )
    z = mx.zeros((1,), dtype=mx.float32)
    stack = SimpleNamespace(wa=z, wb=z, norms=z, eps=1e-5)
    x = mx.zeros((1, cfg.steps_per_frame, d), dtype=mx.float32)
    MIMI_TRANSFORMER.run(transformer, stack, x, mx.array(0), [z] * cfg.num_layers)


def _mimi_quantizer(cfg: Any, codebooks: int) -> None:
    """The Mimi quantizer kernel's call for `codebooks` codebooks of a Mimi of `cfg`."""
    z = mx.zeros((1,), dtype=mx.float32)
    q = SimpleNamespace(
        codebooks=SimpleNamespace(
            shape=(codebooks, cfg.codebook_size, cfg.codebook_dim), dtype=mx.float32
        ),
        semantic_input_proj=SimpleNamespace(
            shape=(cfg.codebook_dim, cfg.dimension), dtype=mx.float32
        ),
    )
    stack = SimpleNamespace(proj=z, books=z, bias=z)
    MIMI_QUANTIZER.run(q, stack, mx.zeros((cfg.dimension,), dtype=mx.float32))


def stt_units(
    transformer_config: Any,
    dtype: mx.Dtype,
    bits: int | None,
    group_size: int,
    mimi_config: Any = None,
    codebooks: int = 0,
) -> list[tuple[str, str]]:
    """(symbol, source) of the temporal kernel and the mat-vec for the Kyutai STT's transformer
    of `transformer_config` (`model/stt/model.py` runs it on the same kernels; its load checks
    the mat-vec at its own bits; none when `bits` is None: a float STT runs MLX's ops), and with
    `mimi_config` the Mimi quantizer kernel's for the listener's `codebooks` codebooks (its
    encode with the STT's codebooks after PersonaPlex's, `model/stt/listener.py`); [] as
    `units`."""
    if not precompiled.usable():
        return []
    lm = SimpleNamespace(dtype=dtype, transformer=SimpleNamespace(config=transformer_config))
    with precompiled.collecting() as found:
        if bits and TEMPORAL.enabled():
            _temporal(lm, dtype, bits, group_size)
        if bits and MATVEC.enabled():
            _matvec(transformer_config.d_model, dtype, bits, group_size)
        if mimi_config is not None and codebooks and MIMI_QUANTIZER.enabled():
            _mimi_quantizer(mimi_config, codebooks)
    return _unique(found)


def _matvec(k: int, dtype: mx.Dtype, bits: int, group_size: int) -> None:
    q = SimpleNamespace(
        weight=mx.zeros((64, k * bits // 32), dtype=mx.uint32),
        scales=mx.zeros((64, k // group_size), dtype=dtype),
        biases=mx.zeros((64, k // group_size), dtype=dtype),
        bits=bits,
        group_size=group_size,
        rows=64,
        inputs=k,
    )
    MATVEC.run(mx.zeros((1, 1, k), dtype=dtype), q, 64, mx.zeros((1,), dtype=dtype))


def _temporal(lm: Any, dtype: mx.Dtype, bits: int, group_size: int) -> None:
    t = lm.transformer.config
    states = [[mx.zeros((1,), dtype=dtype)] * 2 for _ in range(t.num_layers)]
    TEMPORAL.run(
        lm,
        _stack(bits, group_size, t.dim_feedforward, dtype),
        mx.zeros((1, 1, t.d_model), dtype=dtype),
        mx.array(0),
        states,
    )


def _unique(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    unique: dict[str, tuple[str, str]] = {}
    for symbol, source in found:
        unique.setdefault(source, (symbol, source))
    return list(unique.values())
