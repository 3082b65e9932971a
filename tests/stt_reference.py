"""Test helpers: a tiny random Kyutai STT repository built with PyPI `moshi`'s own classes, in the
real repositories' on-disk layout, and moshi's `LMGen` run on it (the parity oracle).

Layout (as kyutai/stt-1b-en_fr): `config.json` (moshi's LM kwargs at the top level, read by
`moshi.models.loaders.CheckpointInfo`), `model.safetensors` (PyTorch key names, attention as
`in_proj_weight` / `out_proj.weight` as released), `mimi-pytorch-e351c8d8@125.safetensors` and
`tokenizer_en_fr_audio_8000.model`; plus `mimi_config.json`, named by `mimi_config_name`, since
the Mimi is a tiny one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from moshi.models import LMGen, loaders
from moshi.utils.compile import no_compile
from safetensors.torch import save_file

from model.config import MimiConfig, mimi_tiny
from model.mimi import random_mimi_weights, save_weights
from tests.mimi_reference import moshi_mimi_config
from tests.textdata import train_tiny_spm

MIMI_FILE = "mimi-pytorch-e351c8d8@125.safetensors"
TOKENIZER_FILE = "tokenizer_en_fr_audio_8000.model"


def tiny_mimi(n_q: int = 32) -> MimiConfig:
    """The tests' tiny Mimi, storing and coding n_q codebooks."""
    cfg = mimi_tiny()
    cfg.n_q = cfg.num_codebooks = n_q
    return cfg


def tiny_lm_kwargs(
    *, n_q: int = 32, dim: int = 64, context: int = 16, extra_heads: int = 4, text_card: int = 400
) -> dict:
    """moshi `LMModel` kwargs of a tiny STT model (the real one's keys, small sizes)."""
    return {
        "dim": dim,
        "text_card": text_card,
        "existing_text_padding_id": 3,
        "n_q": n_q,
        "dep_q": 0,
        "card": 2048,
        "num_heads": 4,
        "num_layers": 2,
        "hidden_scale": 4.125,
        "causal": True,
        "context": context,
        "max_period": 100000.0,
        "gating": "silu",
        "norm": "rms_norm_f32",
        "positional_embedding": "rope",
        "depformer_dim": 32,
        "depformer_num_heads": 2,
        "depformer_num_layers": 1,
        "depformer_multi_linear": True,
        "depformer_pos_emb": "none",
        "depformer_weights_per_step": True,
        "delays": [0] * (n_q + 1),
        "extra_heads_num_heads": extra_heads,
        "extra_heads_dim": 6,
    }


def released_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """moshi 0.2's state-dict names -> the released files' (`in_proj_weight`, `out_proj.weight`)."""
    out = {}
    for key, value in state.items():
        key = key.replace(".in_projs.0.weight", ".in_proj_weight")
        key = key.replace(".out_projs.0.weight", ".out_proj.weight")
        out[key] = value.contiguous()
    return out


def write_tiny_stt_repo(
    folder: Path, *, seed: int = 0, declare_heads: bool = True, **kwargs: int
) -> Path:
    """A complete tiny STT repository; `declare_heads=False` leaves the extra heads out of
    config.json (they stay in the weights, as in stt-1b-en_fr-candle)."""
    folder.mkdir(parents=True, exist_ok=True)
    lm_kwargs = tiny_lm_kwargs(**kwargs)
    torch.manual_seed(seed)
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, dtype=torch.float32)
    with torch.no_grad():  # norms away from 1 so that their weights matter
        for name, p in lm.named_parameters():
            if name.endswith("alpha"):
                p.mul_(1 + 0.2 * torch.randn_like(p))
    save_file(released_names(lm.state_dict()), str(folder / "model.safetensors"))
    config = dict(lm_kwargs)
    if not declare_heads:
        del config["extra_heads_num_heads"], config["extra_heads_dim"]
    config |= {
        "model_type": "stt",
        "moshi_name": "model.safetensors",
        "mimi_name": MIMI_FILE,
        "tokenizer_name": TOKENIZER_FILE,
        "mimi_config_name": "mimi_config.json",
        "lm_gen_config": {"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50},
        "stt_config": {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    mimi = tiny_mimi(lm_kwargs["n_q"])
    save_weights(folder / MIMI_FILE, random_mimi_weights(mimi, seed=seed))
    (folder / "mimi_config.json").write_text(json.dumps(moshi_mimi_config(mimi), indent=2))
    train_tiny_spm(folder / TOKENIZER_FILE)
    return folder


def checkpoint_info(folder: Path) -> loaders.CheckpointInfo:
    """moshi's own reader of the repository (every file given as a local path)."""
    return loaders.CheckpointInfo.from_hf_repo(
        "kyutai/stt-1b-en_fr",  # never contacted: every file is given
        moshi_weights=folder / "model.safetensors",
        mimi_weights=folder / MIMI_FILE,
        tokenizer=folder / TOKENIZER_FILE,
        config_path=folder / "config.json",
        mimi_config_path=folder / "mimi_config.json",
    )


@dataclass
class ReferenceRun:
    codes: np.ndarray  # [n, n_q] Mimi codes moshi fed in, frame by frame
    text: np.ndarray  # [n] text token of each step
    heads: np.ndarray  # [n, heads, dim] extra heads' probabilities of each step


def run_reference(folder: Path, pcm: np.ndarray, codes: np.ndarray | None = None) -> ReferenceRun:
    """moshi's Mimi (streaming, n_q codebooks) and `LMGen` (greedy, float32) on pcm, frame by
    frame, as Kyutai's stt_from_file_pytorch script; `codes` [n, n_q] replaces Mimi's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # frame-sized work; torch.compile costs seconds and changes nothing
    try:
        with torch.no_grad(), no_compile():
            return _reference(folder, pcm, codes)
    finally:
        torch.set_num_threads(threads)


def _reference(folder: Path, pcm: np.ndarray, codes: np.ndarray | None) -> ReferenceRun:
    info = checkpoint_info(folder)
    lm = info.get_moshi(device="cpu", dtype=torch.float32)
    gen = LMGen(lm, use_sampling=False, temp=0.0, temp_text=0.0)
    if codes is None:
        mimi = info.get_mimi(device="cpu")
        frame = mimi.frame_size
        x = torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32))
        with mimi.streaming(1):
            out = [
                mimi.encode(x[None, None, start : start + frame])[0, :, 0]
                for start in range(0, len(pcm) - frame + 1, frame)
            ]
        codes = torch.stack(out).numpy()
    text, heads = [], []
    with gen.streaming(1):
        for column in codes:
            tokens = torch.from_numpy(column.astype(np.int64))[None, :, None]
            result = gen.step_with_extra_heads(tokens)
            assert result is not None  # delays are all 0: a token from the first step on
            token, probs = result
            text.append(int(token[0, 0, 0]))
            heads.append(np.stack([p[0, 0].numpy() for p in probs]) if probs else np.zeros((0, 6)))
    return ReferenceRun(np.asarray(codes, dtype=np.int32), np.array(text), np.array(heads))
