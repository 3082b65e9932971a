"""Read the LM's configuration from a checkpoint folder, in either layout of SPEC.md §3.

Converted layout: config.json in the converted schema (`PersonaPlexConfig.from_dict`).
Original layout: no config.json means PersonaPlex 7B (`config_7b()`); a config.json next to
model.safetensors may describe other sizes, in the converted schema or in Moshi's own
LM-kwargs schema (`dim`, `num_heads`, `depformer_dim`, ... as `moshi.models.loaders` reads it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.config import (
    DELAYS_7B,
    LMConfig,
    PersonaPlexConfig,
    TransformerConfig,
    config_7b,
)
from model.errors import CheckpointError
from model.layout import (
    CONFIG_FILE,
    CONVERTED,
    ORIGINAL,
    ORIGINAL_FILE,
    TEMPORAL_FILE,
)


def detect_layout(folder: Path) -> str:
    """CONVERTED or ORIGINAL; CheckpointError when the folder is neither."""
    if (folder / ORIGINAL_FILE).is_file():
        return ORIGINAL
    if (folder / CONFIG_FILE).is_file():
        return CONVERTED
    if (folder / TEMPORAL_FILE).is_file():
        raise CheckpointError(
            f"{folder} lacks {CONFIG_FILE}, which a converted PersonaPlex checkpoint needs next to {TEMPORAL_FILE}."
        )
    raise CheckpointError(
        f"{folder} is not a PersonaPlex checkpoint: it has neither {CONFIG_FILE} with {TEMPORAL_FILE} (converted MLX layout) nor {ORIGINAL_FILE} (original layout)."
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno})."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} could not be read ({error}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object.")
    return data


def moshi_hidden(dim_feedforward: int, dim: int) -> int:
    """Hidden size of Moshi's ActivationGating for its `dim_feedforward` argument."""
    return (21 * dim) // 8 if dim_feedforward == 4 * dim else (2 * dim_feedforward) // 3


def config_from_moshi_kwargs(data: dict[str, Any]) -> PersonaPlexConfig:
    """A PersonaPlexConfig from Moshi's LM kwargs (the schema of Kyutai's config.json)."""
    base = config_7b()
    dim = int(data["dim"])
    scale = float(data.get("hidden_scale", 4.125))
    temporal = TransformerConfig(
        d_model=dim,
        num_heads=int(data["num_heads"]),
        num_layers=int(data["num_layers"]),
        dim_feedforward=moshi_hidden(int(scale * dim), dim),
        context=int(data.get("context", base.lm.temporal.context)),
        max_period=float(data.get("max_period", 10000.0)),
    )
    d_dim = int(data["depformer_dim"])
    d_ff = data.get("depformer_dim_feedforward") or int(scale * d_dim)
    depformer = TransformerConfig(
        d_model=d_dim,
        num_heads=int(data["depformer_num_heads"]),
        num_layers=int(data["depformer_num_layers"]),
        dim_feedforward=moshi_hidden(int(d_ff), d_dim),
        context=int(data.get("dep_q", 16)),
        max_period=float(data.get("depformer_max_period", 10000.0)),
    )
    delays = tuple(data.get("delays", DELAYS_7B))
    n_q = int(data.get("n_q", len(delays) - 1))
    if n_q != len(delays) - 1:
        raise ValueError(f"n_q {n_q} does not match the {len(delays)} delays")
    lm = LMConfig(
        temporal=temporal,
        depformer=depformer,
        text_card=int(data.get("text_card", 32000)),
        card=int(data.get("card", 2048)),
        dep_q=int(data.get("dep_q", n_q)),
        delays=delays,
        text_pad_id=int(data.get("existing_text_padding_id", 3)),
        text_epad_id=int(data.get("existing_text_end_padding_id", 0)),
    )
    return PersonaPlexConfig(lm=lm)


def read_config(folder: Path, layout: str) -> PersonaPlexConfig:
    """The checkpoint's PersonaPlexConfig (see the module docstring for the rules)."""
    path = folder / CONFIG_FILE
    if layout == ORIGINAL and not path.is_file():
        return config_7b()
    data = _read_json(path)
    try:
        if "temporal" in data:
            return PersonaPlexConfig.from_dict(data)
        if layout == ORIGINAL and "dim" in data:
            return config_from_moshi_kwargs(data)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path} describes an invalid model ({error}).") from None
    raise CheckpointError(
        f"{folder} is not a PersonaPlex checkpoint: its {CONFIG_FILE} has no 'temporal' section."
    )
