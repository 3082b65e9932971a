"""At full 7B size, the loader expects exactly the tensors of the converted layout (4-bit and
8-bit), as docs/checkpoint-layouts.md §The converted layout lists them."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from model.checkpoints.layout import CONVERTED, ORIGINAL, expected_layout
from model.checkpoints.load import quantize_lm
from model.config import QuantizationConfig, config_7b
from model.lm.model import LM


def spec_3a(bits: int) -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    """The converted layout written out: file -> key -> (shape, dtype)."""

    def q(prefix: str, out: int, inp: int, underscore: bool = False) -> dict:
        sep = "_" if underscore else "."
        return {
            f"{prefix}{sep}weight": ((out, inp * bits // 32), "U32"),
            f"{prefix}{sep}scales": ((out, inp // 64), "F16"),
            f"{prefix}{sep}biases": ((out, inp // 64), "F16"),
        }

    temporal: dict = {"out_norm.alpha": ((1, 1, 4096), "F16")}
    for i in range(32):
        p = f"layers.{i}"
        temporal |= q(f"{p}.self_attn.in_proj", 12288, 4096, underscore=True)
        temporal |= q(f"{p}.self_attn.out_proj", 4096, 4096)
        temporal |= q(f"{p}.gating.linear_in", 22528, 4096)
        temporal |= q(f"{p}.gating.linear_out", 4096, 11264)
        temporal[f"{p}.norm1.alpha"] = ((1, 1, 4096), "F16")
        temporal[f"{p}.norm2.alpha"] = ((1, 1, 4096), "F16")
    depformer: dict = {}
    for layer in range(6):
        p = f"layers.{layer}"
        depformer |= q(f"{p}.self_attn.in_proj", 49152, 1024, underscore=True)
        depformer |= q(f"{p}.self_attn.out_proj", 16384, 1024)
        for k in range(16):
            depformer |= q(f"{p}.gating.{k}.linear_in", 5632, 1024)
            depformer |= q(f"{p}.gating.{k}.linear_out", 1024, 2816)
        depformer[f"{p}.norm1.alpha"] = ((1, 1, 1024), "F16")
        depformer[f"{p}.norm2.alpha"] = ((1, 1, 1024), "F16")
    for k in range(16):
        depformer |= q(f"depformer_in.{k}", 1024, 4096)
    embeddings = {
        "text_emb.weight": ((32001, 4096), "F16"),
        "text_linear.weight": ((32000, 4096), "F16"),
        "depformer_text_emb.weight": ((32001, 1024), "F16"),
    }
    embeddings |= {f"emb.{i}.weight": ((2049, 4096), "F16") for i in range(16)}
    embeddings |= {f"depformer_emb.{i}.weight": ((2049, 1024), "F16") for i in range(15)}
    embeddings |= {f"linears.{i}.weight": ((2048, 1024), "F16") for i in range(16)}
    return {
        "temporal.safetensors": temporal,
        "depformer.safetensors": depformer,
        "embeddings.safetensors": embeddings,
    }


def config_7b_quantized(bits: int):
    config = config_7b()
    config.quantization = QuantizationConfig(bits=bits, group_size=64)
    return config


@pytest.mark.parametrize("bits", [4, 8])
def test_expected_layout_is_spec_3a(bits):
    expected = expected_layout(config_7b_quantized(bits), CONVERTED)
    got = {
        file: {key: (spec.shape, spec.dtype) for key, spec in specs.items()}
        for file, specs in expected.items()
    }
    assert got == spec_3a(bits)


@pytest.mark.parametrize("bits", [4, 8])
def test_full_size_model_parameters_match_the_layout_lazily(bits):
    config = config_7b_quantized(bits)
    before = mx.get_active_memory()
    lm = LM(config.lm)
    quantize_lm(lm, config.quantization)
    params = {name: tuple(arr.shape) for name, arr in tree_flatten(lm.parameters())}
    expected = {
        spec.target: spec.shape
        for specs in expected_layout(config, CONVERTED).values()
        for spec in specs.values()
    }
    assert params == expected
    assert isinstance(lm.transformer.layers[31].gating.linear_out, nn.QuantizedLinear)
    assert mx.get_active_memory() - before < 64 * 1024 * 1024  # nothing was materialised


def test_original_layout_keys_are_pytorch_names():
    (file, specs), *rest = expected_layout(config_7b(), ORIGINAL).items()
    assert file == "model.safetensors" and not rest
    assert specs["transformer.layers.0.self_attn.in_proj_weight"].shape == (12288, 4096)
    assert specs["transformer.layers.31.self_attn.out_proj.weight"].shape == (4096, 4096)
    assert specs["depformer.layers.5.self_attn.in_proj_weight"].shape == (49152, 1024)
    assert specs["depformer.layers.0.gating.15.linear_in.weight"].shape == (5632, 1024)
    assert specs["depformer_in.15.weight"].shape == (1024, 4096)
    assert specs["out_norm.alpha"].shape == (1, 1, 4096)
    assert {spec.dtype for spec in specs.values()} == {"BF16"}
    assert len(specs) == 32 * 6 + 1 + 16 + 6 * (2 + 32 + 2) + 1 + 16 + 1 + 1 + 15 + 16
