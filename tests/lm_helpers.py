"""Helpers for the LM tests: small configs and the PyPI `moshi` reference model on the same weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlx.core as mx
import numpy as np
import torch
from moshi.models import loaders
from moshi.models.lm import LMModel
from moshi.utils.compile import no_compile

from model.checkpoints.config_io import moshi_hidden
from model.config import LMConfig, PersonaPlexConfig, QuantizationConfig, TransformerConfig


@contextlib.contextmanager
def reference_mode() -> Iterator[None]:
    """No autograd, and no torch.compile (which costs seconds on this CPU and changes nothing)."""
    with torch.no_grad(), no_compile():
        yield


def small_config(
    *,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
    context: int = 6,
    dep_dim: int = 32,
    dep_heads: int = 2,
    dep_layers: int = 2,
    dep_dim_feedforward: int | None = None,
    text_card: int = 100,
    card: int = 64,
    bits: int | None = None,
) -> PersonaPlexConfig:
    """A small PersonaPlex config; FFN hidden sizes follow Moshi's rule (hidden_scale 4.125)."""
    dep_ff = dep_dim_feedforward if dep_dim_feedforward is not None else int(4.125 * dep_dim)
    temporal = TransformerConfig(
        d_model=d_model,
        num_heads=num_heads,
        num_layers=num_layers,
        dim_feedforward=moshi_hidden(int(4.125 * d_model), d_model),
        context=context,
    )
    depformer = TransformerConfig(
        d_model=dep_dim,
        num_heads=dep_heads,
        num_layers=dep_layers,
        dim_feedforward=moshi_hidden(dep_ff, dep_dim),
        context=16,
    )
    lm = LMConfig(temporal=temporal, depformer=depformer, text_card=text_card, card=card)
    quant = QuantizationConfig(bits=bits, group_size=64) if bits else None
    return PersonaPlexConfig(lm=lm, quantization=quant)


def moshi_kwargs(config: PersonaPlexConfig, dep_dim_feedforward: int | None = None) -> dict:
    """LMModel kwargs: Moshi 7B's settings (norm, gating, RoPE, per-step depformer), small sizes."""
    t, d = config.lm.temporal, config.lm.depformer
    kw = dict(loaders._lm_kwargs)
    kw.update(
        dim=t.d_model,
        num_heads=t.num_heads,
        num_layers=t.num_layers,
        context=t.context,
        text_card=config.lm.text_card,
        card=config.lm.card,
        n_q=config.lm.n_audio,
        dep_q=config.lm.dep_q,
        depformer_dim=d.d_model,
        depformer_dim_feedforward=dep_dim_feedforward or int(4.125 * d.d_model),
        depformer_num_heads=d.num_heads,
        depformer_num_layers=d.num_layers,
        delays=list(config.lm.delays),
    )
    return kw


def build_moshi(
    config: PersonaPlexConfig, *, seed: int = 0, dep_dim_feedforward: int | None = None
) -> LMModel:
    """A random moshi LMModel (float32, CPU); norms perturbed away from 1 and every weight
    rounded to bfloat16 values, so that float16/bfloat16 checkpoints store it exactly."""
    torch.manual_seed(seed)
    model = LMModel(**moshi_kwargs(config, dep_dim_feedforward)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            p.copy_(p.to(torch.bfloat16).float())
    return model


def _stacked(sd: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    parts = []
    i = 0
    while f"{prefix}.{i}.weight" in sd:
        parts.append(sd[f"{prefix}.{i}.weight"])
        i += 1
    return torch.cat(parts, dim=0)


def weights_from_moshi(model: LMModel) -> dict[str, mx.array]:
    """The moshi model's weights by this project's parameter paths (float32).

    moshi keeps per-step attention projections as `in_projs.k` / `out_projs.k`; the checkpoint
    (and `model.lm.model.LM`) stacks them into one `in_proj` / `out_proj` weight along the output axis.
    """
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out: dict[str, mx.array] = {}
    done: set[str] = set()
    for key in sd:
        for proj in ("in_proj", "out_proj"):
            marker = f".self_attn.{proj}s."
            if marker in key:
                prefix = key.split(marker)[0] + f".self_attn.{proj}s"
                if prefix not in done:
                    done.add(prefix)
                    target = prefix.removesuffix("s") + ".weight"
                    out[target] = mx.array(_stacked(sd, prefix).numpy())
                break
        else:
            out[key] = mx.array(sd[key].numpy())
    return out


def set_moshi_weights(model: LMModel, weights: dict[str, np.ndarray]) -> None:
    """Overwrite a moshi model's weights from this project's parameter paths (inverse of above)."""
    sd = model.state_dict()
    with torch.no_grad():
        for target, value in weights.items():
            tensor = torch.from_numpy(np.asarray(value, dtype=np.float32))
            if ".self_attn.in_proj." in target or ".self_attn.out_proj." in target:
                prefix = target.removesuffix(".weight") + "s"
                n = sum(1 for k in sd if k.startswith(prefix + "."))
                for i, chunk in enumerate(tensor.chunk(n, dim=0)):
                    sd[f"{prefix}.{i}.weight"].copy_(chunk)
            else:
                sd[target].copy_(tensor.reshape(sd[target].shape))


def random_columns(config: PersonaPlexConfig, steps: int, *, seed: int = 0) -> np.ndarray:
    """[steps, 17] token columns with real ids, initial tokens and a few -1 ("no token")."""
    rng = np.random.default_rng(seed)
    lm = config.lm
    cols = np.empty((steps, lm.n_streams), dtype=np.int64)
    cols[:, 0] = rng.integers(0, lm.text_card, steps)
    cols[:, 1:] = rng.integers(0, lm.card, (steps, lm.n_audio))
    specials = [(0, 0, lm.text_initial), (1, 3, lm.audio_initial), (2, 5, -1), (3, 0, -1)]
    cols[0, 1:] = lm.audio_initial
    for row, stream, token in specials:
        if row < steps:
            cols[row, stream] = token
    return cols


def moshi_forward(model: LMModel, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """moshi's batched forward of columns [T, 17] -> (text logits [T, text_card], h [T, D])."""
    seq = torch.from_numpy(cols.T[None].copy())
    with reference_mode():
        h, logits = model.forward_text(seq)
    return logits[0, 0].numpy(), h[0].numpy()


def moshi_depformer_logits(model: LMModel, cols: np.ndarray, h: np.ndarray) -> np.ndarray:
    """moshi's teacher-forced depformer logits for each column -> [T, dep_q, card]."""
    seq = torch.from_numpy(cols.T[None].copy())
    with reference_mode():
        logits = model.forward_depformer_training(seq, torch.from_numpy(h[None]))
    return logits[0].permute(1, 0, 2).numpy()


def assert_close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    """max |got - ref| <= rel * max |ref| (differences relative to the logits' scale)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = float(np.abs(ref).max())
    diff = float(np.abs(got - ref).max())
    assert diff <= rel * scale, f"max abs diff {diff:.3g} > {rel} x scale {scale:.3g}"
