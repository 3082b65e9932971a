"""One Mimi encode serves both models: coding 32 codebooks gives PersonaPlex's 8 unchanged.

Mimi's quantizer is residual: codebook 0 (semantic) codes its own projection of the latent, and
acoustic codebook i codes what codebooks 1..i-1 left of the acoustic projection. Code i depends
only on the latent and codes 0..i-1, never on later codebooks, so asking for 32 codebooks instead
of 8 appends 24 codes and leaves the first 8 as they were. Checked here frame by frame in
streaming, on speech, for our MLX Mimi (tiny and published structure) and for moshi's PyTorch one.
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
import torch

from model.config import MimiConfig, mimi_tiny
from model.mimi import MimiCodec, random_mimi_weights, save_weights
from model.mimi.quantizer import SplitResidualQuantizer
from tests.mimi_reference import load_test_audio, moshi_mimi, stream_encode


def stream(codec: MimiCodec, pcm: np.ndarray) -> np.ndarray:
    """Codes [n, num_codebooks], one streaming encode_step per 1920-sample frame."""
    out = []
    for start in range(0, len(pcm) - codec.frame_size + 1, codec.frame_size):
        codes = codec.encode_step(mx.array(pcm[start : start + codec.frame_size]))
        mx.eval(codes, codec.state_arrays())
        out.append(np.array(codes))
    return np.array(out)


def tiny32() -> MimiConfig:
    return replace(mimi_tiny(), n_q=32)


def test_first_8_of_32_codebooks_are_the_8_codebooks() -> None:
    cfg = tiny32()
    weights = random_mimi_weights(cfg, seed=3)
    pcm = load_test_audio("conversation.wav")  # speech and silences, 248 frames
    eight = MimiCodec(replace(cfg, num_codebooks=8))
    eight.load_weights(weights)
    all32 = MimiCodec(replace(cfg, num_codebooks=32))
    all32.load_weights(weights)
    codes8, codes32 = stream(eight, pcm), stream(all32, pcm)
    assert codes8.shape == (len(pcm) // 1920, 8) and codes32.shape == (len(pcm) // 1920, 32)
    assert np.array_equal(codes32[:, :8], codes8)
    # the clip exercises every codebook, so equality is not a matter of constant codes
    assert all(len(np.unique(codes32[:, i])) >= 3 for i in range(32))
    # and the 24 extra codebooks are no copy of the first ones
    assert not np.array_equal(codes32[:, 8:16], codes32[:, :8])


@pytest.mark.slow
def test_published_quantizer_size() -> None:
    """The published quantizer (512-wide latents, 256-wide codebooks of 2048 entries): the rest
    of Mimi does not depend on the number of codebooks, so the quantizer alone decides."""
    rng = np.random.default_rng(5)
    cfg = MimiConfig()
    d, cb = cfg.dimension, cfg.codebook_dim
    arrays = {
        "semantic_input_proj": rng.standard_normal((cb, d)) / np.sqrt(d),
        "acoustic_input_proj": rng.standard_normal((cb, d)) / np.sqrt(d),
        "codebooks": rng.standard_normal((32, cfg.codebook_size, cb)) * 0.5,
    }
    quantizers = []
    for n in (8, 32):
        q = SplitResidualQuantizer(replace(cfg, num_codebooks=n))
        for name, value in arrays.items():
            setattr(q, name, mx.array(value[:n] if name == "codebooks" else value, mx.float32))
        q.prepare()
        quantizers.append(q)
    latents = mx.array(rng.standard_normal((1, 200, d)).astype(np.float32))
    codes8, codes32 = (np.array(q.encode(latents))[0] for q in quantizers)
    assert codes8.shape == (200, 8) and codes32.shape == (200, 32)
    assert np.array_equal(codes32[:, :8], codes8)
    assert all(len(np.unique(codes32[:, i])) >= 20 for i in range(32))


@torch.no_grad()
def test_moshi_codes_the_same_way(tmp_path) -> None:
    cfg = tiny32()
    path = tmp_path / "mimi.safetensors"
    save_weights(path, random_mimi_weights(cfg, seed=4))
    pcm = load_test_audio("shipping.wav")
    codes8 = stream_encode(moshi_mimi(replace(cfg, num_codebooks=8), path), pcm)
    codes32 = stream_encode(moshi_mimi(replace(cfg, num_codebooks=32), path), pcm)
    assert codes8.shape[0] == 8 and codes32.shape[0] == 32
    assert np.array_equal(codes32[:8], codes8)
    assert len(np.unique(codes32[31])) >= 3
