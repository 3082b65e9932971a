"""Streaming causal convolutions of Mimi, written as one matmul each, state carried between calls.

Layout is [batch, time, channels]. A convolution keeps the last `(kernel-1)*dilation+1-stride`
input samples of the previous call (zeros after a reset: moshi's constant padding, or the first
sample repeated for the replicate-padded downsampling); a transposed convolution keeps the tail
of its overlap-add. Any call length that is a multiple of the stride gives the same result as
one call over the whole signal.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

ConvState = tuple[mx.array, ...]


def elu(x: mx.array) -> mx.array:
    """ELU with alpha 1 (torch.nn.ELU): x for x > 0, expm1(x) otherwise."""
    return mx.maximum(x, 0.0) + mx.expm1(mx.minimum(x, 0.0))


class StreamingConv1d(nn.Module):
    """Causal Conv1d; `weight` is [kernel * in, out] (row k*in + c: tap k, channel c), `bias` [out].

    Weights are stored as the right operand of the matmul, contiguous: the fastest layout for
    CPU BLAS and as good as any on GPUs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        replicate: bool = False,
    ):
        super().__init__()
        self.weight = mx.zeros((kernel_size * in_channels, out_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))
        self._kernel = kernel_size
        self._stride = stride
        self._dilation = dilation
        self._in = in_channels
        self._replicate = replicate
        self._context = (kernel_size - 1) * dilation + 1 - stride
        if self._context < 0:
            raise ValueError(f"stride {stride} exceeds the kernel span of {kernel_size}")

    def init_state(self, batch: int = 1) -> ConvState:
        if self._context == 0:
            return ()
        previous = mx.zeros((batch, self._context, self._in))
        if self._replicate:
            return (previous, mx.ones((batch, 1, 1), dtype=mx.bool_))
        return (previous,)

    def __call__(self, x: mx.array, state: ConvState) -> tuple[mx.array, ConvState]:
        k, s, d = self._kernel, self._stride, self._dilation
        n_out = x.shape[1] // s
        if self._context:
            previous = state[0]
            if self._replicate:
                previous = mx.where(state[1], x[:, :1], previous)
            x = mx.concatenate([previous, x], axis=1)
            new_state: ConvState = (x[:, x.shape[1] - self._context :],)
            if self._replicate:
                new_state += (mx.zeros_like(state[1]),)
        else:
            new_state = ()
        if k == 1 and s == 1:
            cols = x
        elif d == 1 and k % s == 0:
            # Windows of a kernel of m*stride samples are m consecutive blocks of `stride` samples.
            b, t, c = x.shape
            blocks = x.reshape(b, t // s, s * c)
            m = k // s
            cols = mx.concatenate([blocks[:, j : j + n_out] for j in range(m)], axis=-1)
        else:
            span = (n_out - 1) * s + 1
            cols = mx.concatenate([x[:, i * d : i * d + span : s] for i in range(k)], axis=-1)
        if "bias" in self:
            return mx.addmm(self.bias, cols, self.weight), new_state
        return cols @ self.weight, new_state


def _overlap_add(z: mx.array, partial: mx.array) -> tuple[mx.array, mx.array]:
    """z [b, t, 2, stride*c] holds each input step's two output blocks; returns t blocks and the tail."""
    first, second = z[:, :, 0], z[:, :, 1]
    t = z.shape[1]
    shifted = mx.concatenate([partial, second[:, : t - 1]], axis=1)
    return first + shifted, second[:, t - 1 :]


class StreamingConvTranspose1d(nn.Module):
    """Causal ConvTranspose1d with kernel = 2 * stride, trimmed on the right as moshi does.

    Dense: `weight` is [in, kernel * out] (column k*out + o: tap k, channel o).
    Depthwise (groups == channels): `weight` is [kernel, channels].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        bias: bool = True,
        depthwise: bool = False,
    ):
        super().__init__()
        if kernel_size != 2 * stride:
            raise ValueError(
                f"transposed conv kernel {kernel_size} must be twice its stride {stride}"
            )
        if depthwise and in_channels != out_channels:
            raise ValueError("a depthwise transposed conv keeps its channel count")
        if depthwise:
            self.weight = mx.zeros((kernel_size, in_channels))
        else:
            self.weight = mx.zeros((in_channels, kernel_size * out_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))
        self._stride = stride
        self._out = out_channels
        self._depthwise = depthwise

    def init_state(self, batch: int = 1) -> ConvState:
        return (mx.zeros((batch, 1, self._stride * self._out)),)

    def __call__(self, x: mx.array, state: ConvState) -> tuple[mx.array, ConvState]:
        b, t, c = x.shape
        s, o = self._stride, self._out
        if self._depthwise:
            z = x[:, :, None, :] * self.weight
        else:
            z = x @ self.weight
        out, tail = _overlap_add(z.reshape(b, t, 2, s * o), state[0])
        y = out.reshape(b, t * s, o)
        if "bias" in self:
            y = y + self.bias
        return y, (tail,)
