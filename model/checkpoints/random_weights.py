"""Random LM weights of any configuration, in either checkpoint layout, for tests and benchmarks.

`random_lm(config_7b(), ...)` builds the exact 7B shape in memory without writing files
(quantized projections are drawn directly as random packed integers, so it is fast);
`random_weights` + `layout_tensors` + `write_checkpoint` make checkpoint folders for tests.
"""

from __future__ import annotations

import math

import mlx.core as mx

from model.checkpoints.layout import CONVERTED, expected_layout, lm_modules
from model.checkpoints.load import lm_from_tensors
from model.checkpoints.write import CODE_TO_DTYPE, Tensors
from model.config import PersonaPlexConfig
from model.lm.model import LM
from model.sampling import split_key


def _std(shape: tuple[int, ...]) -> float:
    # Moshi's initialisation scale: 1/sqrt(fan-in) for linears, 1/sqrt(dim) for embeddings.
    return 1.0 / math.sqrt(shape[-1])


def _random_uint32(shape: tuple[int, ...], key: mx.array) -> mx.array:
    """Uniform random 32-bit words (two 16-bit halves: MLX's randint is exact at that width)."""
    hi, lo = mx.random.randint(0, 1 << 16, (2, *shape), dtype=mx.uint32, key=key)
    return (hi << 16) | lo


def random_weights(config: PersonaPlexConfig, *, seed: int = 0) -> dict[str, mx.array]:
    """Float32 weights of every LM module by parameter path (lazy; norms near 1)."""
    modules = lm_modules(config.lm)
    keys = split_key(mx.random.key(seed), len(modules))
    out: dict[str, mx.array] = {}
    for i, module in enumerate(modules):
        noise = mx.random.normal(module.shape, key=keys[i])
        if module.kind == "norm":
            out[f"{module.name}.alpha"] = 1.0 + 0.1 * noise
        else:
            out[f"{module.name}.weight"] = _std(module.shape) * noise
    return out


def random_tensors(config: PersonaPlexConfig, layout: str = CONVERTED, *, seed: int = 0) -> Tensors:
    """Random tensors straight in `layout` (lazy): quantized projections as random packed
    integers with scales/biases giving about Moshi's weight scale, floats as scaled normals."""
    layout_specs = expected_layout(config, layout)
    keys = split_key(mx.random.key(seed), sum(len(s) for s in layout_specs.values()))
    bits = config.quantization.bits if config.quantization else 0
    out: Tensors = {}
    n = 0
    for file, specs in layout_specs.items():
        out[file] = {}
        for name, spec in specs.items():
            k = keys[n]
            n += 1
            dtype = CODE_TO_DTYPE[spec.dtype]
            part = spec.target.rsplit(".", 1)[1]
            levels = (1 << bits) - 1
            if spec.dtype == "U32":
                arr = _random_uint32(spec.shape, k)
            elif part in ("scales", "biases"):
                fan_in = spec.shape[-1] * config.quantization.group_size  # type: ignore[union-attr]
                scale = math.sqrt(12.0 / fan_in) / levels
                value = scale if part == "scales" else -scale * levels / 2
                arr = mx.full(spec.shape, value, dtype=dtype)
            elif part == "alpha":
                arr = mx.ones(spec.shape, dtype=dtype)
            else:
                arr = (_std(spec.shape) * mx.random.normal(spec.shape, key=k)).astype(dtype)
            out[file][name] = arr
    return out


def random_lm(config: PersonaPlexConfig, *, dtype: mx.Dtype | None = None, seed: int = 0) -> LM:
    """An LM of `config` (quantized per `config.quantization`) with random weights, in memory."""
    lm, _ = lm_from_tensors(config, random_tensors(config, seed=seed), CONVERTED, dtype=dtype)
    return lm
