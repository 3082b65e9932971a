"""A full model folder with a missing or broken file, loaded through `model.load` (and a session):
Mimi, the tokenizer and the voices. (The LM files: test_checkpoint_errors.py.) Each is one
CheckpointError sentence that names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from model import CheckpointError, SessionSettings, load
from tests.checkpoints import write_small_checkpoint


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_small_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def folder(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "model"))


def failure(folder: Path, voice: str = "NATF2") -> str:
    """The sentence `load(folder)` then `session(voice)` fails with."""
    with pytest.raises(CheckpointError) as info:
        load(folder, dtype=mx.float32).session(SessionSettings(voice))
    message = str(info.value)
    assert "\n" not in message and message.endswith("."), message
    return message


def save_voice(path: Path, **tensors: np.ndarray) -> None:
    mx.save_safetensors(str(path), {k: mx.array(v) for k, v in tensors.items()})


def test_the_pristine_folder_loads(folder):
    session = load(folder, dtype=mx.float32).session(SessionSettings())
    assert session.step(np.zeros(1920, np.float32)).pcm.shape == (1920,)


def test_missing_mimi(folder):
    (folder / "mimi.safetensors").unlink()
    message = failure(folder)
    assert message.startswith(f"{folder} has no Mimi file (mimi.safetensors or ")


def test_truncated_mimi(folder):
    path = folder / "mimi.safetensors"
    path.write_bytes(path.read_bytes()[:-500])
    assert str(path) in failure(folder) and "truncated" in failure(folder)


def test_mimi_of_another_size(folder):
    config = json.loads((folder / "config.json").read_text())
    config["mimi"]["dimension"] *= 2  # the config no longer matches mimi.safetensors
    (folder / "config.json").write_text(json.dumps(config))
    message = failure(folder)
    assert "mimi.safetensors" in message and "shape" in message


def test_missing_tokenizer(folder):
    (folder / "tokenizer_spm_32k_3.model").unlink()
    assert failure(folder) == (
        f"{folder} has no tokenizer_spm_32k_3.model; the checkpoint is incomplete."
    )


def test_corrupt_tokenizer(folder):
    (folder / "tokenizer_spm_32k_3.model").write_bytes(b"<html>Too Many Requests</html>")
    assert "is not a SentencePiece model" in failure(folder)


def test_voice_file_of_garbage(folder):
    path = folder / "voices" / "NATF2.safetensors"
    path.write_bytes(b"\x00" * 64)
    assert failure(folder).startswith(f"{path} is not a safetensors file (its header is not JSON)")


def test_truncated_voice_file(folder):
    path = folder / "voices" / "NATF2.safetensors"
    path.write_bytes(path.read_bytes()[:-40])
    assert failure(folder).startswith(f"{path} is truncated")


def test_voice_without_embeddings(folder):
    path = folder / "voices" / "NATF2.safetensors"
    save_voice(path, cache=np.zeros((1, 17, 4), np.float32))
    assert failure(folder) == f"{path} has no 'embeddings' tensor."


def test_voice_of_another_model_size(folder):
    path = folder / "voices" / "NATF2.safetensors"
    save_voice(
        path, embeddings=np.zeros((5, 1, 1, 32), np.float16), cache=np.zeros((1, 17, 4), np.float32)
    )
    assert "'embeddings' has shape (5, 1, 1, 32), expected [T, 1, 1, 64]" in failure(folder)


@pytest.mark.parametrize("key", ["embeddings", "cache"])
def test_voice_with_nan(folder, key):
    path = folder / "voices" / "NATF2.safetensors"
    emb = np.zeros((5, 1, 1, 64), np.float16)
    cache = np.zeros((1, 17, 4), np.float32)
    (emb if key == "embeddings" else cache).flat[3] = np.nan
    save_voice(path, embeddings=emb, cache=cache)
    assert failure(folder) == f"{path}: '{key}' holds NaN or infinite values; the file is corrupt."


def test_missing_voices(folder):
    shutil.rmtree(folder / "voices")
    assert failure(folder) == f"The voice file for NATF2 is missing from {folder}."
