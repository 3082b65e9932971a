"""Quantized checkpoints (4/8-bit, used as stored, or quantized on load) equal a dequantize-then-run."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from model.checkpoints.layout import CONVERTED, ORIGINAL, expected_layout, lm_modules
from model.checkpoints.load import load_lm
from model.checkpoints.write import layout_tensors, write_checkpoint
from model.lm.layers import QuantizedMultiLinear
from model.lm.model import LM
from tests.lm_helpers import (
    assert_close,
    build_moshi,
    moshi_depformer_logits,
    moshi_forward,
    random_columns,
    set_moshi_weights,
    small_config,
    weights_from_moshi,
)

DEP_FF = 192  # gated hidden 128: every quantized input size is a multiple of the group size 64


def quant_config(bits: int | None):
    return small_config(d_model=256, dep_dim=64, dep_dim_feedforward=DEP_FF, bits=bits)


def dequantized_from_files(folder: Path, config) -> dict[str, np.ndarray]:
    """Float weights by parameter path, read back from the written files and dequantized."""
    q = config.quantization
    out: dict[str, np.ndarray] = {}
    for file, specs in expected_layout(config, CONVERTED).items():
        stored = mx.load(str(folder / file))
        parts: dict[str, dict[str, mx.array]] = {}
        for key, spec in specs.items():
            module, part = spec.target.rsplit(".", 1)
            parts.setdefault(module, {})[part] = stored[key]
        for module, p in parts.items():
            if "scales" in p:
                scales, biases = p["scales"].astype(mx.float32), p["biases"].astype(mx.float32)
                w = mx.dequantize(p["weight"], scales, biases, q.group_size, q.bits)
                out[f"{module}.weight"] = np.array(w.astype(mx.float32))
            else:
                ((part, arr),) = p.items()
                out[f"{module}.{part}"] = np.array(arr.astype(mx.float32))
    return out


def dequantized_from_lm(lm: LM) -> dict[str, np.ndarray]:
    """Float weights by parameter path of a loaded (partly quantized) LM."""
    out = {}
    for name, module in lm.named_modules():
        if isinstance(module, (nn.QuantizedLinear, QuantizedMultiLinear)):
            w = mx.dequantize(
                module.weight, module.scales, module.biases, module.group_size, module.bits
            )
            out[f"{name}.weight"] = np.array(w)
    return out


def assert_matches_moshi(lm: LM, moshi, config) -> None:
    cols = random_columns(config, 8, seed=5)
    ref_logits, ref_h = moshi_forward(moshi, cols)
    logits, h = lm.forward(lm.embed(mx.array(cols)), lm.make_cache())
    assert_close(np.array(logits[0]), ref_logits)
    ref_dep = moshi_depformer_logits(moshi, cols, ref_h)
    for t in (0, 4, 7):
        got = lm.depformer_logits(h[:, t : t + 1], mx.array(cols[t, 0]), mx.array(cols[t, 1:]))
        assert_close(np.array(got), ref_dep[t])


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_checkpoint_equals_dequantized_reference(tmp_path, bits):
    config = quant_config(bits)
    moshi = build_moshi(config, seed=3, dep_dim_feedforward=DEP_FF)
    write_checkpoint(tmp_path, config, layout_tensors(weights_from_moshi(moshi), config))
    lm, loaded = load_lm(tmp_path, dtype=mx.float32)

    assert loaded.quantization is not None and loaded.quantization.bits == bits
    assert isinstance(lm.transformer.layers[0].self_attn.in_proj, nn.QuantizedLinear)
    assert isinstance(lm.depformer.layers[1].self_attn.out_proj, QuantizedMultiLinear)
    assert isinstance(lm.depformer_in[3], nn.QuantizedLinear)
    assert isinstance(lm.text_linear, nn.Linear) and isinstance(lm.linears[0], nn.Linear)

    set_moshi_weights(moshi, dequantized_from_files(tmp_path, config))
    assert_matches_moshi(lm, moshi, config)


def test_float_checkpoint_quantized_on_load(tmp_path):
    config = quant_config(None)
    moshi = build_moshi(config, seed=4, dep_dim_feedforward=DEP_FF)
    weights = weights_from_moshi(moshi)
    write_checkpoint(tmp_path, config, layout_tensors(weights, config, ORIGINAL))
    lm, loaded = load_lm(tmp_path, dtype=mx.float32, quantize=8)

    assert loaded.quantization is not None and loaded.quantization.bits == 8
    dequantized = dequantized_from_lm(lm)
    linears = [m for m in lm_modules(config.lm) if m.kind == "linear"]
    assert sorted(dequantized) == sorted(f"{m.name}.weight" for m in linears)
    for name, w in dequantized.items():
        # 8-bit affine steps are about range/255: the dequantized weight stays that close.
        original = np.array(weights[name])
        step = (original.max() - original.min()) / 255
        assert np.abs(w - original).max() <= step

    set_moshi_weights(moshi, dequantized)
    assert_matches_moshi(lm, moshi, config)
