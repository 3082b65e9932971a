"""The numerical reference for Mimi: PyPI `moshi`'s PyTorch MimiModel on the same weights (tests only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from moshi.models import loaders

from model.config import MimiConfig


def moshi_mimi_config(cfg: MimiConfig) -> dict:
    """The `mimi_config` dict moshi's `get_mimi` takes, for a MimiConfig."""
    d = cfg.dimension
    seanet = {
        "channels": cfg.channels,
        "dimension": d,
        "causal": True,
        "n_filters": cfg.n_filters,
        "n_residual_layers": cfg.n_residual_layers,
        "activation": "ELU",
        "compress": cfg.compress,
        "dilation_base": cfg.dilation_base,
        "disable_norm_outer_blocks": 0,
        "kernel_size": cfg.kernel_size,
        "residual_kernel_size": cfg.residual_kernel_size,
        "last_kernel_size": cfg.last_kernel_size,
        "norm": "none",
        "pad_mode": "constant",
        "ratios": list(cfg.ratios),
        "true_skip": True,
    }
    quantizer = {
        "dimension": cfg.codebook_dim,
        "n_q": cfg.n_q,
        "bins": cfg.codebook_size,
        "input_dimension": d,
        "output_dimension": d,
    }
    transformer = {
        "d_model": d,
        "num_heads": cfg.num_heads,
        "num_layers": cfg.num_layers,
        "causal": True,
        "layer_scale": cfg.layer_scale,
        "context": cfg.context,
        "conv_layout": True,
        "max_period": cfg.max_period,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "dim_feedforward": cfg.dim_feedforward,
        "input_dimension": d,
        "output_dimensions": [d],
    }
    return {
        "sample_rate": cfg.sample_rate,
        "channels": cfg.channels,
        "frame_rate": cfg.frame_rate,
        "seanet": seanet,
        "quantizer": quantizer,
        "transformer": transformer,
    }


def moshi_mimi(cfg: MimiConfig, weights_file: Path, device: str = "cpu"):
    """moshi's MimiModel loaded from a safetensors file the way moshi loads the released one."""
    extra = None if cfg == MimiConfig() else moshi_mimi_config(cfg)
    return loaders.get_mimi(weights_file, extra, device=device, num_codebooks=cfg.num_codebooks)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Frame-sized work is faster on one thread, and spinning OpenMP threads stall a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def stream_encode(mimi, pcm: np.ndarray) -> np.ndarray:
    """Frame by frame with `streaming(1)`: codes [num_codebooks, n]."""
    frame = mimi.frame_size
    x = torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32))
    out = []
    with mimi.streaming(1), _one_thread():
        for start in range(0, len(pcm) - frame + 1, frame):
            out.append(mimi.encode(x[None, None, start : start + frame])[0, :, 0])
    return torch.stack(out, dim=1).numpy().astype(np.int32)


@torch.no_grad()
def stream_decode(mimi, codes: np.ndarray) -> np.ndarray:
    """Frame by frame with `streaming(1)`: pcm [n * frame_size]."""
    c = torch.from_numpy(codes.astype(np.int64))
    out = []
    with mimi.streaming(1), _one_thread():
        for i in range(c.shape[1]):
            out.append(mimi.decode(c[None, :, i : i + 1])[0, 0])
    return torch.cat(out).numpy()


# (test, ties [(frame, codebook, relative gap)], codes compared), printed at the end of the run.
TIE_REPORT: list[tuple[str, list[tuple[int, int, float]], int]] = []
# (test, decoded audio's SNR in dB against the reference), printed at the end of the run.
SNR_REPORT: list[tuple[str, float]] = []

AUDIO_DIR = Path(__file__).parent / "data" / "audio"


def load_test_audio(name: str) -> np.ndarray:
    """A test WAV as float32 mono at 24 kHz (channel 0, resampled with soxr where needed)."""
    import wave

    import soxr

    with wave.open(str(AUDIO_DIR / name)) as w:
        channels, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    pcm = data.reshape(-1, channels)[:, 0].astype(np.float32) / 32768
    if rate != 24000:
        pcm = soxr.resample(pcm, rate, 24000).astype(np.float32)
    return pcm


@torch.no_grad()
def stream_encode_latents(mimi, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`stream_encode`, also returning each frame's quantizer input: (codes [K, n], latents [n, D])."""
    quantizer = mimi.quantizer
    seen: list[torch.Tensor] = []
    original = quantizer.encode

    def recording(x: torch.Tensor) -> torch.Tensor:
        seen.append(x[0, :, 0].clone())
        return original(x)

    quantizer.encode = recording
    try:
        codes = stream_encode(mimi, pcm)
    finally:
        del quantizer.encode  # back to the class's method
    return codes, torch.stack(seen).numpy()


@torch.no_grad()
def codebook_distances(mimi, latent: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """The reference's Euclidean distances (float64) from codebook k's input to all its entries.

    `latent` is one frame's quantizer input [D]; `codes` the frame's codes, of which only those
    before k are used (they fix the residual codebook k quantizes). Codebook 0 is the semantic
    one; the acoustic ones quantize in residual after their own input projection, as moshi's
    `SplitResidualVectorQuantizer.encode` does.
    """
    quantizer = mimi.quantizer
    first, rest = quantizer.rvq_first, quantizer.rvq_rest
    x = torch.from_numpy(latent).double()[None, :, None]
    if k == 0:
        rvq, layers = first, first.vq.layers[:1]
    else:
        rvq, layers = rest, rest.vq.layers[:k]
    residual = rvq.input_proj.double()(x)[0, :, 0]
    rvq.input_proj.float()
    for j, layer in enumerate(layers[:-1]):
        residual = residual - layer._codebook.embedding.double()[int(codes[1 + j])]
    table = layers[-1]._codebook.embedding.double()
    return torch.linalg.vector_norm(table - residual[None], dim=-1).numpy()
