"""Test helpers: a small PersonaPlex checkpoint and a tiny Kyutai STT repository that share one
Mimi (as the published ones do: the STT's Mimi file stores the same network and 32 codebooks,
the first of which are PersonaPlex's)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from model.mimi import random_mimi_weights, save_weights
from model.mimi.weights import codebook_keys
from tests.checkpoints import write_small_checkpoint
from tests.stt_reference import MIMI_FILE, tiny_mimi, write_tiny_stt_repo


def write_pair(folder: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """(PersonaPlex checkpoint, STT repo) under folder, the STT's Mimi being PersonaPlex's with
    the codebooks it lacks appended."""
    persona = write_small_checkpoint(folder / "persona", seed=seed)
    stt = write_tiny_stt_repo(folder / "stt", seed=seed + 1)
    ours = {k: np.array(v) for k, v in mx.load(str(persona / "mimi.safetensors")).items()}
    extra = random_mimi_weights(tiny_mimi(32), seed=seed + 2)
    for i in range(32):
        for key in codebook_keys(i):
            ours.setdefault(key, extra[key])
    save_weights(stt / MIMI_FILE, ours)
    return persona, stt
