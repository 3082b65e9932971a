"""A small checkpoint in the original `nvidia/personaplex-7b-v1` hub layout, written without the
project's own writer (`model.checkpoint_write`, `model.mimi.save_weights`, `model.random_weights`).

Files, with the hub's names: `model.safetensors` (the LM, bfloat16, PyTorch key names spelled out
below as the real file has them), `tokenizer-e351c8d8-checkpoint125.safetensors` (Mimi at its real
size, float32, the `moshi` package's MimiModel names), `tokenizer_spm_32k_3.model` and
`voices.tgz` (`voices/<NAME>.pt`: `torch.save` of {"embeddings": bfloat16 [T, 1, 1, dim],
"cache": int64 [1, 17, 4]}, as PersonaPlex's `LMGen` saves a voice prompt).

The hub repo has no config.json (its loader hard-codes the 7B and the published Mimi). A small
model needs one, so this writes the schema Kyutai's hub repos use and `moshi`'s `CheckpointInfo`
reads: the LMModel kwargs, with `mimi_config_name` naming a JSON file of `get_mimi`'s config.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from tests.textdata import train_tiny_spm

LM_FILE = "model.safetensors"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
VOICES_FILE = "voices.tgz"
VOICES = ("NATF2", "VARM1")

# moshi's `loaders._lm_kwargs` for the 7B with PersonaPlex's dep_q = 16, at small sizes: every
# projection's input is a multiple of 64, so the LM can be quantized on load (group size 64).
LM_KWARGS: dict[str, Any] = {
    "dim": 256,
    "text_card": 400,
    "existing_text_padding_id": 3,
    "n_q": 16,
    "dep_q": 16,
    "card": 2048,
    "num_heads": 4,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 3000,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 64,
    "depformer_dim_feedforward": 192,
    "depformer_num_heads": 4,
    "depformer_num_layers": 2,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 16,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
}


MIMI_CONFIG_FILE = "mimi_config.json"
# moshi's `loaders._mimi_config` (the published Mimi's structure) at small sizes.
MIMI_CONFIG: dict[str, Any] = {
    "sample_rate": 24000,
    "channels": 1,
    "frame_rate": 12.5,
    "seanet": {
        "channels": 1,
        "dimension": 32,
        "causal": True,
        "n_filters": 4,
        "n_residual_layers": 1,
        "activation": "ELU",
        "compress": 2,
        "dilation_base": 2,
        "disable_norm_outer_blocks": 0,
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 3,
        "norm": "none",
        "pad_mode": "constant",
        "ratios": [8, 6, 5, 4],
        "true_skip": True,
    },
    "quantizer": {
        "dimension": 16,
        "n_q": 10,
        "bins": 2048,
        "input_dimension": 32,
        "output_dimension": 32,
    },
    "transformer": {
        "d_model": 32,
        "num_heads": 4,
        "num_layers": 2,
        "causal": True,
        "layer_scale": 0.01,
        "context": 7,
        "conv_layout": True,
        "max_period": 10000,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "dim_feedforward": 64,
        "input_dimension": 32,
        "output_dimensions": [32],
    },
}


def _gated_hidden(dim_feedforward: int, dim: int) -> int:
    # moshi's ActivationGating: 2/3 of dim_feedforward, or 21/8 of dim for dim_feedforward 4 x dim.
    return 21 * dim // 8 if dim_feedforward == 4 * dim else 2 * dim_feedforward // 3


def lm_keys(kw: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of the original model.safetensors for LM kwargs `kw`: name -> shape."""
    dim, ddim = kw["dim"], kw["depformer_dim"]
    text, card, n_q, dep_q = kw["text_card"], kw["card"], kw["n_q"], kw["dep_q"]
    hidden = _gated_hidden(int(kw["hidden_scale"] * dim), dim)
    dhidden = _gated_hidden(kw["depformer_dim_feedforward"], ddim)
    keys: dict[str, tuple[int, ...]] = {"text_emb.weight": (text + 1, dim)}
    keys |= {f"emb.{i}.weight": (card + 1, dim) for i in range(n_q)}
    keys["text_linear.weight"] = (text, dim)
    for i in range(kw["num_layers"]):
        keys |= {
            f"transformer.layers.{i}.self_attn.in_proj_weight": (3 * dim, dim),
            f"transformer.layers.{i}.self_attn.out_proj.weight": (dim, dim),
            f"transformer.layers.{i}.norm1.alpha": (1, 1, dim),
            f"transformer.layers.{i}.norm2.alpha": (1, 1, dim),
            f"transformer.layers.{i}.gating.linear_in.weight": (2 * hidden, dim),
            f"transformer.layers.{i}.gating.linear_out.weight": (dim, hidden),
        }
    keys["out_norm.alpha"] = (1, 1, dim)
    keys |= {f"depformer_in.{k}.weight": (ddim, dim) for k in range(dep_q)}
    keys["depformer_text_emb.weight"] = (text + 1, ddim)
    keys |= {f"depformer_emb.{k}.weight": (card + 1, ddim) for k in range(dep_q - 1)}
    for i in range(kw["depformer_num_layers"]):
        # One packed projection for all dep_q steps, stacked along the output axis.
        keys[f"depformer.layers.{i}.self_attn.in_proj_weight"] = (dep_q * 3 * ddim, ddim)
        keys[f"depformer.layers.{i}.self_attn.out_proj.weight"] = (dep_q * ddim, ddim)
        keys[f"depformer.layers.{i}.norm1.alpha"] = (1, 1, ddim)
        keys[f"depformer.layers.{i}.norm2.alpha"] = (1, 1, ddim)
        for k in range(dep_q):
            keys[f"depformer.layers.{i}.gating.{k}.linear_in.weight"] = (2 * dhidden, ddim)
            keys[f"depformer.layers.{i}.gating.{k}.linear_out.weight"] = (ddim, dhidden)
    keys |= {f"linears.{k}.weight": (card, ddim) for k in range(dep_q)}
    return keys


def mimi_keys() -> dict[str, tuple[int, ...]]:
    """Every tensor of Kyutai's Mimi file: moshi's MimiModel state dict, with the attention
    projections under the names the released file uses (`in_proj_weight`, `out_proj.weight`)."""
    from moshi.models import loaders

    released = {"self_attn.in_projs.0.weight": "self_attn.in_proj_weight"}
    released["self_attn.out_projs.0.weight"] = "self_attn.out_proj.weight"
    keys = {}
    mimi = loaders.get_mimi(None, MIMI_CONFIG, num_codebooks=8)
    for name, tensor in mimi.state_dict().items():
        for split, packed in released.items():
            name = name.replace(split, packed)
        keys[name] = tuple(tensor.shape)
    return keys


def _random(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Weights of a plausible scale: norms near 1, layer scales small, codebooks used."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "alpha" or (".norm" in name and leaf == "weight"):
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if leaf == "bias":
        return 0.01 * rng.standard_normal(shape)
    if leaf == "scale":  # layer scale
        return np.full(shape, 0.01)
    if leaf == "_initialized":
        return np.ones(shape)
    if leaf == "cluster_usage":
        return rng.uniform(0.5, 2.0, shape)
    if leaf == "embedding_sum":
        return rng.standard_normal(shape)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return rng.standard_normal(shape) / np.sqrt(fan_in)


def _tensors(keys: dict[str, tuple[int, ...]], dtype: torch.dtype, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in keys.items():
        out[name] = torch.from_numpy(_random(name, shape, rng).astype(np.float32)).to(dtype)
    return out


def _voice_pt(kw: dict[str, Any], frames: int, rng: np.random.Generator) -> bytes:
    emb = torch.from_numpy(rng.standard_normal((frames, 1, 1, kw["dim"])).astype(np.float32))
    streams, columns = 1 + kw["n_q"], max(kw["delays"]) + 3
    cache = rng.integers(0, kw["card"], (1, streams, columns))
    cache[0, 0] = rng.integers(0, kw["text_card"], columns)
    buffer = io.BytesIO()
    torch.save({"embeddings": emb.to(torch.bfloat16), "cache": torch.from_numpy(cache)}, buffer)
    return buffer.getvalue()


def write_original_checkpoint(folder: Path, *, seed: int = 0) -> Path:
    """Write the five files of the original layout (see the module docstring) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {**LM_KWARGS, "mimi_config_name": MIMI_CONFIG_FILE}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / MIMI_CONFIG_FILE).write_text(json.dumps(MIMI_CONFIG, indent=2) + "\n")
    save_file(_tensors(lm_keys(LM_KWARGS), torch.bfloat16, seed), str(folder / LM_FILE))
    save_file(_tensors(mimi_keys(), torch.float32, seed + 1), str(folder / MIMI_FILE))
    train_tiny_spm(folder / TOKENIZER_FILE)
    rng = np.random.default_rng(seed + 2)
    with tarfile.open(folder / VOICES_FILE, "w:gz") as tar:
        for i, name in enumerate(VOICES):
            data = _voice_pt(LM_KWARGS, 4 + i, rng)
            info = tarfile.TarInfo(f"voices/{name}.pt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder
