"""Mimi weights: the checkpoint's tensor names and shapes, validation, and mapping onto MimiModel.

The file is Kyutai's `tokenizer-e351c8d8-checkpoint125.safetensors` (shipped as `mimi.safetensors`):
moshi's MimiModel state dict with attention stored as `self_attn.in_proj_weight` /
`self_attn.out_proj.weight`, folded (weight-norm free) convolutions in PyTorch layout, and EMA
codebooks (`embedding_sum`, `cluster_usage`) for all `n_q` quantizers.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..config import MimiConfig
from ..errors import CheckpointError, ModelNotFoundError
from .model import MimiModel

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}
_ITEMSIZE |= {"U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
_FLOATS = ("F32", "F16", "BF16")
_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_DTYPE_NAMES |= {
    f"{k}{n}": f"{v}{n}" for k, v in (("I", "int"), ("U", "uint")) for n in (8, 16, 32, 64)
}
_DTYPE_NAMES |= {"BOOL": "bool"}
_EPSILON = 1e-5  # moshi's EuclideanCodebook epsilon

# Names a moshi state_dict() uses instead of the released file's.
_ALIASES = {".self_attn.in_projs.0.weight": ".self_attn.in_proj_weight"}
_ALIASES |= {".self_attn.out_projs.0.weight": ".self_attn.out_proj.weight"}

Spec = dict[str, tuple[int, ...]]


# --- a validating safetensors reader (generic) -------------------------------------------------


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype, shape) of every tensor, after checking the file is complete."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"The weight file {path} does not exist.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is not a safetensors file (only {size} bytes).")
        n = int.from_bytes(prefix, "little")
        if 8 + n > size:
            raise CheckpointError(
                f"{path} is not a safetensors file or is truncated (its header claims {n} bytes, "
                f"the file has {size})."
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(
                f"{path} is not a safetensors file (its header is not JSON)."
            ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a table).")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            nbytes = _ITEMSIZE[dtype] * math.prod(shape)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path} has a corrupt header entry for '{name}'.") from None
        if end - begin != nbytes:
            raise CheckpointError(
                f"{path} is corrupt: '{name}' holds {end - begin} bytes, not {nbytes}."
            )
        if 8 + n + end > size:
            raise CheckpointError(
                f"{path} is truncated: '{name}' ends at byte {8 + n + end} but the file has {size}."
            )
        out[name] = (dtype, shape)
    return out


def read_safetensors(path: str | os.PathLike) -> dict[str, mx.array]:
    """Every tensor of a validated safetensors file (loaded lazily by MLX)."""
    read_safetensors_header(path)
    try:
        return mx.load(str(path), format="safetensors")
    except Exception as e:  # MLX raises plain RuntimeError/ValueError on unreadable files
        raise CheckpointError(f"{path} could not be read as safetensors ({e}).") from None


# --- what a Mimi checkpoint holds ---------------------------------------------------------------


def _conv(prefix: str, out_ch: int, in_ch: int, kernel: int) -> Spec:
    return {
        f"{prefix}.conv.conv.weight": (out_ch, in_ch, kernel),
        f"{prefix}.conv.conv.bias": (out_ch,),
    }


def _residual(prefix: str, cfg: MimiConfig, dim: int) -> Spec:
    hidden = dim // cfg.compress
    return {
        **_conv(f"{prefix}.block.1", hidden, dim, cfg.residual_kernel_size),
        **_conv(f"{prefix}.block.3", dim, hidden, 1),
    }


def _seanet(cfg: MimiConfig) -> Spec:
    nf, spec = cfg.n_filters, {}
    spec |= _conv("encoder.model.0", nf, cfg.channels, cfg.kernel_size)
    i, mult = 1, 1
    for ratio in reversed(cfg.ratios):
        for _ in range(cfg.n_residual_layers):
            spec |= _residual(f"encoder.model.{i}", cfg, mult * nf)
            i += 1
        spec |= _conv(f"encoder.model.{i + 1}", 2 * mult * nf, mult * nf, 2 * ratio)
        i, mult = i + 2, mult * 2
    spec |= _conv(f"encoder.model.{i + 1}", cfg.dimension, mult * nf, cfg.last_kernel_size)
    spec |= _conv("decoder.model.0", mult * nf, cfg.dimension, cfg.kernel_size)
    i = 1
    for ratio in cfg.ratios:
        p = f"decoder.model.{i + 1}.convtr.convtr"
        spec |= {
            f"{p}.weight": (mult * nf, mult * nf // 2, 2 * ratio),
            f"{p}.bias": (mult * nf // 2,),
        }
        i += 2
        for _ in range(cfg.n_residual_layers):
            spec |= _residual(f"decoder.model.{i}", cfg, mult * nf // 2)
            i += 1
        mult //= 2
    spec |= _conv(f"decoder.model.{i + 1}", cfg.channels, nf, cfg.last_kernel_size)
    return spec


def _transformer(prefix: str, cfg: MimiConfig) -> Spec:
    d, ff, spec = cfg.dimension, cfg.dim_feedforward, {}
    for layer in range(cfg.num_layers):
        p = f"{prefix}.transformer.layers.{layer}"
        spec |= {
            f"{p}.self_attn.in_proj_weight": (3 * d, d),
            f"{p}.self_attn.out_proj.weight": (d, d),
            f"{p}.norm1.weight": (d,),
            f"{p}.norm1.bias": (d,),
            f"{p}.norm2.weight": (d,),
            f"{p}.norm2.bias": (d,),
            f"{p}.linear1.weight": (ff, d),
            f"{p}.linear2.weight": (d, ff),
            f"{p}.layer_scale_1.scale": (d,),
            f"{p}.layer_scale_2.scale": (d,),
        }
    return spec


def codebook_keys(i: int) -> tuple[str, str, str]:
    """(embedding_sum, cluster_usage, _initialized) keys of codebook i (0 = semantic)."""
    p = "quantizer.rvq_first.vq.layers.0" if i == 0 else f"quantizer.rvq_rest.vq.layers.{i - 1}"
    return tuple(f"{p}._codebook.{n}" for n in ("embedding_sum", "cluster_usage", "_initialized"))


def _codebook(cfg: MimiConfig, i: int) -> Spec:
    total, usage, init = codebook_keys(i)
    return {total: (cfg.codebook_size, cfg.codebook_dim), usage: (cfg.codebook_size,), init: (1,)}


def checkpoint_spec(cfg: MimiConfig) -> tuple[Spec, Spec]:
    """(required, optional) tensor shapes of a Mimi checkpoint, PyTorch names and layouts.

    Optional: the codebooks stored beyond the `num_codebooks` in use (up to `n_q`).
    """
    d, cb, stride = cfg.dimension, cfg.codebook_dim, cfg.steps_per_frame
    spec = _seanet(cfg) | _transformer("encoder_transformer", cfg)
    spec |= _transformer("decoder_transformer", cfg)
    for part in ("rvq_first", "rvq_rest"):
        spec[f"quantizer.{part}.input_proj.weight"] = (cb, d, 1)
        spec[f"quantizer.{part}.output_proj.weight"] = (d, cb, 1)
    for i in range(cfg.num_codebooks):
        spec |= _codebook(cfg, i)
    spec["downsample.conv.conv.conv.weight"] = (d, d, 2 * stride)
    spec["upsample.convtr.convtr.convtr.weight"] = (d, 1, 2 * stride)
    optional: Spec = {}
    for i in range(cfg.num_codebooks, cfg.n_q):
        optional |= _codebook(cfg, i)
    return spec, optional


def _canonical(name: str) -> str:
    for alias, real in _ALIASES.items():
        if name.endswith(alias):
            return name[: -len(alias)] + real
    return name


def _first(names: list[str]) -> str:
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return f"'{names[0]}'{more}"


def check_checkpoint(header: dict[str, tuple[str, tuple[int, ...]]], cfg: MimiConfig, path) -> None:
    """Raises CheckpointError unless `header` (name -> (dtype, shape)) is a Mimi of `cfg`."""
    required, optional = checkpoint_spec(cfg)
    known = required | optional
    found = {_canonical(k): v for k, v in header.items()}
    # Shapes first: a checkpoint of another size shows as mismatched shapes, not missing names.
    for name in sorted(n for n in found if n in known):
        dtype, shape = found[name]
        if shape != known[name]:
            raise CheckpointError(
                f"{path}: tensor '{name}' has shape {list(shape)} but this Mimi config expects "
                f"{list(known[name])}."
            )
        if dtype not in _FLOATS:
            raise CheckpointError(
                f"{path}: tensor '{name}' is {_DTYPE_NAMES.get(dtype, dtype)}; "
                "expected float32, float16 or bfloat16."
            )
    missing = sorted(k for k in required if k not in found)
    if missing:
        raise CheckpointError(
            f"{path} is not a Mimi checkpoint for this config: tensor {_first(missing)} is "
            f"missing (expected shape {list(required[missing[0]])})."
        )
    unexpected = sorted(k for k in found if k not in known)
    if unexpected:
        raise CheckpointError(
            f"{path} has unexpected tensor {_first(unexpected)} for a Mimi checkpoint."
        )


# --- PyTorch names and layouts -> MimiModel -----------------------------------------------------


def _as_mx(value: Any) -> mx.array:
    return value if isinstance(value, mx.array) else mx.array(value)


def _conv_layout(w: mx.array) -> mx.array:
    k = w.shape[2]
    return w.transpose(2, 1, 0).reshape(k * w.shape[1], w.shape[0])  # [out, in, k] -> [k*in, out]


def _convtr_layout(w: mx.array) -> mx.array:
    return w.transpose(0, 2, 1).reshape(w.shape[0], -1)  # [in, out, k] -> [in, k*out]


def _linear_layout(w: mx.array) -> mx.array:
    return w.T  # [out, in] -> [in, out]


def _matrix(w: mx.array) -> mx.array:
    return w[..., 0]  # a 1x1 conv [out, in, 1] used as a matrix


def _depthwise(w: mx.array) -> mx.array:
    return w[:, 0, :].T  # [channels, 1, k] -> [k, channels]


_SEANET = r"^(encoder|decoder)\.model\.(\d+)\."
_RULES: list[tuple[re.Pattern, str, Callable[[mx.array], mx.array]]] = [
    (
        re.compile(_SEANET + r"block\.1\.conv\.conv\.(weight|bias)$"),
        r"\1.layers.\2.conv1.\3",
        _conv_layout,
    ),
    (
        re.compile(_SEANET + r"block\.3\.conv\.conv\.(weight|bias)$"),
        r"\1.layers.\2.conv2.\3",
        _conv_layout,
    ),
    (re.compile(_SEANET + r"conv\.conv\.(weight|bias)$"), r"\1.layers.\2.\3", _conv_layout),
    (re.compile(_SEANET + r"convtr\.convtr\.(weight|bias)$"), r"\1.layers.\2.\3", _convtr_layout),
    (
        re.compile(r"^(\w+_transformer)\.transformer\.(.*)\.in_proj_weight$"),
        r"\1.\2.in_proj.weight",
        _linear_layout,
    ),
    (re.compile(r"^(\w+_transformer)\.transformer\.(.*)$"), r"\1.\2", _linear_layout),
    (
        re.compile(r"^quantizer\.rvq_first\.(input|output)_proj\.weight$"),
        r"quantizer.semantic_\1_proj",
        _matrix,
    ),
    (
        re.compile(r"^quantizer\.rvq_rest\.(input|output)_proj\.weight$"),
        r"quantizer.acoustic_\1_proj",
        _matrix,
    ),
    (re.compile(r"^downsample\.conv\.conv\.conv\.weight$"), "downsample.weight", _conv_layout),
    (re.compile(r"^upsample\.convtr\.convtr\.convtr\.weight$"), "upsample.weight", _depthwise),
]


def sanitize(weights: Mapping[str, Any], cfg: MimiConfig) -> dict[str, mx.array]:
    """Checkpoint tensors (validated) -> MimiModel parameters, float32, MLX layouts."""
    weights = {_canonical(k): _as_mx(v) for k, v in weights.items()}
    out: dict[str, mx.array] = {}
    for name, value in weights.items():
        if "._codebook." in name:
            continue
        for pattern, target, layout in _RULES:
            if pattern.match(name):
                # Biases are 1-D: the layout functions only apply to weights.
                value = value.astype(mx.float32)
                out[pattern.sub(target, name)] = layout(value) if value.ndim > 1 else value
                break
        else:
            raise CheckpointError(f"Mimi tensor '{name}' has no place in the model.")
    codebooks = []
    for i in range(cfg.num_codebooks):
        total, usage, _ = codebook_keys(i)
        usage_f = mx.maximum(weights[usage].astype(mx.float32), _EPSILON)
        codebooks.append(weights[total].astype(mx.float32) / usage_f[:, None])
    out["quantizer.codebooks"] = mx.stack(codebooks)
    return out


_MX_DTYPE_CODES = {mx.float32: "F32", mx.float16: "F16", mx.bfloat16: "BF16", mx.bool_: "BOOL"}
_MX_DTYPE_CODES |= {
    getattr(mx, f"{t}{n}"): f"{t[0].upper()}{n}" for t in ("int", "uint") for n in (8, 16, 32, 64)
}


def describe(weights: Mapping[str, mx.array]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (safetensors dtype code, shape), the form `check_checkpoint` takes."""
    return {
        k: (_MX_DTYPE_CODES.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in weights.items()
    }


def load_into(model: MimiModel, weights: Mapping[str, Any], source: str = "Mimi weights") -> None:
    """Validates checkpoint tensors (PyTorch names) and loads them into `model`."""
    weights = {k: _as_mx(v) for k, v in weights.items()}
    check_checkpoint(describe(weights), model.cfg, source)
    model.load_weights(list(sanitize(weights, model.cfg).items()), strict=True)
    model.prepare()


def load_file(model: MimiModel, path: str | os.PathLike) -> None:
    """Validates a Mimi safetensors file against `model.cfg` and loads it."""
    check_checkpoint(read_safetensors_header(path), model.cfg, path)
    load_into(model, read_safetensors(path), str(path))
