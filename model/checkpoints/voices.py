"""Loading a voice prompt (embeddings + token ring) from a checkpoint; the preset names live in
`model.checkpoints.voice_presets` (re-exported here)."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from model.checkpoints.safetensors_io import load_safetensors
from model.checkpoints.torch_file import read_torch_tensors
from model.checkpoints.voice_presets import (  # noqa: F401 - re-exported
    DEFAULT_VOICE,
    VOICE_CATEGORIES,
    VOICE_PRESETS,
    canonical_voice,
    voice_category,
)
from model.errors import CheckpointError


@dataclass
class VoicePrompt:
    """A saved voice prompt: T input embeddings and the token ring captured after them."""

    name: str
    embeddings: mx.array  # [T, d_model]
    cache: np.ndarray  # int64 [n_streams, ring_columns]

    @property
    def frames(self) -> int:
        return int(self.embeddings.shape[0])


def available_voices(folder: Path) -> tuple[str, ...]:
    """Voice names present in a checkpoint folder (converted files or the original voices.tgz)."""
    names: set[str] = set()
    vdir = folder / "voices"
    if vdir.is_dir():
        names.update(p.stem for p in vdir.glob("*.safetensors"))
    tgz = folder / "voices.tgz"
    if tgz.is_file():
        names.update(_tgz_members(tgz))
    order = {v: i for i, v in enumerate(VOICE_PRESETS)}
    return tuple(sorted(names, key=lambda n: (order.get(n, len(order)), n)))


def _tgz_members(tgz: Path) -> dict[str, str]:
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            return {
                Path(m.name).stem: m.name
                for m in tar.getmembers()
                if m.isfile() and m.name.endswith(".pt") and not Path(m.name).name.startswith(".")
            }
    except (tarfile.TarError, OSError, EOFError):
        raise CheckpointError(f"{tgz} is not a readable .tgz archive.") from None


def _read_voice_tensors(folder: Path, name: str) -> tuple[dict[str, np.ndarray | mx.array], str]:
    path = folder / "voices" / f"{name}.safetensors"
    if path.is_file():
        return dict(load_safetensors(path)), str(path)  # CheckpointError says what is wrong
    tgz = folder / "voices.tgz"
    members = _tgz_members(tgz) if tgz.is_file() else {}
    if name in members:
        with tarfile.open(tgz, "r:gz") as tar:
            handle = tar.extractfile(members[name])
            assert handle is not None  # a regular file, checked in _tgz_members
            source = f"{tgz}:{members[name]}"
            return dict(read_torch_tensors(handle.read(), source)), source
    raise CheckpointError(f"The voice file for {name} is missing from {folder}.")


def load_voice(
    folder: Path,
    name: str,
    *,
    d_model: int,
    n_streams: int,
    ring_columns: int,
    dtype: mx.Dtype,
    text_card: int | None = None,
    card: int | None = None,
) -> VoicePrompt:
    """Read and validate one voice prompt from a checkpoint folder."""
    voices = available_voices(folder)
    voice = canonical_voice(name, voices or VOICE_PRESETS)
    tensors, source = _read_voice_tensors(folder, voice)
    for key in ("embeddings", "cache"):
        if key not in tensors:
            raise CheckpointError(f"{source} has no '{key}' tensor.")
    emb = tensors["embeddings"]
    emb = emb if isinstance(emb, mx.array) else mx.array(emb)
    if emb.ndim < 2 or emb.shape[-1] != d_model or int(np.prod(emb.shape[1:-1])) != 1:
        raise CheckpointError(
            f"{source}: 'embeddings' has shape {tuple(emb.shape)}, expected [T, 1, 1, {d_model}]."
        )
    if not bool(mx.isfinite(emb).all()):
        raise CheckpointError(
            f"{source}: 'embeddings' holds NaN or infinite values; the file is corrupt."
        )
    raw_cache = np.asarray(tensors["cache"])
    if raw_cache.dtype.kind == "f" and not np.isfinite(raw_cache).all():
        raise CheckpointError(
            f"{source}: 'cache' holds NaN or infinite values; the file is corrupt."
        )
    cache = raw_cache.astype(np.int64)
    if cache.shape[-2:] != (n_streams, ring_columns) or cache.size != n_streams * ring_columns:
        raise CheckpointError(
            f"{source}: 'cache' has shape {cache.shape}, expected [1, {n_streams}, {ring_columns}]."
        )
    cache = cache.reshape(n_streams, ring_columns)
    limits = [(0, "text", text_card), (slice(1, None), "audio", card)]
    for rows, what, top in limits:
        if top is not None and (cache[rows].min() < 0 or cache[rows].max() > top):
            raise CheckpointError(
                f"{source}: 'cache' holds {what} token ids outside 0..{top}; the file is corrupt."
            )
    return VoicePrompt(
        name=voice,
        embeddings=emb.reshape(emb.shape[0], d_model).astype(dtype),
        cache=cache,
    )
