"""Lay out LM weights in a checkpoint layout (quantizing where it says) and write checkpoint folders."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from model.checkpoints.layout import CONFIG_FILE, CONVERTED, expected_layout
from model.config import PersonaPlexConfig

Tensors = dict[str, dict[str, mx.array]]  # file -> key -> array

CODE_TO_DTYPE: dict[str, mx.Dtype] = {
    "F16": mx.float16,
    "BF16": mx.bfloat16,
    "F32": mx.float32,
    "U32": mx.uint32,
}


def layout_tensors(
    weights: dict[str, mx.array], config: PersonaPlexConfig, layout: str = CONVERTED
) -> Tensors:
    """Float weights by parameter path ("<module>.weight" / "<module>.alpha") -> layout files.

    Projections the layout stores quantized (`config.quantization`) are quantized with
    `mx.quantize`; every other tensor is cast to the layout's dtype (float16 converted,
    bfloat16 original). Lazy: nothing is evaluated here.
    """
    out: Tensors = {}
    quantized: dict[str, tuple[mx.array, mx.array, mx.array]] = {}
    for file, specs in expected_layout(config, layout).items():
        out[file] = {}
        for key, spec in specs.items():
            module, part = spec.target.rsplit(".", 1)
            if part in ("scales", "biases") or spec.dtype == "U32":
                if module not in quantized:
                    q = config.quantization
                    assert q is not None
                    quantized[module] = mx.quantize(
                        weights[f"{module}.weight"], q.group_size, q.bits
                    )
                w, scales, biases = quantized[module]
                arr = {"weight": w, "scales": scales, "biases": biases}[part]
            else:
                arr = weights[spec.target]
            out[file][key] = arr.astype(CODE_TO_DTYPE[spec.dtype])
    return out


def write_checkpoint(
    folder: str | Path,
    config: PersonaPlexConfig,
    tensors: Tensors,
    *,
    write_config: bool = True,
) -> Path:
    """Write `tensors` (file -> key -> array) and, unless told not to, config.json into `folder`.

    config.json uses the converted schema (`PersonaPlexConfig.to_dict`), which the loader also
    reads next to an original-layout model.safetensors.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if write_config:
        text = json.dumps(config.to_dict(), indent=2)
        (folder / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
    for file, arrays in tensors.items():
        mx.save_safetensors(str(folder / file), arrays, metadata={"format": "mlx"})
    return folder
