"""GCC-PHAT of a long recording at the lags searched, without its whole-length FFT arrays."""

from __future__ import annotations

import numpy as np

# The whole-length way (`np.fft.rfft` of both signals zero-padded to `size`, `np.fft.irfft` of
# their whitened cross-spectrum) holds several `size`-long float64 arrays at once: ~280 MB for
# two 2-minute recordings. Here the spectrum is made a few of its `size // inner` interleaved
# parts at a time (a four-step FFT: part b holds bins classes * a + b, a = 0 .. inner - 1) and
# only the lags asked for are kept, so the memory is a few `inner`-long rows, whatever the length.
MIN_INNER = 1 << 17  # bins in each part; more lags than this make the parts longer
ROW_BINS = 1 << 18  # bins made at a time (parts times their length): 4 MB of complex128
CHUNK = 1 << 14  # columns of the recordings turned into float64 at a time


def phat_parts(size: int, lags: int) -> int:
    """The length of each part of the spectrum (a power of two) for `lags` consecutive lags of a
    `size`-point GCC-PHAT; 0 where the whole-length FFT is small enough (a short recording)."""
    inner = max(MIN_INNER, 1 << (lags - 1).bit_length())
    return inner if size >= 8 * inner else 0


def gcc_phat_lags(
    far: np.ndarray, mic: np.ndarray, n: int, size: int, back: int, reach: int, inner: int
) -> np.ndarray:
    """GCC-PHAT of `mic` against `far` (their first `n` samples, zero-padded to `size`, a power
    of two) at lags -`back` .. `reach`: what `np.fft.irfft` of their cross-spectrum whitened as
    in `echo_metrics.estimate_delay` gives there, to rounding. `inner`: from `phat_parts`."""
    classes = size // inner
    step = max(1, ROW_BINS // inner)
    parts = [
        np.arange(b, min(b + step, classes // 2 + 1)) for b in range(0, classes // 2 + 1, step)
    ]
    far, mic = far[:n], mic[:n]
    # The whitening adds 1e-12 of the largest cross-spectrum bin: a first pass finds it.
    largest = 0.0
    for bs in parts:
        largest = max(largest, float(np.max(np.abs(_cross(far, mic, classes, inner, bs)))))
    lags = np.arange(-back, reach + 1)
    corr = np.zeros(len(lags))
    for bs in parts:
        cross = _cross(far, mic, classes, inner, bs)
        cross /= np.abs(cross) + 1e-12 * largest
        np.fft.ifft(cross, axis=1, out=cross)
        # Bin k = classes * a + b turns by exp(2 pi i k m / size) = exp(2 pi i a m / inner)
        # exp(2 pi i b m / size) at lag m; parts b and classes - b are complex conjugates (the
        # signals are real), so only b <= classes / 2 is made and those in between count twice.
        turn = np.exp((2j * np.pi / size) * ((bs[:, None] * lags[None, :]) % size))
        weight = np.where((bs == 0) | (2 * bs == classes), 1.0, 2.0)
        corr += weight @ (cross[:, lags % inner] * turn).real
    return corr / classes


def _cross(
    far: np.ndarray, mic: np.ndarray, classes: int, inner: int, bs: np.ndarray
) -> np.ndarray:
    """The cross-spectrum mic * conj(far), parts `bs` [len(bs), inner]."""
    turn = np.exp((-2j * np.pi / (classes * inner)) * (bs[:, None] * np.arange(inner)[None, :]))
    cross = _part(mic, classes, inner, bs, turn)
    other = _part(far, classes, inner, bs, turn)
    del turn
    cross *= np.conjugate(other, out=other)
    return cross


def _part(x: np.ndarray, classes: int, inner: int, bs: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Parts `bs` of the `classes * inner`-point DFT of `x` [len(bs), inner]: the DFT of its
    `inner`-sample rows, one after another, at frequencies `bs` (a sum of the rows), each column
    j turned by `turn` (exp(-2 pi i b j / size)), then an `inner`-point FFT of each part."""
    rows = -(-len(x) // inner)
    whole = len(x) // inner
    phase = np.exp((-2j * np.pi / classes) * ((bs[:, None] * np.arange(rows)[None, :]) % classes))
    mix = np.concatenate([phase.real, phase.imag])
    summed = np.empty((2 * len(bs), inner))
    block = np.zeros((rows, CHUNK))
    for j in range(0, inner, CHUNK):
        block[:whole] = x[: whole * inner].reshape(whole, inner)[:, j : j + CHUNK]
        if whole < rows:  # the last row, shorter
            tail = x[whole * inner + j : whole * inner + j + CHUNK]
            block[whole] = 0.0
            block[whole, : len(tail)] = tail
        np.matmul(mix, block, out=summed[:, j : j + CHUNK])
    part = np.empty((len(bs), inner), complex)
    part.real, part.imag = summed[: len(bs)], summed[len(bs) :]
    del summed
    part *= turn
    return np.fft.fft(part, axis=1, out=part)
