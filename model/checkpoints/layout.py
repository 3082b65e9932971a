"""The LM's checkpoint layouts: which file holds which tensor, of which shape and dtype.

The layouts: docs/checkpoint-layouts.md.

`expected_layout` is the single source for validation, loading and writing: every tensor of a
layout maps to a parameter path of `model.lm.model.LM` (its canonical name).
"""

from __future__ import annotations

from dataclasses import dataclass

from model.config import LMConfig, PersonaPlexConfig, QuantizationConfig

CONVERTED = "converted"  # aufklarer/PersonaPlex-7B-MLX-*: config.json + three LM safetensors
ORIGINAL = "original"  # nvidia/personaplex-7b-v1: model.safetensors with PyTorch names

TEMPORAL_FILE = "temporal.safetensors"
DEPFORMER_FILE = "depformer.safetensors"
EMBEDDINGS_FILE = "embeddings.safetensors"
ORIGINAL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# The LM's weight files of each layout (each must be there; Mimi, tokenizer and voices aside).
LM_FILES = {
    CONVERTED: (TEMPORAL_FILE, DEPFORMER_FILE, EMBEDDINGS_FILE),
    ORIGINAL: (ORIGINAL_FILE,),
}

FLOAT_CONVERTED = ("F16", "BF16", "F32")  # written as float16
FLOAT_ORIGINAL = ("BF16", "F16", "F32")  # written as bfloat16
QUANT_WEIGHT = ("U32",)


@dataclass(frozen=True)
class Module:
    """A module holding checkpoint tensors: a linear (`weight`), a norm (`alpha`) or an embedding."""

    name: str  # canonical module path in `LM`, e.g. "transformer.layers.0.self_attn.in_proj"
    shape: tuple[int, ...]  # float shape of its tensor ([out, in] for linears)
    kind: str  # "linear", "head" (a linear never quantized), "norm" or "embedding"

    @property
    def component(self) -> str:
        """Which part it belongs to: "temporal", "depformer" or "embeddings"."""
        if self.name.startswith("transformer.") or self.name == "out_norm":
            return "temporal"
        if self.name.startswith(("depformer.", "depformer_in.")):
            return "depformer"
        return "embeddings"

    def quantized(self, quantization: QuantizationConfig | None) -> bool:
        return (
            quantization is not None
            and self.kind == "linear"
            and self.component in quantization.quantized_components
        )


@dataclass(frozen=True)
class TensorSpec:
    """What one stored tensor must be; `dtypes[0]` is what writers produce."""

    target: str  # parameter path in `LM`, e.g. "transformer.layers.0.self_attn.in_proj.scales"
    shape: tuple[int, ...]
    dtypes: tuple[str, ...]  # accepted safetensors dtype codes

    @property
    def dtype(self) -> str:
        return self.dtypes[0]


def lm_modules(cfg: LMConfig) -> list[Module]:
    """Every tensor-holding module of the LM, in a stable order (layer by layer)."""
    t, d = cfg.temporal, cfg.depformer
    dt, dd = t.d_model, d.d_model
    mods = [Module("text_emb", (cfg.text_card + 1, dt), "embedding")]
    mods += [Module(f"emb.{i}", (cfg.card + 1, dt), "embedding") for i in range(cfg.n_audio)]
    mods.append(Module("text_linear", (cfg.text_card, dt), "head"))
    for i in range(t.num_layers):
        p = f"transformer.layers.{i}"
        mods += [
            Module(f"{p}.self_attn.in_proj", (3 * dt, dt), "linear"),
            Module(f"{p}.self_attn.out_proj", (dt, dt), "linear"),
            Module(f"{p}.gating.linear_in", (2 * t.dim_feedforward, dt), "linear"),
            Module(f"{p}.gating.linear_out", (dt, t.dim_feedforward), "linear"),
            Module(f"{p}.norm1", (1, 1, dt), "norm"),
            Module(f"{p}.norm2", (1, 1, dt), "norm"),
        ]
    mods.append(Module("out_norm", (1, 1, dt), "norm"))
    mods += [Module(f"depformer_in.{k}", (dd, dt), "linear") for k in range(cfg.dep_q)]
    mods.append(Module("depformer_text_emb", (cfg.text_card + 1, dd), "embedding"))
    mods += [
        Module(f"depformer_emb.{k}", (cfg.card + 1, dd), "embedding") for k in range(cfg.dep_q - 1)
    ]
    for i in range(d.num_layers):
        p = f"depformer.layers.{i}"
        mods += [
            Module(f"{p}.self_attn.in_proj", (cfg.dep_q * 3 * dd, dd), "linear"),
            Module(f"{p}.self_attn.out_proj", (cfg.dep_q * dd, dd), "linear"),
        ]
        for k in range(cfg.dep_q):
            mods += [
                Module(f"{p}.gating.{k}.linear_in", (2 * d.dim_feedforward, dd), "linear"),
                Module(f"{p}.gating.{k}.linear_out", (dd, d.dim_feedforward), "linear"),
            ]
        mods += [Module(f"{p}.norm1", (1, 1, dd), "norm"), Module(f"{p}.norm2", (1, 1, dd), "norm")]
    mods += [Module(f"linears.{k}", (cfg.card, dd), "head") for k in range(cfg.dep_q)]
    return mods


def _suffix_key(module_key: str, suffix: str) -> str:
    # Packed attention projections are stored as `in_proj_weight` (PyTorch's MHA naming).
    if module_key.endswith(".self_attn.in_proj"):
        return f"{module_key}_{suffix}"
    return f"{module_key}.{suffix}"


def converted_location(module: Module) -> tuple[str, str]:
    """(file, key prefix) of a module in the converted layout: prefixes stripped, files split."""
    name = module.name
    if module.component == "temporal":
        return TEMPORAL_FILE, name.removeprefix("transformer.")
    if module.component == "depformer":
        return DEPFORMER_FILE, name.removeprefix("depformer.")
    return EMBEDDINGS_FILE, name


def _tensor_names(module: Module) -> list[str]:
    return ["alpha"] if module.kind == "norm" else ["weight"]


def quantized_shapes(shape: tuple[int, ...], q: QuantizationConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of MLX's affine quantization of an [out, in] weight."""
    out, inp = shape
    if inp % q.group_size or (inp * q.bits) % 32:
        raise ValueError(
            f"an input size of {inp} cannot be quantized with group size {q.group_size}"
        )
    return {
        "weight": (out, inp * q.bits // 32),
        "scales": (out, inp // q.group_size),
        "biases": (out, inp // q.group_size),
    }


def expected_layout(
    config: PersonaPlexConfig, layout: str = CONVERTED
) -> dict[str, dict[str, TensorSpec]]:
    """file -> key -> TensorSpec of a checkpoint of `config` in `layout`.

    The converted layout follows `config.quantization` (None: float16); the original layout is
    always unquantized (bfloat16 as published).
    """
    if layout not in (CONVERTED, ORIGINAL):
        raise ValueError(f"unknown layout {layout!r}")
    quant = config.quantization if layout == CONVERTED else None
    files: dict[str, dict[str, TensorSpec]] = {name: {} for name in LM_FILES[layout]}
    for module in lm_modules(config.lm):
        if layout == CONVERTED:
            file, key = converted_location(module)
        else:
            file, key = ORIGINAL_FILE, module.name
        if quant is not None and module.quantized(quant):
            for suffix, shape in quantized_shapes(module.shape, quant).items():
                dtypes = QUANT_WEIGHT if suffix == "weight" else FLOAT_CONVERTED
                target = f"{module.name}.{suffix}"
                files[file][_suffix_key(key, suffix)] = TensorSpec(target, shape, dtypes)
            continue
        floats = FLOAT_CONVERTED if layout == CONVERTED else FLOAT_ORIGINAL
        for suffix in _tensor_names(module):
            target = f"{module.name}.{suffix}"
            files[file][_suffix_key(key, suffix)] = TensorSpec(target, module.shape, floats)
    return files


def component_of(path: str) -> str:
    """Component ("temporal", "depformer", "embeddings") of a module path in `LM`."""
    return Module(path, (), "").component
