"""Compile a kernel as MLX's CUDA backend would, with nvcc, to PTX (for tests and comparisons).

`full_source` writes what MLX's `mx.fast.cuda_kernel` hands NVRTC (its prelude, the header, the
signature it declares from the input and output names, the template constants, the body), from
a record of `benchmarks.kernel_sources`. MLX's device header is replaced by a small stub (the
types a kernel's signature uses), so the PTX is ours to compare, not MLX's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_STUB = """
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/limits>
#include <cstdint>
struct Shape { int32_t d[8]; __device__ int32_t operator[](int i) const { return d[i]; } };
struct Strides { int64_t d[8]; __device__ int64_t operator[](int i) const { return d[i]; } };
"""

_PRELUDE = """
#include "mlx/backend/cuda/device/utils.cuh"

#include <cooperative_groups.h>

#define inf cuda::std::numeric_limits<float>::infinity()

"""

_TYPES = {
    "mlx.core.bfloat16": "__nv_bfloat16",
    "mlx.core.float16": "__half",
    "mlx.core.float32": "float",
    "mlx.core.uint32": "uint32_t",
    "mlx.core.int32": "int32_t",
}


def nvcc() -> str | None:
    """The nvcc on the PATH (or CUDA's usual place), None when there is none."""
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.exists() else None


def full_source(record: dict[str, Any]) -> str:
    """The translation unit MLX builds for one recorded kernel launch."""
    body = record["source"]
    lines = [
        _PRELUDE,
        record["header"],
        "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n",
    ]
    template = record.get("template") or []
    name = (
        "custom_kernel_"
        + record["name"]
        + "".join(
            "_" + (_TYPES[v].replace("__nv_", "").replace("__", "") if v in _TYPES else v)
            for _, v in template
        )
    )
    lines.append(f"__global__ void {name}(\n")
    for n, t, nd in zip(
        record["input_names"], record["input_types"], record["input_ndims"], strict=True
    ):
        lines.append(f"    const {_TYPES[t]}* {n},\n")
        if nd > 0 and f"{n}_shape" in body:
            lines.append(f"    const __grid_constant__ Shape {n}_shape,\n")
        if nd > 0 and f"{n}_strides" in body:
            lines.append(f"    const __grid_constant__ Strides {n}_strides,\n")
        if nd > 0 and f"{n}_ndim" in body:
            lines.append(f"    const __grid_constant__ int {n}_ndim,\n")
    outs = [
        f"    {_TYPES[t]}* {n}"
        for n, t in zip(record["output_names"], record["output_types"], strict=True)
    ]
    lines.append(",\n".join(outs) + ") {\n")
    for k, v in template:
        lines.append(
            f"  using {k} = {_TYPES[v]};\n" if v in _TYPES else f"  constexpr int {k} = {v};\n"
        )
    if template:
        lines.append("\n")
    lines.append(body)
    lines.append("\n}\n\n} // namespace mlx::core::cu\n")
    return "".join(lines)


def ptx(record: dict[str, Any], arch: str = "sm_90") -> str:
    """The kernel's PTX from nvcc, its name (and the digest in it) and nvcc's comment lines
    left out."""
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp, "mlx/backend/cuda/device")
        stub.mkdir(parents=True)
        (stub / "utils.cuh").write_text(_STUB)
        src = Path(tmp, "k.cu")
        src.write_text(full_source(record))
        out = Path(tmp, "k.ptx")
        subprocess.run(
            [
                nvcc() or "nvcc",
                "--ptx",
                f"-arch={arch}",
                "-std=c++17",
                "-I",
                tmp,
                "-o",
                str(out),
                str(src),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        text = out.read_text()
    # the persistent kernels' names end in a digest of their source (12 hex digits)
    text = re.sub(r"(custom_kernel_ppx_[a-z]+)_[0-9a-f]{12}", r"\1_000000000000", text)
    text = re.sub(r"_ZN3mlx4core2cu\d+custom_kernel_[a-z0-9_]+", "KERNEL", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
