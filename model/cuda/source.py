"""The kernels' CUDA sources (the .cu/.cuh files under src/) and how they are handed to MLX.

`mx.fast.cuda_kernel` takes a header and the kernel's body as strings and writes the kernel's
signature between them. Each kernel's header is `common.cuh` followed by the kernel's own
`.cuh`; its body is its `.cu`. The persistent kernels add one generated prelude (`prelude`):
their constants, written into the body instead of template arguments so that the kernel's name
is known and its declaration can carry `__launch_bounds__` (docs/cuda-kernels.md §Persistent
kernels), and any macros a kernel asks for (the temporal kernel's ring pointers).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import mlx.core as mx

from model.cuda import precompiled

COMMON = "common.cuh"
CUDA_TYPES = {mx.bfloat16: "__nv_bfloat16", mx.float16: "__half", mx.float32: "float"}


def read(name: str) -> str:
    """The text of `src/<name>` (package data)."""
    return resources.files("model.cuda").joinpath("src", name).read_text()


def header(own: str | None = None) -> str:
    """A kernel's header: the shared `common.cuh`, then the kernel's own `.cuh` (if any)."""
    return read(COMMON) + (read(own) if own else "")


def prelude(consts: list[tuple[str, Any]]) -> str:
    """The constants as the start of a body: dtypes as `using`, ints as `constexpr int`."""
    return "\n".join(
        f"  using {k} = {CUDA_TYPES[v]};"
        if isinstance(v, mx.Dtype)
        else f"  constexpr int {k} = {int(v)};"
        for k, v in consts
    )


def bounded_source(
    name: str,
    body: str,
    head: str,
    consts: list[tuple[str, Any]],
    threads: int,
    macros: dict[str, str] | None = None,
) -> tuple[str, str, str]:
    """(name, source, header) of a kernel with `__launch_bounds__(threads, 1)`: the constants
    written into the source (`prelude`), the name made unique by a digest, a macro that puts the
    launch bounds on the declaration (MLX declares `__global__ void custom_kernel_<name>(...)`
    right after the header; the macro is undefined at the end of the body, before NVRTC looks
    the kernel up by name), and `macros` defined at the end of the header."""
    digest = hashlib.sha1(repr((body, head, consts, threads, macros)).encode()).hexdigest()[:12]
    name = f"{name}_{digest}"
    full = f"custom_kernel_{name}"
    defines = "".join(f"\n#define {k} {v}\n" for k, v in (macros or {}).items())
    bounds = f"\n#define {full} __launch_bounds__({threads}, 1) {full}\n"
    source = prelude(consts) + "\n" + body + f"\n#undef {full}\n"
    return name, source, head + defines + bounds


def bounded_kernel(
    name: str,
    inputs: list[str],
    outputs: list[str],
    body: str,
    head: str,
    consts: list[tuple[str, Any]],
    threads: int,
    macros: dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """`mx.fast.cuda_kernel` of `bounded_source` (call it without `template`), or its
    precompiled stand-in (`precompiled.make_kernel`)."""
    name, source, head = bounded_source(name, body, head, consts, threads, macros)
    return precompiled.make_kernel(
        name=name,
        input_names=inputs,
        output_names=outputs,
        source=source,
        header=head,
        **kwargs,
    )
