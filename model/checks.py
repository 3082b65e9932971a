"""Checks of what callers hand the library (audio, codes, seeds), each failing in one sentence."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from model.errors import AudioInputError, SettingValueError

MAX_SEED = 2**63 - 1  # MLX's random keys take a whole number from 0 up to here


def float_audio(pcm: Any, what: str = "The audio") -> np.ndarray:
    """`pcm` (NumPy, a list; MLX arrays: `model.array_checks`) as float32, refusing integer,
    bool and complex samples (int16 PCM fed as floats would be heard 32768 times too loud),
    anything that is not numbers (strings, None, times), and samples that are not finite (one
    NaN poisons the codec's streaming state for its whole context)."""
    try:
        arr = np.asarray(pcm)
    except (TypeError, ValueError):
        arr = np.asarray(None)  # a ragged list, say
    if arr.dtype.kind in ("i", "u", "b", "c"):
        raise AudioInputError(not_float_samples(what, str(arr.dtype)))
    if arr.dtype.kind != "f":
        raise AudioInputError(f"{what} is not an array of float samples.")
    out = arr.astype(np.float32)
    if out.size and not np.isfinite(out).all():
        raise AudioInputError(f"{what} contains NaN or infinite samples.")
    return out


def not_float_samples(what: str, dtype: str) -> str:
    """The sentence for audio of integer, bool or complex samples."""
    return f"{what} is {dtype} samples; give float samples in [-1, 1] (divide int16 PCM by 32768)."


def codes_in_range(codes: Any, card: int, what: str = "Mimi codes") -> np.ndarray:
    """Codes as int32 after checking that each is a whole number in [0, card): an index out of
    range would read past a codebook (random output, or a crash)."""
    try:
        arr = np.asarray(codes)
    except (TypeError, ValueError):
        arr = np.asarray(None)  # a ragged list, say: refused below
    if arr.dtype.kind not in ("i", "u"):
        if arr.dtype.kind != "f" or not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise AudioInputError(f"{what} must be whole numbers in [0, {card}).")
    if arr.size and (arr.min() < 0 or arr.max() >= card):
        raise AudioInputError(
            f"{what} must be whole numbers in [0, {card}), not {int(arr.min())}..{int(arr.max())}."
        )
    return arr.astype(np.int32)


def seed_value(seed: Any) -> int:
    """A seed as MLX's random keys take it: a whole number from 0 to 2**63 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SettingValueError(f"The seed must be a whole number, not {seed!r}.")
    if not 0 <= int(seed) <= MAX_SEED:
        raise SettingValueError(f"The seed must be between 0 and {MAX_SEED}, not {seed}.")
    return int(seed)


def sampling_values(temperature: Any, top_k: Any, what: str) -> None:
    """A temperature (finite, >= 0; 0 is argmax) and a top-k (a whole number >= 0; 0 is no cut)."""
    number = (int, float, np.integer, np.floating)  # (np.number takes complex numbers too)
    if isinstance(temperature, bool) or not isinstance(temperature, number):
        raise SettingValueError(f"The {what} temperature must be a number, not {temperature!r}.")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise SettingValueError(
            f"The {what} temperature must be a finite number of at least 0, not {temperature}."
        )
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise SettingValueError(
            f"The {what} top-k must be a whole number of at least 0 (0: no cut), not {top_k!r}."
        )
