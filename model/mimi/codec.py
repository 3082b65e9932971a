"""`MimiCodec`: Kyutai's Mimi as a streaming codec (one 80 ms frame per call) and a whole-file coder.

The step methods take and return lazy mx.arrays and never evaluate nor read back to the host, so a
caller can fuse encode, LM step and decode into one evaluation. `encode_numpy` / `decode_numpy`
are the host-side conveniences for whole signals.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..array_checks import codes_in_range, float_audio, lazy_float_audio
from ..checks import seed_value
from ..config import MimiConfig
from ..errors import AudioInputError
from .model import MimiModel
from .random_weights import random_mimi_weights
from .weights import load_file, load_into


class MimiCodec:
    """Mimi with its streaming state. Build with `from_file(path)` or `random(cfg)`."""

    def __init__(self, cfg: MimiConfig | None = None, *, compile: bool = True) -> None:
        self.cfg = cfg or MimiConfig()
        self.model = MimiModel(self.cfg)
        self._compile = compile
        self._steps: dict[bool, tuple[Callable, Callable]] = {}
        self.reset()

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, cfg: MimiConfig | None = None, *, compile: bool = True
    ) -> MimiCodec:
        """Loads a Mimi safetensors file (Kyutai's release, PyTorch names), validating it."""
        codec = cls(cfg, compile=compile)
        load_file(codec.model, path)
        codec._weights_changed()
        return codec

    @classmethod
    def random(
        cls, cfg: MimiConfig | None = None, seed: int = 0, *, compile: bool = True
    ) -> MimiCodec:
        """A codec with `random_mimi_weights(cfg, seed)` (tests, `--random-weights` benchmarks)."""
        codec = cls(cfg, compile=compile)
        codec.load_weights(random_mimi_weights(codec.cfg, seed_value(seed)))
        return codec

    def load_weights(self, weights: Mapping[str, Any]) -> None:
        """Loads checkpoint tensors given by PyTorch name (arrays or numpy arrays)."""
        load_into(self.model, weights)
        self._weights_changed()

    def _weights_changed(self) -> None:
        mx.eval(self.model.parameters(), self.model.quantizer._table)
        self.model.prepare_kernels()  # on CUDA: before any step (a stream is stepped one way)
        self._steps = {}
        self.reset()

    # --- properties ------------------------------------------------------------------------

    @property
    def frame_size(self) -> int:
        """Samples per frame (1920)."""
        return self.cfg.frame_size

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def num_codebooks(self) -> int:
        return self.cfg.num_codebooks

    # --- streaming -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forgets all streamed audio and codes (both directions)."""
        self._encode_state = self.model.init_encode_state()
        self._decode_state = self.model.init_decode_state()
        self._encoded = 0  # frames streamed each way (the transformers' caches fill up)
        self._decoded = 0

    def state_arrays(self) -> list[mx.array]:
        """The streaming state's arrays, to evaluate together with a step's outputs."""
        return [a for _, a in tree_flatten([self._encode_state, self._decode_state])]

    def _step_functions(self, full: bool) -> tuple[Callable, Callable]:
        """(encode, decode) steps, compiled once for caches that are filling and once for full."""
        if full not in self._steps:
            enc = partial(self.model.encode_step, full=full)
            dec = partial(self.model.decode_step, full=full)
            self._steps[full] = (mx.compile(enc), mx.compile(dec)) if self._compile else (enc, dec)
        return self._steps[full]

    def encode_step(self, pcm: mx.array) -> mx.array:
        """pcm [frame_size] float -> codes [num_codebooks] int32 (lazy). Host samples are checked
        (float, finite); an MLX array is taken unevaluated, its dtype checked (a float type)."""
        if isinstance(pcm, mx.array):
            lazy_float_audio(pcm, "The audio given to Mimi")  # its dtype: no sync
        else:
            pcm = mx.array(float_audio(pcm, "The audio given to Mimi"))
        if tuple(pcm.shape) != (self.frame_size,):
            raise AudioInputError(
                f"Mimi encodes frames of {self.frame_size} samples, not {list(pcm.shape)}."
            )
        encode = self._step_functions(self.model.full_after(self._encoded))[0]
        codes, self._encode_state = encode(pcm, self._encode_state)
        self._encoded += 1
        return codes

    def decode_step(self, codes: mx.array) -> mx.array:
        """codes [num_codebooks] int (each in [0, codebook_size)) -> pcm [frame_size] float32
        (lazy). Host codes are checked; an MLX array is taken as it is, unevaluated (no sync), so
        its codes must be in range: one out of it reads past a codebook."""
        if not isinstance(codes, mx.array):
            codes = mx.array(codes_in_range(codes, self.cfg.codebook_size))
        if tuple(codes.shape) != (self.num_codebooks,):
            raise AudioInputError(
                f"Mimi decodes {self.num_codebooks} codes per frame, not {list(codes.shape)}."
            )
        decode = self._step_functions(self.model.full_after(self._decoded))[1]
        pcm, self._decode_state = decode(codes, self._decode_state)
        self._decoded += 1
        return pcm

    # --- whole signals ---------------------------------------------------------------------

    def encode(self, pcm: mx.array) -> mx.array:
        """pcm [n * frame_size] -> codes [num_codebooks, n] int32 (lazy; streaming state
        untouched). The samples are checked on the host first (float, finite)."""
        pcm = mx.array(float_audio(pcm, "The audio given to Mimi"))
        if pcm.ndim != 1 or pcm.shape[0] == 0 or pcm.shape[0] % self.frame_size:
            raise AudioInputError(
                f"Mimi encodes a whole number of {self.frame_size}-sample frames, not {list(pcm.shape)}."
            )
        return self.model.encode(pcm)

    def decode(self, codes: mx.array) -> mx.array:
        """codes [num_codebooks, n] -> pcm [n * frame_size] float32 (lazy; streaming state
        untouched). The codes are checked on the host first (whole numbers in range)."""
        codes = codes_in_range(codes, self.cfg.codebook_size)
        if codes.ndim != 2 or codes.shape[0] != self.num_codebooks or codes.shape[1] == 0:
            raise AudioInputError(
                f"Mimi decodes codes shaped [{self.num_codebooks}, frames], not {list(codes.shape)}."
            )
        return self.model.decode(mx.array(codes))

    def encode_numpy(self, pcm: np.ndarray) -> np.ndarray:
        """Mono float audio at 24 kHz -> codes [num_codebooks, n] int32; the tail is zero-padded."""
        pcm = float_audio(pcm, "The audio given to Mimi")
        if pcm.ndim != 1 or pcm.size == 0:
            raise AudioInputError(
                f"Mimi needs non-empty mono audio, not an array of shape {list(pcm.shape)}."
            )
        pad = -pcm.size % self.frame_size
        if pad:
            pcm = np.concatenate([pcm, np.zeros(pad, np.float32)])
        codes = self.model.encode(mx.array(pcm))  # checked here already: not through `encode`
        mx.eval(codes)
        return np.array(codes)

    def decode_numpy(self, codes: np.ndarray) -> np.ndarray:
        """codes [num_codebooks, n] -> float32 audio of n * frame_size samples."""
        pcm = self.decode(codes)  # `decode` checks the shape and the codes (NaN: refused, not cast)
        mx.eval(pcm)
        return np.array(pcm)
