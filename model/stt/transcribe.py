"""Transcribe a whole signal frame by frame, as a live stream would: Mimi (all n_q codebooks) then
the STT step, one evaluation per 80 ms frame; silence frames at the end flush the last words."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from model.array_checks import float_audio
from model.errors import AudioInputError
from model.stt.config import FRAME_RATE
from model.stt.loader import SttModel
from model.stt.stream import SttStream


@dataclass(frozen=True)
class SttFrame:
    """What one frame gave (host values)."""

    index: int  # frame number from 0 (flush frames included)
    codes: tuple[int, ...]  # the n_q Mimi codes fed in
    text_token: int
    piece: str  # the token's text ("" for padding), "▁" turned into a space
    end_of_turn: tuple[float, ...]  # each extra head's probability of its first class
    step_ms: float  # wall time of the frame's evaluation

    @property
    def time_s(self) -> float:
        """Start of the frame in the input (flush frames lie past its end)."""
        return self.index / FRAME_RATE


def frames_of(pcm: np.ndarray, frame_size: int, prefix: int, suffix: int) -> Iterator[np.ndarray]:
    """`prefix` silent frames, pcm cut in frames (the last zero-padded), `suffix` silent ones."""
    silence = np.zeros(frame_size, np.float32)
    yield from (silence for _ in range(prefix))
    pcm = np.asarray(pcm, np.float32)
    for start in range(0, len(pcm), frame_size):
        frame = pcm[start : start + frame_size]
        yield frame if len(frame) == frame_size else np.pad(frame, (0, frame_size - len(frame)))
    yield from (silence for _ in range(suffix))


def transcribe_frames(stt: SttModel, pcm: np.ndarray, *, flush: bool = True) -> Iterator[SttFrame]:
    """Stream 24 kHz mono float audio through the model (fresh Mimi and STT state); `flush`
    appends the silent frames that bring out the words of the last `audio_delay_seconds`."""
    cfg = stt.config
    pcm = float_audio(pcm, "The audio to transcribe")
    if pcm.ndim != 1:
        raise AudioInputError(f"The audio to transcribe must be mono (1-D), not {list(pcm.shape)}.")
    stt.mimi.reset()
    stream = SttStream(stt.lm)
    prefix = round(cfg.audio_silence_prefix_seconds * FRAME_RATE)
    suffix = cfg.flush_frames if flush else 0
    for index, frame in enumerate(frames_of(pcm, stt.mimi.frame_size, prefix, suffix)):
        start = time.perf_counter()
        codes = stt.mimi.encode_step(mx.array(frame))
        step = stream.step(codes)
        mx.eval(
            codes, step.text_token, step.end_of_turn, stt.mimi.state_arrays(), stream.state_arrays()
        )
        token = int(step.text_token.item())
        yield SttFrame(
            index=index,
            codes=tuple(int(c) for c in np.array(codes)),
            text_token=token,
            piece=stt.tokenizer.piece(token),
            end_of_turn=tuple(float(p) for p in np.array(step.end_of_turn)),
            step_ms=1000 * (time.perf_counter() - start),
        )
