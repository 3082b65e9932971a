"""Test helpers: complete small PersonaPlex checkpoints in the real on-disk layouts."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from model.checkpoints.layout import CONVERTED
from model.checkpoints.random_weights import random_weights
from model.checkpoints.write import layout_tensors, write_checkpoint
from model.config import PersonaPlexConfig, QuantizationConfig, mimi_tiny, tiny
from model.mimi import random_mimi_weights, save_weights
from tests.textdata import train_tiny_spm

SMALL_VOICES = ("NATF2", "VARF2", "NATM0")


def small_config(
    *, context: int = 3000, bits: int | None = None, d_model: int = 64
) -> PersonaPlexConfig:
    cfg = tiny(d_model=d_model, context=context, text_card=400, mimi=mimi_tiny())
    if bits:
        cfg.quantization = QuantizationConfig(bits=bits, group_size=32 if d_model % 64 else 64)
    return cfg


def write_small_checkpoint(
    folder: Path,
    *,
    config: PersonaPlexConfig | None = None,
    seed: int = 0,
    voices: tuple[str, ...] = SMALL_VOICES,
    voice_frames: int = 5,
) -> Path:
    """config.json, the three LM files, mimi.safetensors, a tokenizer and voice files."""
    config = config or small_config()
    config.voices = tuple(voices)
    folder.mkdir(parents=True, exist_ok=True)
    weights = random_weights(config, seed=seed)
    write_checkpoint(folder, config, layout_tensors(weights, config, CONVERTED))
    save_weights(folder / "mimi.safetensors", random_mimi_weights(config.mimi, seed=seed))
    train_tiny_spm(folder / "tokenizer_spm_32k_3.model")
    (folder / "voices").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    d = config.lm.temporal.d_model
    for i, name in enumerate(voices):
        emb = rng.standard_normal((voice_frames + i, 1, 1, d)).astype(np.float16)
        cache = rng.integers(0, config.lm.card, (1, config.lm.n_streams, config.lm.max_delay + 3))
        cache[0, 0] = rng.integers(0, config.lm.text_card, cache.shape[-1])
        mx.save_safetensors(
            str(folder / "voices" / f"{name}.safetensors"),
            {"embeddings": mx.array(emb), "cache": mx.array(cache.astype(np.float32))},
        )
    json.loads((folder / "config.json").read_text())  # written and parseable
    return folder
