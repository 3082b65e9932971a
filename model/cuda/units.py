"""The CUDA C++ translation units of our kernels as ppx-tui compiles them itself: what MLX's
`mx.fast.cuda_kernel` would build, with a lean prelude and an `extern "C"` signature
(docs/cuda-kernels.md §Kernels compiled ahead)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

_TYPES = {
    mx.bfloat16: ("__nv_bfloat16", "bfloat16"),
    mx.float16: ("__half", "float16"),
    mx.float32: ("float", "float32"),
    mx.int32: ("int32_t", "int32"),
    mx.uint32: ("uint32_t", "uint32"),
    mx.int64: ("int64_t", "int64"),
    mx.uint8: ("uint8_t", "uint8"),
    mx.bool_: ("bool", "bool"),
}

PRELUDE = """// Written by ppx-tui's model/cuda/units.py (docs/cuda-kernels.md).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/cstdint>
#include <cuda/std/cstddef>
using cuda::std::int32_t;
using cuda::std::int64_t;
using cuda::std::uint32_t;
using cuda::std::uint8_t;
using cuda::std::size_t;
"""


def cuda_type(dtype: mx.Dtype) -> str:
    """The CUDA C++ type of an MLX dtype."""
    return _TYPES[dtype][0]


def template_suffix(template: list[tuple[str, Any]]) -> str:
    """What MLX appends to a kernel's name for its template arguments (`_bfloat16_4_64`)."""
    parts = []
    for _, v in template:
        if isinstance(v, mx.Dtype):
            parts.append(_TYPES[v][1])
        elif isinstance(v, bool):
            parts.append("t" if v else "f")
        else:
            parts.append(str(int(v)))
    return "".join(f"_{p}" for p in parts)


def translation_unit(
    name: str,
    header: str,
    body: str,
    inputs: list[tuple[str, mx.Dtype, int]],
    outputs: list[tuple[str, mx.Dtype]],
    template: list[tuple[str, Any]],
) -> tuple[str, str]:
    """(the kernel's symbol, the whole CUDA C++ source) for inputs of these (name, dtype, ndim).

    The same kernel as MLX's `cuda_kernel` builds, declared `extern "C"`: inputs as `const T*`,
    outputs as `T*`, then `int <input>_shape_<i>` for each dimension of each input whose shape
    the body reads (rebuilt as a local `<input>_shape[]`), and the template as constants."""
    symbol = f"custom_kernel_{name}{template_suffix(template)}"
    params = [f"    const {cuda_type(d)}* {n}" for n, d, _ in inputs]
    params += [f"    {cuda_type(d)}* {n}" for n, d in outputs]
    locals_ = []
    for n, _, ndim in inputs:
        if f"{n}_strides" in body or f"{n}_ndim" in body:
            raise ValueError(f"{name}: a precompiled kernel gets no strides or ndim ({n})")
        if f"{n}_shape" in body and ndim > 0:
            dims = [f"{n}_shape_{i}" for i in range(ndim)]
            params += [f"    int {d}" for d in dims]
            locals_.append(f"  const int {n}_shape[{ndim}] = {{{', '.join(dims)}}};\n")
    consts = []
    for k, v in template:
        if isinstance(v, mx.Dtype):
            consts.append(f"  using {k} = {cuda_type(v)};\n")
        elif isinstance(v, bool):
            consts.append(f"  constexpr bool {k} = {'true' if v else 'false'};\n")
        else:
            consts.append(f"  constexpr int {k} = {int(v)};\n")
    source = (
        PRELUDE
        + header
        + f'\nextern "C" __global__ void {symbol}(\n'
        + ",\n".join(params)
        + ") {\n"
        + "".join(locals_)
        + "".join(consts)
        + body
        + "\n}\n"
    )
    return symbol, source


def stand_in_unit(symbol: str, inputs: int, outputs: int, scalars: int) -> tuple[str, str]:
    """(symbol, source) of an empty kernel taking `inputs` + `outputs` pointers and `scalars`
    ints, as a kernel of `translation_unit` does."""
    params = [f"const void* i{k}" for k in range(inputs)]
    params += [f"void* o{k}" for k in range(outputs)]
    params += [f"int s{k}" for k in range(scalars)]
    stand_in = f"{symbol}_stand_in"
    return stand_in, f'extern "C" __global__ void {stand_in}({", ".join(params)}) {{}}\n'
