"""Random Mimi weights in the checkpoint's PyTorch names and layouts, for tests and benchmarks.

Scales keep activations of order one through the network, give the transformers a real share
of the signal (layer scales of about 0.2, not the trained 0.01) and size the codebooks like the
latents they quantize, so that codes depend on the audio.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np

from ..config import MimiConfig
from .weights import checkpoint_spec, codebook_keys

CODEBOOK_STD = 0.5  # about the spread of the projected latents of speech at these scales


def _draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    def normal(std: float) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    if name.endswith("_initialized"):
        return np.ones(shape, np.float32)
    if name.endswith("cluster_usage"):
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if name.endswith((".bias",)) and "norm" not in name:
        return normal(0.01)
    if ".norm" in name:
        return (1.0 if name.endswith("weight") else 0.0) + normal(0.1)
    if name.endswith(".scale"):
        return rng.uniform(0.1, 0.3, shape).astype(np.float32)
    if "upsample" in name:
        return normal(1 / np.sqrt(2))
    if "convtr" in name:  # [in, out, k]: each output sample sums two taps of every input channel
        return normal(1 / np.sqrt(2 * shape[0]))
    if len(shape) == 3:  # conv [out, in, k] and 1x1 projections
        return normal(1 / np.sqrt(shape[1] * shape[2]))
    return normal(1 / np.sqrt(shape[1]))  # linear [out, in]


def random_mimi_weights(cfg: MimiConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor of a Mimi checkpoint for `cfg` (all `n_q` codebooks), random, float32."""
    rng = np.random.default_rng(seed)
    required, optional = checkpoint_spec(cfg)
    out = {name: _draw(rng, name, shape) for name, shape in {**required, **optional}.items()}
    for i in range(cfg.n_q):
        total, usage, _ = codebook_keys(i)
        centroids = rng.standard_normal(out[total].shape, dtype=np.float32) * CODEBOOK_STD
        out[total] = centroids * out[usage][:, None]  # EMA sum = centroid * usage
    return out


def save_weights(path: str | os.PathLike, weights: dict[str, np.ndarray]) -> None:
    """Writes weights as a safetensors file (what `MimiCodec.from_file` reads)."""
    mx.save_safetensors(str(path), {k: mx.array(v) for k, v in weights.items()})
