"""Read the LM's configuration from a checkpoint folder, in either layout.

The layouts: docs/checkpoint-layouts.md.

Converted layout: config.json in the converted schema (`PersonaPlexConfig.from_dict`).
Original layout: no config.json means PersonaPlex 7B (`config_7b()`); a config.json next to
model.safetensors may describe other sizes, in the converted schema or in Moshi's own
LM-kwargs schema (`dim`, `num_heads`, `depformer_dim`, ... as `moshi.models.loaders` reads it),
whose `mimi_config_name` may name a JSON file of moshi's Mimi config (`seanet`, `quantizer`,
`transformer`) for a Mimi other than the published one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from model.checkpoints.layout import (
    CONFIG_FILE,
    CONVERTED,
    LM_FILES,
    ORIGINAL,
    ORIGINAL_FILE,
    TEMPORAL_FILE,
)
from model.config import (
    DELAYS_7B,
    MAX_CONTEXT,
    MAX_DELAY,
    MAX_LAYERS,
    MAX_WIDTH,
    LMConfig,
    PersonaPlexConfig,
    TransformerConfig,
    _mimi,
    config_7b,
)
from model.config_check import Section
from model.errors import CheckpointError

# Whether a checkpoint holds a file (by its name in the folder); by default, one on disk there.
Holds = Callable[[str], bool]


def _on_disk(folder: Path) -> Holds:
    return lambda name: (folder / name).is_file()


def detect_layout(folder: Path, holds: Holds | None = None) -> str:
    """CONVERTED or ORIGINAL; CheckpointError when the folder is neither. `holds`: which files
    the checkpoint has, when not all of them are on disk (a repo's list of its files)."""
    holds = holds or _on_disk(folder)
    if holds(ORIGINAL_FILE):
        return ORIGINAL
    if holds(CONFIG_FILE):
        return CONVERTED
    if holds(TEMPORAL_FILE):
        raise CheckpointError(
            f"{folder} lacks {CONFIG_FILE}, which a converted PersonaPlex checkpoint needs next to {TEMPORAL_FILE}."
        )
    raise CheckpointError(
        f"{folder} is not a PersonaPlex checkpoint: it has neither {CONFIG_FILE} with {TEMPORAL_FILE} (converted MLX layout) nor {ORIGINAL_FILE} (original layout)."
    )


def read_json(path: Path) -> Any:
    """The JSON value in `path`; CheckpointError (one sentence) if it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno})."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} could not be read ({error}).") from None


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object.")
    return data


def moshi_hidden(dim_feedforward: int, dim: int) -> int:
    """Hidden size of Moshi's ActivationGating for its `dim_feedforward` argument."""
    return (21 * dim) // 8 if dim_feedforward == 4 * dim else (2 * dim_feedforward) // 3


def config_from_moshi_kwargs(data: dict[str, Any]) -> PersonaPlexConfig:
    """A PersonaPlexConfig from Moshi's LM kwargs (the schema of Kyutai's config.json).

    Values are checked like `PersonaPlexConfig.from_dict`'s: CheckpointError names a bad key."""
    s = Section.top(data)
    base = config_7b()
    dim, heads = (
        s.integer("dim", None, high=MAX_WIDTH),
        s.integer("num_heads", None, high=MAX_WIDTH),
    )
    if dim % heads or (dim // heads) % 2:
        raise s.fail("dim", f"a multiple of num_heads ({heads}) giving an even head size", dim)
    scale = s.number("hidden_scale", 4.125, positive=True)
    temporal = TransformerConfig(
        d_model=dim,
        num_heads=heads,
        num_layers=s.integer("num_layers", None, high=MAX_LAYERS),
        dim_feedforward=max(1, moshi_hidden(int(scale * dim), dim)),
        context=s.integer("context", base.lm.temporal.context, high=MAX_CONTEXT),
        max_period=s.number("max_period", 10000.0, positive=True),
    )
    d_dim = s.integer("depformer_dim", None, high=MAX_WIDTH)
    d_heads = s.integer("depformer_num_heads", None, high=MAX_WIDTH)
    if d_dim % d_heads:
        raise s.fail("depformer_dim", f"a multiple of depformer_num_heads ({d_heads})", d_dim)
    if s.has("depformer_dim_feedforward"):
        d_ff = s.integer("depformer_dim_feedforward", 0)
    else:
        d_ff = max(1, int(scale * d_dim))
    delays = s.integers("delays", DELAYS_7B, low=0, high=MAX_DELAY)
    if len(delays) < 3 or len(delays) % 2 == 0:
        raise s.fail(
            "delays", "one delay for the text and two equal sets for the audio", list(delays)
        )
    n_q = s.integer("n_q", len(delays) - 1)
    if n_q != len(delays) - 1:
        raise s.fail("n_q", f"the number of audio delays ({len(delays) - 1})", n_q)
    dep_q = s.integer("dep_q", n_q, low=n_q // 2, high=n_q)
    depformer = TransformerConfig(
        d_model=d_dim,
        num_heads=d_heads,
        num_layers=s.integer("depformer_num_layers", None, high=MAX_LAYERS),
        dim_feedforward=max(1, moshi_hidden(d_ff, d_dim)),
        context=dep_q,
        max_period=s.number("depformer_max_period", 10000.0, positive=True),
    )
    lm = LMConfig(
        temporal=temporal,
        depformer=depformer,
        text_card=s.integer("text_card", 32000),
        card=s.integer("card", 2048),
        dep_q=dep_q,
        delays=delays,
        text_pad_id=s.integer("existing_text_padding_id", 3, low=0),
        text_epad_id=s.integer("existing_text_end_padding_id", 0, low=0),
    )
    return PersonaPlexConfig(lm=lm)


# Where moshi's Mimi config keeps what the converted schema's `mimi` section holds.
_MOSHI_MIMI_KEYS = {
    "": ("sample_rate", "frame_rate", "channels"),
    "seanet": ("dimension", "n_filters", "ratios", "kernel_size", "residual_kernel_size")
    + ("last_kernel_size", "dilation_base", "compress", "n_residual_layers"),
    "transformer": ("num_heads", "num_layers", "dim_feedforward", "context", "layer_scale")
    + ("max_period",),
    "quantizer": ("n_q",),
}
_MOSHI_MIMI_RENAMED = {
    ("quantizer", "bins"): "codebook_size",
    ("quantizer", "dimension"): "codebook_dim",
}


def _moshi_mimi(folder: Path, name: Any, config: PersonaPlexConfig) -> PersonaPlexConfig:
    """`config` with the Mimi that moshi's config file `name` (in `folder`) describes."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise CheckpointError(
            f"{folder / CONFIG_FILE} is invalid: 'mimi_config_name' must be a file name in the checkpoint folder, not {name!r}."
        )
    path = folder / name
    if not path.is_file():
        raise CheckpointError(
            f"{folder / CONFIG_FILE} names the Mimi config {name}, which is not in {folder}."
        )
    data = _read_json(path)
    flat: dict[str, Any] = {}
    try:
        parts = {
            part: Section.top(data).section(part).data if part else data
            for part in _MOSHI_MIMI_KEYS
        }
        for part, keys in _MOSHI_MIMI_KEYS.items():
            flat |= {key: parts[part][key] for key in keys if key in parts[part]}
        for (part, key), ours in _MOSHI_MIMI_RENAMED.items():
            if key in parts[part]:
                flat[ours] = parts[part][key]
        mimi = _mimi(Section(flat), config.lm.n_q_agent)
        d_model = parts["transformer"].get("d_model", mimi.dimension)
        if d_model != mimi.dimension:
            raise Section(parts["transformer"], "transformer").fail(
                "d_model", f"the SEANet dimension ({mimi.dimension})", d_model
            )
    except CheckpointError as error:
        raise CheckpointError(f"{path} is invalid: {error}") from None
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path} describes an invalid Mimi ({error}).") from None
    return replace(config, mimi=mimi)


def read_config(folder: Path, layout: str) -> PersonaPlexConfig:
    """The checkpoint's PersonaPlexConfig (see the module docstring for the rules)."""
    path = folder / CONFIG_FILE
    if layout == ORIGINAL and not path.is_file():
        return config_7b()
    data = _read_json(path)
    if isinstance(data, dict) and (data.get("model_type") == "stt" or "stt_config" in data):
        raise CheckpointError(
            f"{folder} holds a speech-to-text model (Kyutai STT), not a PersonaPlex checkpoint."
        )
    try:
        if "temporal" in data:
            return PersonaPlexConfig.from_dict(data)
        moshi = config_from_moshi_kwargs(data) if layout == ORIGINAL and "dim" in data else None
    except CheckpointError as error:
        raise CheckpointError(f"{path} is invalid: {error}") from None
    except (ValueError, TypeError, KeyError) as error:  # a check missing above: still a sentence
        raise CheckpointError(f"{path} describes an invalid model ({error}).") from None
    if moshi is not None:
        name = data.get("mimi_config_name")
        return moshi if name is None else _moshi_mimi(folder, name, moshi)
    raise CheckpointError(
        f"{folder} is not a PersonaPlex checkpoint: its {CONFIG_FILE} has no 'temporal' section."
    )


def _listed(names: list[str] | tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def require_lm_files(folder: Path, layout: str, holds: Holds | None = None) -> None:
    """CheckpointError (one sentence naming them) when `folder` lacks LM weight files of `layout`;
    a config.json with none of them is no checkpoint. `holds`: as for `detect_layout`."""
    holds = holds or _on_disk(folder)
    missing = [name for name in LM_FILES[layout] if not holds(name)]
    if not missing:
        return
    if len(missing) == len(LM_FILES[layout]):
        raise CheckpointError(
            f"{folder} is not a PersonaPlex checkpoint: it has {CONFIG_FILE} but no weights (neither {_listed(LM_FILES[CONVERTED])} of the converted MLX layout nor {ORIGINAL_FILE} of the original layout)."
        )
    raise CheckpointError(
        f"{folder} is an incomplete PersonaPlex checkpoint: it lacks {_listed(missing)}, which the converted MLX layout needs next to {CONFIG_FILE}."
    )


def checkpoint_config(folder: Path, holds: Holds | None = None) -> tuple[str, PersonaPlexConfig]:
    """The layout and configuration of the checkpoint in `folder`, once its LM weight files are
    known to be there (none is read); CheckpointError with one sentence otherwise. `holds`: which
    files the checkpoint has when only its config.json was fetched (a repo's list of files)."""
    layout = detect_layout(folder, holds)
    config = read_config(folder, layout)
    require_lm_files(folder, layout, holds)
    return layout, config
