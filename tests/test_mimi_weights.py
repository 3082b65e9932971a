"""Mimi weight files: the expected layout is moshi's, and bad files end in one clear sentence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from moshi.models import loaders

from model.config import MimiConfig, mimi_tiny
from model.errors import CheckpointError, ModelNotFoundError
from model.mimi import MimiCodec, checkpoint_spec, random_mimi_weights, save_weights
from tests.mimi_reference import moshi_mimi, moshi_mimi_config, stream_encode

# How the released file names the attention projections that moshi's state_dict() splits per step.
_RELEASED = {"self_attn.in_projs.0.weight": "self_attn.in_proj_weight"}
_RELEASED |= {"self_attn.out_projs.0.weight": "self_attn.out_proj.weight"}


def _released_name(name: str) -> str:
    for split, packed in _RELEASED.items():
        name = name.replace(split, packed)
    return name


@pytest.mark.parametrize("full", [False, True], ids=["tiny", "full"])
def test_spec_is_the_moshi_state_dict(full):
    """Names and shapes expected = moshi's MimiModel state dict, all n_q codebooks included."""
    cfg = MimiConfig() if full else mimi_tiny()
    mimi = loaders.get_mimi(None, None if full else moshi_mimi_config(cfg), num_codebooks=8)
    want = {_released_name(k): tuple(v.shape) for k, v in mimi.state_dict().items()}
    required, optional = checkpoint_spec(cfg)
    assert {**required, **optional} == want
    assert len(optional) == 3 * (cfg.n_q - cfg.num_codebooks)


@pytest.fixture(scope="module")
def tiny_weights() -> dict[str, np.ndarray]:
    return random_mimi_weights(mimi_tiny(), seed=3)


def _write(path: Path, weights: dict[str, np.ndarray]) -> Path:
    save_weights(path, weights)
    return path


def _load_error(path: Path, cls: type[Exception] = CheckpointError) -> str:
    with pytest.raises(cls) as info:
        MimiCodec.from_file(path, mimi_tiny())
    message = str(info.value)
    assert "\n" not in message and message.endswith((".", ")."))
    assert str(path) in message
    return message


def test_missing_tensor(tmp_path, tiny_weights):
    weights = dict(tiny_weights)
    del weights["decoder.model.14.conv.conv.bias"]
    message = _load_error(_write(tmp_path / "mimi.safetensors", weights))
    assert "'decoder.model.14.conv.conv.bias' is missing (expected shape [1])" in message


def test_missing_codebook_in_use(tmp_path, tiny_weights):
    weights = dict(tiny_weights)
    del weights["quantizer.rvq_rest.vq.layers.6._codebook.embedding_sum"]
    message = _load_error(_write(tmp_path / "mimi.safetensors", weights))
    assert "quantizer.rvq_rest.vq.layers.6._codebook.embedding_sum" in message
    assert "missing" in message


def test_unused_codebooks_are_optional(tmp_path, tiny_weights):
    """A file with only the 8 codebooks in use loads and codes as the full file does."""
    cfg = mimi_tiny()
    pattern = re.compile(r"rvq_rest\.vq\.layers\.(\d+)\.")
    kept = {
        k: v
        for k, v in tiny_weights.items()
        if not (m := pattern.search(k)) or int(m.group(1)) < cfg.num_codebooks - 1
    }
    assert len(kept) < len(tiny_weights)
    small = MimiCodec.from_file(_write(tmp_path / "small.safetensors", kept), cfg)
    whole = MimiCodec.from_file(_write(tmp_path / "whole.safetensors", tiny_weights), cfg)
    pcm = (0.1 * np.random.default_rng(0).standard_normal(3 * 1920)).astype(np.float32)
    assert np.array_equal(small.encode_numpy(pcm), whole.encode_numpy(pcm))


def test_unexpected_tensor(tmp_path, tiny_weights):
    weights = dict(tiny_weights)
    weights["encoder.model.99.conv.conv.weight"] = np.zeros((4, 4, 3), np.float32)
    message = _load_error(_write(tmp_path / "mimi.safetensors", weights))
    assert "unexpected tensor 'encoder.model.99.conv.conv.weight'" in message


def test_codebook_beyond_n_q_is_unexpected(tmp_path, tiny_weights):
    weights = dict(tiny_weights)
    extra = "quantizer.rvq_rest.vq.layers.9._codebook.cluster_usage"
    weights[extra] = np.ones(2048, np.float32)
    assert extra in _load_error(_write(tmp_path / "mimi.safetensors", weights))


def test_wrong_shape(tmp_path, tiny_weights):
    weights = dict(tiny_weights)
    weights["quantizer.rvq_first.input_proj.weight"] = np.zeros((8, 32, 1), np.float32)
    message = _load_error(_write(tmp_path / "mimi.safetensors", weights))
    assert (
        "'quantizer.rvq_first.input_proj.weight' has shape [8, 32, 1] but this Mimi config "
        "expects [16, 32, 1]" in message
    )


def test_full_size_file_for_a_small_config(tmp_path):
    """A checkpoint of another size is named as such (the first differing tensor)."""
    weights = {k: np.zeros(v, np.float32) for k, v in checkpoint_spec(MimiConfig())[0].items()}
    message = _load_error(_write(tmp_path / "mimi.safetensors", weights))
    assert "has shape" in message and "expects" in message


def test_wrong_dtype(tmp_path, tiny_weights):
    weights = dict(tiny_weights)
    weights["encoder.model.0.conv.conv.bias"] = np.zeros(4, np.int32)
    message = _load_error(_write(tmp_path / "mimi.safetensors", weights))
    assert "'encoder.model.0.conv.conv.bias' is int32; expected float32" in message


def test_truncated_file(tmp_path, tiny_weights):
    path = _write(tmp_path / "mimi.safetensors", tiny_weights)
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    message = _load_error(path)
    assert "is truncated" in message and f"the file has {len(data) - 1000}" in message


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "mimi.safetensors"
    path.write_text("this is a text file, not weights\n" * 10)
    assert "is not a safetensors file" in _load_error(path)
    path.write_bytes(b"\x05\x00")
    assert "is not a safetensors file" in _load_error(path)
    header = b"{not json"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    assert "header is not JSON" in _load_error(path)


def test_inconsistent_header(tmp_path):
    header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "mimi.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    assert "'a' holds 8 bytes, not 16" in _load_error(path)


def test_missing_file(tmp_path):
    message = _load_error(tmp_path / "nowhere" / "mimi.safetensors", ModelNotFoundError)
    assert "does not exist" in message


def test_half_precision_file_loads(tmp_path, tiny_weights):
    """float16 / bfloat16 files are accepted (computation stays float32)."""
    halves = {k: mx.array(v).astype(mx.bfloat16) for k, v in tiny_weights.items()}
    path = tmp_path / "mimi.safetensors"
    mx.save_safetensors(str(path), halves)
    codec = MimiCodec.from_file(path, mimi_tiny())
    assert codec.model.encoder.layers[0].weight.dtype == mx.float32
    pcm = (0.1 * np.random.default_rng(0).standard_normal(2 * 1920)).astype(np.float32)
    assert codec.encode_numpy(pcm).shape == (8, 2)


def test_moshi_state_dict_saved_as_is_loads(tmp_path, tiny_weights):
    """moshi's own state_dict() names (in_projs.0 / out_projs.0) load, and code the same."""
    cfg = mimi_tiny()
    released = _write(tmp_path / "released.safetensors", tiny_weights)
    reference = moshi_mimi(cfg, released)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    assert any("in_projs.0" in k for k in state)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "state_dict.safetensors"))
    codec = MimiCodec.from_file(tmp_path / "state_dict.safetensors", cfg)
    pcm = (0.1 * np.random.default_rng(0).standard_normal(4 * 1920)).astype(np.float32)
    assert np.array_equal(codec.encode_numpy(pcm), stream_encode(reference, pcm))


def test_in_memory_weights_are_validated(tiny_weights):
    weights = dict(tiny_weights)
    weights["encoder.model.0.conv.conv.bias"] = np.zeros(4, np.int64)
    with pytest.raises(CheckpointError, match="'encoder.model.0.conv.conv.bias' is int64"):
        MimiCodec(mimi_tiny()).load_weights(weights)
