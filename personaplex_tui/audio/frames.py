"""The audio format the model speaks: 24 kHz mono float32 in frames of 1920 samples (80 ms)."""

from __future__ import annotations

import numpy as np

# The model states its frame as model.config.FRAME_SAMPLES; audio code may not import `model`
# (pyproject's import contracts), so it is written once more here: tests/test_audio_format.py.
SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
PREBUFFER_FRAMES = 3  # 240 ms of agent audio queued before playback starts


def frame_samples_at(rate: int) -> int:
    """Samples in one 80 ms frame at `rate` Hz (exact for every rate that is a multiple of 25 Hz)."""
    samples = FRAME_SAMPLES * rate / SAMPLE_RATE
    if samples != int(samples):
        raise ValueError(f"{rate} Hz is not a multiple of 25 Hz, so an 80 ms frame is not whole")
    return int(samples)


def split_frames(pcm: np.ndarray, frame: int = FRAME_SAMPLES) -> np.ndarray:
    """A signal as whole frames, float32 [n_frames, frame]; the last one is padded with zeros."""
    pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
    n = -(-len(pcm) // frame)
    out = np.zeros((n, frame), dtype=np.float32)
    out.reshape(-1)[: len(pcm)] = pcm
    return out
