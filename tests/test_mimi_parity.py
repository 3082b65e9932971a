"""Mimi in MLX against PyPI moshi's PyTorch Mimi (the reference) on the same random weights.

Both load one safetensors file in the released layout. The reference runs as moshi's live
server does: `with mimi.streaming(1)`, one 1920-sample frame per `encode`, one code frame per
`decode`. The tiny config runs every test WAV whole (the 44.1 kHz stereo one as channel 0
resampled to 24 kHz with soxr); the full-size config, slow on a CPU, runs two short clips; a
variant of the tiny config (two dilated residual layers, other ratios and kernels, 4 codebooks)
runs one clip.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np
import pytest

from model.config import MimiConfig, mimi_tiny
from model.mimi import MimiCodec, random_mimi_weights, save_weights
from tests.mimi_reference import load_test_audio, moshi_mimi, stream_decode, stream_encode

TINY_CLIPS = [
    ("shipping.wav", None),
    ("weather.wav", None),
    ("greeting.wav", None),
    ("conversation.wav", None),
    ("shipping_44k_stereo.wav", None),
]
FULL_CLIPS = [("weather.wav", 24), ("greeting.wav", 16)]  # (file, frames; None = whole file)
CASES = [("tiny", *c) for c in TINY_CLIPS]
CASES += [pytest.param("full", *c, marks=pytest.mark.slow) for c in FULL_CLIPS]
CASES += [("variant", "greeting.wav", None)]


def config(name: str) -> MimiConfig:
    if name == "full":
        return MimiConfig()
    if name == "tiny":
        return mimi_tiny()
    return replace(
        mimi_tiny(),
        ratios=(6, 4, 8, 5),
        kernel_size=5,
        residual_kernel_size=5,
        last_kernel_size=1,
        n_residual_layers=2,
        compress=4,
        n_filters=8,
        context=10,
        num_codebooks=4,
        n_q=6,
    )


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - test) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(noise, 1e-30)))


@dataclass
class Run:
    ref_codes: np.ndarray  # reference streaming encode [8, n]
    ref_pcm: np.ndarray  # reference streaming decode of ref_codes
    codes: np.ndarray  # MimiCodec.encode_step frame by frame
    codes_batch: np.ndarray  # MimiCodec.encode of the whole clip
    pcm: np.ndarray  # MimiCodec.decode_step of ref_codes, frame by frame
    pcm_batch: np.ndarray  # MimiCodec.decode of ref_codes


class Runs:
    """Runs both implementations once per (config, clip) and keeps the results for all tests."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self._pairs: dict[str, tuple[MimiCodec, object]] = {}
        self._runs: dict[tuple, Run] = {}

    def pair(self, name: str) -> tuple[MimiCodec, object]:
        if name not in self._pairs:
            cfg = config(name)
            path = self._tmp.mktemp(name) / "mimi.safetensors"
            save_weights(path, random_mimi_weights(cfg, seed=1))
            self._pairs[name] = (MimiCodec.from_file(path, cfg), moshi_mimi(cfg, path))
        return self._pairs[name]

    def get(self, cfg_name: str, name: str, frames: int | None) -> Run:
        key = (cfg_name, name, frames)
        if key not in self._runs:
            codec, reference = self.pair(cfg_name)
            pcm = load_test_audio(name)
            n = len(pcm) // codec.frame_size if frames is None else frames
            pcm = pcm[: n * codec.frame_size]
            ref_codes = stream_encode(reference, pcm)
            ref_pcm = stream_decode(reference, ref_codes)
            codec.reset()
            codes, out = [], []
            for i in range(n):
                codes.append(
                    codec.encode_step(mx.array(pcm[i * codec.frame_size :][: codec.frame_size]))
                )
                out.append(codec.decode_step(mx.array(ref_codes[:, i])))
                mx.eval(codes[-1], out[-1])
            self._runs[key] = Run(
                ref_codes=ref_codes,
                ref_pcm=ref_pcm,
                codes=np.stack([np.array(c) for c in codes], axis=1),
                codes_batch=codec.encode_numpy(pcm),
                pcm=np.concatenate([np.array(o) for o in out]),
                pcm_batch=codec.decode_numpy(ref_codes),
            )
        return self._runs[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory)


@pytest.mark.parametrize("cfg_name,name,frames", CASES)
def test_codes_match_reference_streaming(runs, cfg_name, name, frames):
    run = runs.get(cfg_name, name, frames)
    n_q = config(cfg_name).num_codebooks
    assert run.codes.shape == run.ref_codes.shape == (n_q, run.ref_codes.shape[1])
    # The clip must exercise the codebooks, or agreement would mean little.
    assert len(np.unique(run.ref_codes[0])) >= 3 and len(np.unique(run.ref_codes[1:])) >= 10
    assert np.array_equal(run.codes[0], run.ref_codes[0]), "semantic codebook differs"
    agree = np.mean(run.codes == run.ref_codes)
    assert agree >= 0.99, f"only {agree:.2%} of codes equal the reference"


@pytest.mark.parametrize("cfg_name,name,frames", CASES)
def test_decode_matches_reference_streaming(runs, cfg_name, name, frames):
    run = runs.get(cfg_name, name, frames)
    assert run.pcm.shape == run.ref_pcm.shape == (run.ref_codes.shape[1] * 1920,)  # 80 ms frames
    assert np.sqrt(np.mean(run.ref_pcm**2)) > 1e-3  # the reference decodes to real signal
    assert snr_db(run.ref_pcm, run.pcm) >= 40


@pytest.mark.parametrize("cfg_name,name,frames", CASES)
def test_streaming_equals_batch(runs, cfg_name, name, frames):
    run = runs.get(cfg_name, name, frames)
    assert np.mean(run.codes_batch == run.codes) >= 0.99
    assert np.array_equal(run.codes_batch[0], run.codes[0])
    assert snr_db(run.pcm, run.pcm_batch) >= 80


def test_full_size_config_is_moshi_default():
    """The full-size MimiConfig describes exactly the Mimi that `get_mimi(None)` builds."""
    from moshi.models import loaders

    from tests.mimi_reference import moshi_mimi_config

    want = loaders._mimi_config
    got = moshi_mimi_config(MimiConfig())
    assert got["seanet"] == {k: v for k, v in want["seanet"].items() if k in got["seanet"]}
    assert set(want["seanet"]) == set(got["seanet"])
    assert got["transformer"] == want["transformer"]
    assert got["quantizer"] == want["quantizer"]
    assert {k: got[k] for k in ("sample_rate", "channels", "frame_rate")} == {
        k: want[k] for k in ("sample_rate", "channels", "frame_rate")
    }
