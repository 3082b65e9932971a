"""Random weights in both layouts, the checkpoint writer, and the configs the loader reads."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from model.checkpoints.layout import CONVERTED, ORIGINAL, expected_layout
from model.checkpoints.load import load_lm
from model.checkpoints.random_weights import random_lm, random_tensors, random_weights
from model.checkpoints.write import CODE_TO_DTYPE, layout_tensors, write_checkpoint
from model.config import PersonaPlexConfig, SamplingConfig, config_7b
from model.errors import CheckpointError
from tests.lm_helpers import moshi_kwargs, random_columns, small_config

QUANTIZED = small_config(d_model=256, dep_dim=64, dep_dim_feedforward=192, bits=4)


@pytest.mark.parametrize("layout", [CONVERTED, ORIGINAL])
@pytest.mark.parametrize("config", [small_config(), QUANTIZED], ids=["float", "4bit"])
def test_random_tensors_follow_the_layout(config, layout):
    tensors = random_tensors(config, layout, seed=1)
    expected = expected_layout(config, layout)
    assert tensors.keys() == expected.keys()
    for file, specs in expected.items():
        assert tensors[file].keys() == specs.keys()
        for key, spec in specs.items():
            assert tensors[file][key].shape == spec.shape
            assert tensors[file][key].dtype == CODE_TO_DTYPE[spec.dtype]


def test_random_quantized_lm_has_moshi_scale_weights_and_runs():
    lm = random_lm(QUANTIZED, dtype=mx.float32, seed=2)
    proj = lm.transformer.layers[0].gating.linear_in
    w = mx.dequantize(proj.weight, proj.scales, proj.biases, 64, 4)
    std = float(mx.std(w))
    assert 0.5 / 16 < std < 2 / 16  # about 1/sqrt(fan-in 256)
    assert abs(float(mx.mean(w))) < 0.1 / 16
    logits, _ = lm.forward(lm.embed(mx.array(random_columns(QUANTIZED, 4))), lm.make_cache())
    assert np.isfinite(np.array(logits)).all()


def test_written_random_checkpoint_loads_back(tmp_path):
    write_checkpoint(tmp_path, QUANTIZED, random_tensors(QUANTIZED, seed=3))
    lm, config = load_lm(tmp_path, dtype=mx.float16)
    stored = mx.load(str(tmp_path / "temporal.safetensors"))
    proj = lm.transformer.layers[1].self_attn.in_proj
    assert mx.array_equal(proj.weight, stored["layers.1.self_attn.in_proj_weight"])
    assert mx.array_equal(proj.scales, stored["layers.1.self_attn.in_proj_scales"])
    assert lm.out_norm.alpha.dtype == mx.float32 and proj.scales.dtype == mx.float16
    assert config.quantization == QUANTIZED.quantization


def test_original_layout_with_moshi_config_json(tmp_path):
    config = small_config()
    weights = random_weights(config, seed=4)
    original, converted = tmp_path / "original", tmp_path / "converted"
    write_checkpoint(
        original, config, layout_tensors(weights, config, ORIGINAL), write_config=False
    )
    (original / "config.json").write_text(json.dumps(moshi_kwargs(config)))
    write_checkpoint(converted, config, layout_tensors(weights, config, CONVERTED))

    lm_a, config_a = load_lm(original, dtype=mx.float32)
    lm_b, _ = load_lm(converted, dtype=mx.float32)
    assert config_a.lm == config.lm
    cols = mx.array(random_columns(config, 5))
    logits_a, _ = lm_a.forward(lm_a.embed(cols), lm_a.make_cache())
    logits_b, _ = lm_b.forward(lm_b.embed(cols), lm_b.make_cache())
    # bfloat16 vs float16 storage of the same weights: close, not equal.
    np.testing.assert_allclose(np.array(logits_a), np.array(logits_b), atol=0.05)


def test_original_layout_without_config_is_the_7b(tmp_path):
    config = small_config()
    tensors = layout_tensors(random_weights(config), config, ORIGINAL)
    write_checkpoint(tmp_path, config, tensors, write_config=False)
    expected = r"has no tensor 'transformer.layers.2.self_attn.in_proj_weight' \(and 323 more\)"
    with pytest.raises(CheckpointError, match=expected):
        load_lm(tmp_path)


@pytest.mark.parametrize("config", [small_config(bits=8), config_7b()], ids=["small", "7b"])
def test_config_json_round_trip(config):
    assert PersonaPlexConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_json_keeps_its_sampling_keys():
    config = small_config()
    config.sampling = SamplingConfig(audio_temperature=0.5, audio_top_k=9, text_temperature=0.0)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["sampling"] == {
        "audio_temp": 0.5,
        "audio_top_k": 9,
        "text_temp": 0.0,
        "text_top_k": 25,
    }
    assert PersonaPlexConfig.from_dict(data).sampling == config.sampling
