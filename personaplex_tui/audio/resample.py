"""Sample-rate conversion with soxr: whole signals, signals in blocks, and streams that keep an
exact output length."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import soxr

from personaplex_tui.audio.frames import FRAME_SAMPLES

QUALITY = "HQ"


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole mono float32 signal (returned as is when the rates match)."""
    pcm = np.ascontiguousarray(pcm, dtype=np.float32)
    if src_rate == dst_rate:
        return pcm
    return soxr.resample(pcm, src_rate, dst_rate, quality=QUALITY).astype(np.float32, copy=False)


def resampled_length(samples: int, src_rate: int, dst_rate: int) -> int:
    """How many samples `resample` (and `resample_blocks`) makes of `samples`: soxr rounds the
    exact length to the nearest whole sample."""
    if src_rate == dst_rate:
        return samples
    return (2 * samples * dst_rate + src_rate) // (2 * src_rate)


def resample_blocks(
    blocks: Iterable[np.ndarray], src_rate: int, dst_rate: int
) -> Iterator[np.ndarray]:
    """Resample a mono float32 signal handed over in blocks of any sizes, without holding it
    whole: the blocks out, joined, are the very samples `resample` makes of the blocks in, joined
    (soxr's stream flushed at the end; tests/test_audio_resample.py). Output blocks come in
    soxr's own sizes."""
    if src_rate == dst_rate:
        for block in blocks:
            yield np.ascontiguousarray(block, dtype=np.float32)
        return
    stream = soxr.ResampleStream(src_rate, dst_rate, 1, dtype="float32", quality=QUALITY)
    for block in blocks:
        out = stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32))
        if len(out):
            yield out
    tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
    if len(tail):
        yield tail


def _worst_holdback(src_rate: int, dst_rate: int, chunk: int) -> int:
    """The most output samples soxr's stream ever owes behind an exact-length output.

    soxr hands out samples in its own block sizes, so after a chunk it may owe a few tens of
    milliseconds. Measured on scratch streams fed about 2 s of silence in chunks of `chunk`
    samples and of two odd sizes, plus a small margin for other chunkings.
    """
    worst = 0
    for size in (chunk, 331, 2999):
        probe = soxr.ResampleStream(src_rate, dst_rate, 1, dtype="float32", quality=QUALITY)
        zeros = np.zeros(size, dtype=np.float32)
        fed = produced = 0
        while fed < 2 * src_rate:
            fed += size
            produced += len(probe.resample_chunk(zeros))
            worst = max(worst, fed * dst_rate // src_rate - produced)
    return worst + 4 * math.ceil(dst_rate / src_rate) + 16


class StreamResampler:
    """A streaming resampler whose output length is always exact.

    After n input samples in total it has returned exactly floor(n * dst/src) samples, so one
    80 ms frame in gives one 80 ms frame out. This costs a fixed latency: the output is led by
    `latency_samples` zeros (about 38 ms), the most soxr ever holds back. Not thread-safe: one
    producer thread uses it.
    """

    def __init__(self, src_rate: int, dst_rate: int, chunk: int = FRAME_SAMPLES) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._chunk = chunk
        self.latency_samples = _worst_holdback(src_rate, dst_rate, chunk)
        self.short_outputs = 0  # calls where soxr owed more than the measured worst (padded)
        self.reset()

    @property
    def latency_s(self) -> float:
        return self.latency_samples / self.dst_rate

    def reset(self) -> None:
        """Forget all input (for a fresh stream after an interruption)."""
        self._stream = soxr.ResampleStream(
            self.src_rate, self.dst_rate, 1, dtype="float32", quality=QUALITY
        )
        self._pending = np.zeros(self.latency_samples, dtype=np.float32)
        self._in_total = 0
        self._out_total = 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Resample the next chunk; returns exactly the samples now due."""
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        self._in_total += len(pcm)
        due = self._in_total * self.dst_rate // self.src_rate - self._out_total
        fresh = self._stream.resample_chunk(pcm)
        pending = np.concatenate([self._pending, fresh]) if len(self._pending) else fresh
        if len(pending) < due:
            self.short_outputs += 1
            pending = np.concatenate([pending, np.zeros(due - len(pending), np.float32)])
        out, self._pending = pending[:due], pending[due:]
        self._out_total += due
        return out
