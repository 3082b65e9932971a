"""Read tensors from a PyTorch `.pt` file into numpy without PyTorch and without running its pickle.

Only the few globals that a plain `torch.save({name: tensor})` writes are accepted (tensor
rebuilding, typed storages, OrderedDict); anything else is refused, so a hostile file cannot
execute code. Used for the original checkpoint's voice presets (`voices.tgz`).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np

from model.errors import CheckpointError

# numpy dtype of each typed storage; bfloat16 is read as uint16 and widened afterwards.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


class _Storage:
    def __init__(self, data: np.ndarray, bfloat16: bool) -> None:
        self.data = data
        self.bfloat16 = bfloat16


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(
    storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any
) -> np.ndarray:
    item = storage.data.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.data[offset:],
        shape=tuple(size),
        strides=tuple(s * item for s in stride),
        writeable=False,
    )
    out = np.array(view)  # own the memory, contiguous
    return _bf16_to_f32(out) if storage.bfloat16 else out


def _ordered_dict(*args: Any) -> OrderedDict:
    return OrderedDict(*args)


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return _ordered_dict
        raise CheckpointError(
            f"{self._source} holds an object of type {module}.{name}; only plain tensors are read."
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"{self._source} has an unsupported storage reference.")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._source} has an unsupported storage type.")
        raw = self._archive.read(f"{self._prefix}data/{key}")
        dtype = _STORAGE_DTYPES[storage_type.name]
        return _Storage(np.frombuffer(raw, dtype=dtype), storage_type.name == "BFloat16Storage")


def read_torch_tensors(data: bytes, source: str = "the .pt file") -> dict[str, np.ndarray]:
    """The `{name: array}` dict saved by `torch.save` (zip format), read safely."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
    except (zipfile.BadZipFile, StopIteration):
        raise CheckpointError(f"{source} is not a PyTorch zip archive.") from None
    prefix = pkl[: -len("data.pkl")]
    try:
        obj = _SafeUnpickler(archive.read(pkl), archive, prefix, source).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{source} could not be read ({type(exc).__name__}).") from None
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise CheckpointError(f"{source} does not hold a dict of tensors.")
    return dict(obj)
