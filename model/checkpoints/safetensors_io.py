"""Read and check safetensors files before MLX loads them (header, sizes, truncation).

Shared by every loader in `model` (the LM here, Mimi in `model/mimi`): problems end in a
`CheckpointError` whose message is one sentence naming the file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from model.errors import CheckpointError

# safetensors dtype code -> (bytes per element, readable name)
DTYPES: dict[str, tuple[int, str]] = {
    "BOOL": (1, "bool"),
    "U8": (1, "uint8"),
    "I8": (1, "int8"),
    "U16": (2, "uint16"),
    "I16": (2, "int16"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "U32": (4, "uint32"),
    "I32": (4, "int32"),
    "F32": (4, "float32"),
    "U64": (8, "uint64"),
    "I64": (8, "int64"),
    "F64": (8, "float64"),
}
_MAX_HEADER = 100 * 1024 * 1024
_REDOWNLOAD = "delete it and download the model again"


@dataclass(frozen=True)
class TensorHeader:
    """One tensor's entry in a safetensors header."""

    dtype: str  # safetensors code, e.g. "F16", "U32"
    shape: tuple[int, ...]
    start: int  # byte range in the data section
    end: int

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)


def dtype_name(code: str) -> str:
    """Readable name of a safetensors dtype code ("F16" -> "float16")."""
    return DTYPES.get(code, (0, code))[1]


def read_header(path: str | Path) -> dict[str, TensorHeader]:
    """Parse and check the header of a safetensors file, without reading its data.

    Raises CheckpointError when the file is missing, not safetensors, malformed, or shorter
    than its header says (a truncated download).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint file {path} does not exist.") from None
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} is not a regular file.")
    if size < 8:
        raise CheckpointError(
            f"{path} is not a safetensors file (it has only {size} bytes); {_REDOWNLOAD}."
        )
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER:
            raise CheckpointError(
                f"{path} is not a safetensors file (its header length {n} is implausible)."
            )
        if n > size - 8:
            raise CheckpointError(
                f"{path} is truncated: its header alone needs {n + 8} bytes but the file has {size}; {_REDOWNLOAD}."
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(
            f"{path} is not a safetensors file (its header is not JSON); {_REDOWNLOAD}."
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path} is not a safetensors file (its header is not a JSON object)."
        )
    header.pop("__metadata__", None)
    tensors = {key: _parse_entry(path, key, entry) for key, entry in header.items()}
    needed = 8 + n + max((t.end for t in tensors.values()), default=0)
    if needed > size:
        raise CheckpointError(
            f"{path} is truncated: it has {size} bytes but its tensors need {needed}; {_REDOWNLOAD}."
        )
    return tensors


def _parse_entry(path: Path, key: str, entry: object) -> TensorHeader:
    bad = CheckpointError(f"{path} has a malformed header entry for tensor '{key}'; {_REDOWNLOAD}.")
    if not isinstance(entry, dict):
        raise bad
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list):
        raise bad
    if len(offsets) != 2 or not all(isinstance(v, int) and v >= 0 for v in [*shape, *offsets]):
        raise bad
    if dtype not in DTYPES:
        raise CheckpointError(f"Tensor '{key}' in {path} has the unsupported dtype {dtype}.")
    start, end = offsets
    nbytes = math.prod(shape) * DTYPES[dtype][0]
    if end - start != nbytes:
        raise CheckpointError(
            f"Tensor '{key}' in {path} spans {end - start} bytes but {dtype_name(dtype)} {shape} needs {nbytes}; {_REDOWNLOAD}."
        )
    return TensorHeader(dtype=dtype, shape=tuple(shape), start=start, end=end)


def load_safetensors(path: str | Path) -> dict[str, mx.array]:
    """Check a safetensors file (see `read_header`) and load it lazily with `mx.load`.

    Tensors are read from disk when first evaluated; drop the returned dict's references as you
    consume them so that no second copy stays alive.
    """
    read_header(path)
    try:
        return mx.load(str(path))
    except (RuntimeError, ValueError, OSError) as error:
        raise CheckpointError(f"{path} could not be read ({error}); {_REDOWNLOAD}.") from None
