"""Load the PersonaPlex LM from a checkpoint in either layout, checking it first.

The layouts: docs/checkpoint-layouts.md.

`load_lm(model)` takes a folder or a Hugging Face repo id (see `model.checkpoints.hub.resolve_model`),
checks every LM file against `model.checkpoints.layout.expected_layout` (one clear sentence per problem),
and builds the LM layer by layer from lazily loaded tensors, so that no second copy of the
weights is ever alive. Quantized checkpoints are used as stored; a float checkpoint can be
quantized on load.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from model.checkpoints.config_io import detect_layout, read_config, require_lm_files
from model.checkpoints.hub import resolve_model
from model.checkpoints.layout import (
    CONFIG_FILE,
    CONVERTED,
    Module,
    TensorSpec,
    component_of,
    expected_layout,
    lm_modules,
)
from model.checkpoints.safetensors_io import TensorHeader, dtype_name, load_safetensors, read_header
from model.config import PersonaPlexConfig, QuantizationConfig
from model.errors import CheckpointError
from model.lm.layers import MultiLinear
from model.lm.model import LM

Tensors = dict[str, dict[str, mx.array]]  # file -> key -> (lazy) array


def _describe(spec: TensorSpec) -> str:
    names = " or ".join(dtype_name(code) for code in spec.dtypes)
    return f"{names} {list(spec.shape)}"


def check_file(path: Path, specs: dict[str, TensorSpec]) -> dict[str, TensorHeader]:
    """Compare a safetensors file's header with what the layout expects; raise on the first problem."""
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} is an incomplete PersonaPlex checkpoint: it lacks {path.name}."
        )
    header = read_header(path)
    missing = [key for key in specs if key not in header]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        key = missing[0]
        raise CheckpointError(
            f"{path} has no tensor '{key}'{more}, expected {_describe(specs[key])}; it is incomplete or from another model."
        )
    extra = [key for key in header if key not in specs]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        key, got = extra[0], header[extra[0]]
        raise CheckpointError(
            f"{path} has an unexpected tensor '{key}' ({got.dtype_name} {list(got.shape)}){more}; it does not match this model's configuration."
        )
    for key, spec in specs.items():
        got = header[key]
        if got.shape != spec.shape:
            raise CheckpointError(
                f"Tensor '{key}' in {path} has shape {list(got.shape)}, expected {list(spec.shape)}; the weights do not match the configuration."
            )
        if got.dtype not in spec.dtypes:
            raise CheckpointError(
                f"Tensor '{key}' in {path} is {got.dtype_name}, expected {_describe(spec)}."
            )
    return header


def _quantization_for(
    config: PersonaPlexConfig, layout: str, quantize: int | None, group_size: int
) -> QuantizationConfig | None:
    stored = config.quantization if layout == CONVERTED else None
    if stored is not None:
        if quantize is not None and quantize != stored.bits:
            raise CheckpointError(
                f"This checkpoint is already quantized to {stored.bits} bits; it cannot be re-quantized to {quantize} bits."
            )
        return stored
    if quantize is None:
        return None
    try:
        return QuantizationConfig(bits=quantize, group_size=group_size)
    except ValueError as error:
        raise CheckpointError(f"Cannot quantize to {quantize} bits ({error}).") from None


def loaded_quantization(
    folder: Path, quantize: int | None = None, group_size: int = 64
) -> QuantizationConfig | None:
    """The quantization `load_lm(folder, quantize=..., group_size=...)` gives the projections:
    the converted checkpoint's own, or `quantize` at `group_size` (None: float). Reads only
    config.json; raises CheckpointError as the load would."""
    layout = detect_layout(folder)
    return _quantization_for(read_config(folder, layout), layout, quantize, group_size)


def _module_tensors(
    module: Module,
    stored: dict[str, tuple[TensorSpec, mx.array]],
    quant: QuantizationConfig | None,
    dtype: mx.Dtype,
) -> list[tuple[str, mx.array]]:
    """The (parameter path, array) pairs of one module, cast and (if asked) quantized."""
    if module.kind == "norm":
        ((target, arr),) = [(s.target, a) for s, a in stored.values()]
        return [(target, arr.astype(mx.float32))]
    parts = {spec.target.rsplit(".", 1)[1]: arr for spec, arr in stored.values()}
    if not module.quantized(quant):
        return [(f"{module.name}.weight", _cast(parts["weight"], dtype))]
    assert quant is not None
    if "scales" not in parts:  # float weights quantized on load (scales computed in float32)
        weight = parts["weight"].astype(mx.float32)
        w, scales, biases = mx.quantize(weight, quant.group_size, quant.bits)
        parts = {"weight": w, "scales": scales, "biases": biases}
    return [
        (f"{module.name}.weight", parts["weight"]),
        (f"{module.name}.scales", _cast(parts["scales"], dtype)),
        (f"{module.name}.biases", _cast(parts["biases"], dtype)),
    ]


def default_dtype() -> mx.Dtype:
    """bfloat16 on a GPU (Metal, CUDA); float32 on the CPU, where bfloat16 math is ~10x slower."""
    return mx.bfloat16 if mx.default_device().type == mx.DeviceType.gpu else mx.float32


def _cast(arr: mx.array, dtype: mx.Dtype) -> mx.array:
    return arr if arr.dtype == dtype else arr.astype(dtype)


def quantize_lm(lm: LM, quant: QuantizationConfig) -> None:
    """Swap the projections of `quant.quantized_components` for quantized ones (in place)."""

    def wanted(path: str, module: nn.Module) -> bool:
        is_linear = isinstance(module, (nn.Linear, MultiLinear))
        return is_linear and component_of(path) in quant.quantized_components

    nn.quantize(lm, quant.group_size, quant.bits, class_predicate=wanted)


def lm_from_tensors(
    config: PersonaPlexConfig,
    tensors: Tensors,
    layout: str,
    *,
    dtype: mx.Dtype | None = None,
    quantize: int | None = None,
    group_size: int = 64,
) -> tuple[LM, PersonaPlexConfig]:
    """Build the LM from tensors laid out as `expected_layout(config, layout)` (already checked).

    Consumes `tensors` (entries are popped, so lazily loaded arrays are freed once used) and
    evaluates module by module. Returns the LM and the config updated with the quantization
    actually in effect. dtype None means `default_dtype()`.
    """
    dtype = dtype or default_dtype()
    quant = _quantization_for(config, layout, quantize, group_size)
    if quant is not None:
        try:
            expected_layout(replace(config, quantization=quant), CONVERTED)
        except ValueError as error:
            raise CheckpointError(
                f"Cannot quantize this model to {quant.bits} bits: {error}."
            ) from None
    lm = LM(config.lm)
    if quant is not None:
        quantize_lm(lm, quant)
    index = {
        spec.target: (file, key, spec)
        for file, specs in expected_layout(config, layout).items()
        for key, spec in specs.items()
    }
    by_module: dict[str, dict[str, tuple[TensorSpec, mx.array]]] = {}
    for target, (file, key, spec) in index.items():
        by_module.setdefault(target.rsplit(".", 1)[0], {})[key] = (spec, tensors[file].pop(key))
    weights: list[tuple[str, mx.array]] = []
    for module in lm_modules(config.lm):
        pairs = _module_tensors(module, by_module.pop(module.name), quant, dtype)
        mx.eval([arr for _, arr in pairs])
        weights += pairs
    lm.load_weights(weights, strict=True)
    del weights, pairs  # the stacks `prepare` builds replace these arrays: free them as it goes
    lm.eval()
    lm.prepare()
    return lm, replace(config, quantization=quant)


def load_lm(
    model: str | os.PathLike[str] | None = None,
    *,
    dtype: mx.Dtype | None = None,
    quantize: int | None = None,
    group_size: int = 64,
    tqdm_class: Any = None,
) -> tuple[LM, PersonaPlexConfig]:
    """Load the LM from a checkpoint folder or Hugging Face repo id (default: the 4-bit model).

    dtype: activation dtype (float weights, embeddings and quantization scales are cast to it;
    norms stay float32); None picks `default_dtype()` (bfloat16 on a GPU, float32 on the CPU). quantize: 4 or 8 to quantize a float checkpoint's projections on load
    (group size 64), layer by layer. Raises CheckpointError / ModelNotFoundError with one
    sentence on any problem.
    """
    folder = resolve_model(model, tqdm_class=tqdm_class)
    layout = detect_layout(folder)
    config = read_config(folder, layout)
    try:
        expected = expected_layout(config, layout)
    except ValueError as error:
        raise CheckpointError(f"{folder / CONFIG_FILE} is inconsistent: {error}.") from None
    require_lm_files(folder, layout)  # config.json's own problems first, then missing files
    for name, specs in expected.items():
        check_file(folder / name, specs)
    tensors = {name: load_safetensors(folder / name) for name in expected}
    return lm_from_tensors(
        config, tensors, layout, dtype=dtype, quantize=quantize, group_size=group_size
    )
