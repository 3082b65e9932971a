"""Load Kyutai's STT (config.json, model.safetensors, the Mimi file, the tokenizer) from a folder or
a Hugging Face repo id, checking every file first: a missing or mismatched file is one sentence.

The LM's tensors carry the PyTorch key names of the `moshi` package (`text_emb.weight`,
`emb.i.weight`, `transformer.layers.i.self_attn.in_proj_weight`, ..., `extra_heads.i.weight`);
both spellings of the attention projections that moshi accepts are read. The end-of-turn heads
and the feed-forward size are taken from the weights (stt-1b-en_fr-candle has the heads, its
config.json need not say so) and checked against config.json where it states them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlx.core as mx

from model.checkpoints.config_io import read_json
from model.checkpoints.hub import resolve_model
from model.checkpoints.load import default_dtype
from model.checkpoints.safetensors_io import TensorHeader, load_safetensors, read_header
from model.config import MimiConfig
from model.conversation.tokenizer import TextTokenizer
from model.errors import CheckpointError
from model.mimi import MimiCodec
from model.stt.config import SttConfig
from model.stt.mimi_config import mimi_config_from_moshi
from model.stt.model import SttLM

DEFAULT_STT_MODEL = "kyutai/stt-1b-en_fr"
CONFIG_FILE = "config.json"
FLOATS = ("BF16", "F16", "F32")
_ATTENTION = re.compile(
    r"^(transformer\.layers\.\d+\.self_attn\.)(in|out)_?projs?(\.0)?[._]weight$"
)
_EXTRA_HEAD = re.compile(r"^extra_heads\.(\d+)\.weight$")


@dataclass
class SttModel:
    """Everything transcription needs, loaded and checked."""

    config: SttConfig
    lm: SttLM
    mimi: MimiCodec  # encodes config.n_q codebooks per frame
    tokenizer: TextTokenizer
    folder: Path

    def listener(self, mimi: MimiCodec, source: str = "") -> Any:
        """A `model.stt.listener.Listener` of this STT for a PersonaPlex whose codec is `mimi`
        (what `PersonaPlex.listen` attaches; the conversation package never imports this one)."""
        from model.stt.listener import Listener

        return Listener.attach(mimi, self, source=source)


def canonical_key(key: str) -> str:
    """The `SttLM` parameter path of a checkpoint key (`...self_attn.in_proj_weight`,
    `...in_proj.weight` and `...in_projs.0.weight` are all `...self_attn.in_proj.weight`)."""
    match = _ATTENTION.match(key)
    if match:
        return f"{match.group(1)}{match.group(2)}_proj.weight"
    return key


def read_stt_config(folder: Path, flag: str | None = None) -> SttConfig:
    """config.json of an STT folder, checked (`SttConfig.from_dict`); `flag`: the option that
    named the folder, for the message (`resolve_model`)."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        give = f"pass {flag} with one" if flag else "give one"
        raise CheckpointError(
            f"{folder} has no {CONFIG_FILE}; it is not a Kyutai STT model folder ({give}, e.g. {DEFAULT_STT_MODEL})."
        )
    data = read_json(path)
    if isinstance(data, dict) and data.get("model_type", "stt") != "stt":
        raise CheckpointError(
            f"{path} describes a '{data['model_type']}' model, not a speech-to-text one (model_type 'stt')."
        )
    return SttConfig.from_dict(data)


def expected_shapes(cfg: SttConfig) -> dict[str, tuple[int, ...]]:
    """Parameter path -> shape of every tensor of the LM."""
    t = cfg.transformer
    d, hidden = t.d_model, t.dim_feedforward
    shapes: dict[str, tuple[int, ...]] = {"text_emb.weight": (cfg.text_card + 1, d)}
    shapes |= {f"emb.{i}.weight": (cfg.card + 1, d) for i in range(cfg.n_q)}
    for i in range(t.num_layers):
        p = f"transformer.layers.{i}"
        shapes[f"{p}.self_attn.in_proj.weight"] = (3 * d, d)
        shapes[f"{p}.self_attn.out_proj.weight"] = (d, d)
        shapes[f"{p}.gating.linear_in.weight"] = (2 * hidden, d)
        shapes[f"{p}.gating.linear_out.weight"] = (d, hidden)
        shapes[f"{p}.norm1.alpha"] = (1, 1, d)
        shapes[f"{p}.norm2.alpha"] = (1, 1, d)
    shapes["out_norm.alpha"] = (1, 1, d)
    shapes["text_linear.weight"] = (cfg.text_card, d)
    shapes |= {f"extra_heads.{i}.weight": (cfg.extra_heads_dim, d) for i in range(cfg.extra_heads)}
    return shapes


def _from_weights(cfg: SttConfig, header: dict[str, TensorHeader], path: Path) -> SttConfig:
    """cfg with the extra heads and feed-forward size the weights imply, checked against cfg."""
    heads = {int(m.group(1)): header[k].shape for k in header if (m := _EXTRA_HEAD.match(k))}
    if heads:
        shape = heads[min(heads)]
        if sorted(heads) != list(range(len(heads))) or len(shape) != 2:
            raise CheckpointError(
                f"The extra heads in {path} are not numbered 0..{len(heads) - 1}."
            )
        if cfg.extra_heads and cfg.extra_heads != len(heads):
            raise CheckpointError(
                f"{path} has {len(heads)} extra heads but its config.json declares {cfg.extra_heads}; the files do not belong together."
            )
        cfg = replace(cfg, extra_heads=len(heads), extra_heads_dim=shape[0])
    elif cfg.extra_heads:
        raise CheckpointError(
            f"config.json declares {cfg.extra_heads} extra heads but {path} has none; the files do not belong together."
        )
    out = header.get("transformer.layers.0.gating.linear_out.weight")
    t = cfg.transformer
    if out is not None and len(out.shape) == 2 and out.shape[1] != t.dim_feedforward:
        if cfg.hidden_scale_given:
            raise CheckpointError(
                f"The feed-forward layers in {path} have {out.shape[1]} units but config.json's hidden_scale gives {t.dim_feedforward}; the files do not belong together."
            )
        cfg = replace(cfg, transformer=replace(t, dim_feedforward=out.shape[1]))
    return cfg


def check_weights(path: Path, cfg: SttConfig) -> tuple[SttConfig, dict[str, str]]:
    """Check model.safetensors against cfg; returns cfg as the weights complete it and the map
    parameter path -> key in the file. Depformer tensors, if any, are ignored."""
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} is an incomplete STT model: it lacks {path.name}, which its config.json names."
        )
    header = read_header(path)
    cfg = _from_weights(cfg, header, path)
    keys = {canonical_key(k): k for k in header if not k.startswith("depformer")}
    shapes = expected_shapes(cfg)
    missing = [p for p in shapes if p not in keys]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"{path} has no tensor for '{missing[0]}'{more}; it is incomplete or not a Kyutai STT model."
        )
    extra = [k for p, k in keys.items() if p not in shapes]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(
            f"{path} has an unexpected tensor '{extra[0]}'{more}; it does not match its config.json."
        )
    for target, shape in shapes.items():
        got = header[keys[target]]
        if got.shape != shape:
            raise CheckpointError(
                f"Tensor '{keys[target]}' in {path} has shape {list(got.shape)}, expected {list(shape)}; the weights do not match config.json."
            )
        if got.dtype not in FLOATS:
            raise CheckpointError(
                f"Tensor '{keys[target]}' in {path} is {got.dtype_name}, expected bfloat16, float16 or float32."
            )
    return cfg, {p: keys[p] for p in shapes}


# Quantized projections' group size (as PersonaPlex's); the app compiles the STT's kernels for it
# ahead of the load (`personaplex_tui/kernels_ahead.py`).
GROUP_SIZE = 64


def lm_from_file(
    path: Path,
    cfg: SttConfig,
    *,
    dtype: mx.Dtype | None = None,
    quantize: int | None = None,
    group_size: int = GROUP_SIZE,
) -> tuple[SttLM, SttConfig]:
    """Build the LM from a checked model.safetensors; `quantize` (4 or 8) quantizes the
    transformer's projections whose input size is a multiple of `group_size` (all of the
    published model's; embeddings and heads stay float)."""
    cfg, keys = check_weights(path, cfg)
    dtype = dtype or default_dtype()
    d = cfg.transformer.d_model
    if quantize is not None and (quantize not in (4, 8) or d % group_size):
        raise CheckpointError(
            f"The STT model (width {d}) cannot be quantized to {quantize} bits in groups of {group_size}; use 4 or 8 bits with a width divisible by {group_size}."
        )
    stored = load_safetensors(path)
    weights = []
    for target, key in keys.items():
        arr = stored.pop(key)
        weights.append((target, arr.astype(mx.float32 if target.endswith(".alpha") else dtype)))
    del stored
    lm = SttLM(cfg)
    lm.load_weights(weights, strict=True)
    del weights
    if quantize is not None:
        lm.quantize(quantize, group_size)
    mx.eval(lm.parameters())
    lm.eval()
    lm.prepare()
    return lm, cfg


def mimi_config(folder: Path, cfg: SttConfig) -> MimiConfig:
    """The Mimi of an STT folder, coding the n_q codebooks the LM reads."""
    if cfg.mimi_config_name is None:
        return MimiConfig(num_codebooks=cfg.n_q)
    path = folder / cfg.mimi_config_name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"The Mimi configuration {path} could not be read ({type(error).__name__})."
        ) from None
    return mimi_config_from_moshi(data, cfg.n_q)


def load_stt(
    model: str | os.PathLike[str] | None = None,
    *,
    dtype: mx.Dtype | None = None,
    quantize: int | None = None,
    compile: bool = True,
    tqdm_class: Any = None,
    on_config: Callable[[SttConfig], None] | None = None,
    flag: str | None = None,
) -> SttModel:
    """Load the STT model from a folder or a Hugging Face repo id (default kyutai/stt-1b-en_fr).

    From a repo, only config.json and the files it names are downloaded (into the hub cache).
    `on_config(config)` is called once config.json is read, before the weights are (the app
    starts compiling the STT's kernels there). `flag`: the command-line option that named
    `model`, for the messages (`resolve_model`).

    Raises CheckpointError / ModelNotFoundError with one sentence on any problem."""

    def resolve(patterns: list[str]) -> Path:
        return resolve_model(
            model,
            allow_patterns=patterns,
            tqdm_class=tqdm_class,
            default=DEFAULT_STT_MODEL,
            flag=flag,
        )

    folder = resolve([CONFIG_FILE])  # a repo id: config.json first, it names the other files
    cfg = read_stt_config(folder, flag)
    if on_config is not None:
        on_config(cfg)
    names = [cfg.moshi_name, cfg.mimi_name, cfg.tokenizer_name, cfg.mimi_config_name]
    folder = resolve([CONFIG_FILE, *(n for n in names if n)])  # a folder: the same folder
    lm, cfg = lm_from_file(folder / cfg.moshi_name, cfg, dtype=dtype, quantize=quantize)
    mimi_path = folder / cfg.mimi_name
    if not mimi_path.is_file():
        raise CheckpointError(
            f"{folder} is an incomplete STT model: it lacks its Mimi file {cfg.mimi_name}, which its config.json names."
        )
    mimi = MimiCodec.from_file(mimi_path, mimi_config(folder, cfg), compile=compile)
    tokenizer = TextTokenizer(folder / cfg.tokenizer_name)
    return SttModel(config=cfg, lm=lm, mimi=mimi, tokenizer=tokenizer, folder=folder)
