"""The checks of `model.checks` for what callers hand the library as MLX arrays or host arrays.

An MLX array is brought to the host first (bfloat16, which NumPy lacks, as float32), or, where
it must stay lazy, only its dtype is read. `model.checks` itself stays free of MLX, since the
app's settings screen uses it and draws without MLX.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from model import checks
from model.errors import AudioInputError


def float_audio(pcm: Any, what: str = "The audio") -> np.ndarray:
    """`checks.float_audio` of `pcm`, an MLX array too: float32 samples on the host."""
    if isinstance(pcm, mx.array):
        lazy_float_audio(pcm, what)
        pcm = np.array(pcm.astype(mx.float32))
    return checks.float_audio(pcm, what)


def lazy_float_audio(pcm: mx.array, what: str = "The audio") -> None:
    """Refuse an MLX array of samples that are not floats, from its dtype alone (no sync)."""
    if not mx.issubdtype(pcm.dtype, mx.floating):
        dtype = str(pcm.dtype).removeprefix("mlx.core.")
        raise AudioInputError(checks.not_float_samples(what, dtype))


def codes_in_range(codes: Any, card: int, what: str = "Mimi codes") -> np.ndarray:
    """`checks.codes_in_range` of `codes`, an MLX array too (bfloat16 read as float32)."""
    if isinstance(codes, mx.array):
        codes = np.array(codes.astype(mx.float32) if codes.dtype == mx.bfloat16 else codes)
    return checks.codes_in_range(codes, card, what)
