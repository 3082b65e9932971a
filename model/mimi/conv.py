"""Streaming causal convolutions of Mimi, each one matmul over windows of its input, state carried
between calls.

Layout is [batch, time, channels]. A convolution keeps the last `(kernel-1)*dilation+1-stride`
input samples of the previous call (zeros after a reset: moshi's constant padding, or the first
sample repeated for the replicate-padded downsampling); a transposed convolution keeps the
previous call's last input step. Any call length that is a multiple of the stride gives the same
result as one call over the whole signal.

Few kernels per call (a streaming step is a chain of small ops, each costing a launch on a GPU):
the kept samples and the new ones are joined once, every output's window is a strided view of
that (no copy per tap), and an ELU that precedes the convolution (`pre_elu=True`) is applied while
the windows are gathered into the matmul's operand, in the same kernel. The state keeps the
input before the ELU (zero padding is the same either way: ELU(0) = 0).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .. import cuda

ConvState = tuple[mx.array, ...]


def elu(x: mx.array) -> mx.array:
    """ELU with alpha 1 (torch.nn.ELU): x for x > 0, expm1(x) otherwise."""
    return mx.maximum(x, 0.0) + mx.expm1(mx.minimum(x, 0.0))


def _windows(x: mx.array, kernel: int, stride: int, dilation: int, pre_elu: bool) -> mx.array:
    """[b, n_out, kernel * c]: the input of each output, taps in order (ELU'd if `pre_elu`).

    x holds exactly the samples the outputs need: n_out = (len - span) / stride + 1.
    """
    b, length, c = x.shape
    span = (kernel - 1) * dilation + 1
    n_out = (length - span) // stride + 1
    if kernel == stride or (n_out == 1 and span == length and dilation == 1):
        cols = x.reshape(b, n_out, kernel * c)  # windows are consecutive, disjoint rows
        return elu(cols) if pre_elu else cols
    view = mx.as_strided(x, (b, n_out, kernel, c), (length * c, stride * c, dilation * c, 1))
    # The ELU writes the gathered windows itself; without it, one copy gathers them.
    cols = elu(view) if pre_elu else mx.contiguous(view)
    return cols.reshape(b, n_out, kernel * c)


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

    def __call__(
        self, x: mx.array, state: ConvState, pre_elu: bool = False
    ) -> tuple[mx.array, ConvState]:
        """x [b, t, in] (t a multiple of the stride) -> [b, t / stride, out]; ELU(x) if `pre_elu`."""
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
        cols = _windows(x, self._kernel, self._stride, self._dilation, pre_elu)
        if "bias" in self:
            return mx.addmm(self.bias, cols, self.weight), new_state
        return cols @ self.weight, new_state

    def kernel_form(self, layer: int, **how: bool) -> cuda.SeanetConv | None:
        """This convolution for the SEANet kernel (None: replicate padding, which it lacks);
        `how`: `SeanetConv`'s elu_input and residual."""
        if self._replicate:
            return None
        bias = self.bias if "bias" in self else None
        return cuda.SeanetConv(
            self.weight, bias, self._in, self._kernel, self._stride, self._dilation,
            self._context, layer, **how,
        )  # fmt: skip


class StreamingConvTranspose1d(nn.Module):
    """Causal ConvTranspose1d with kernel = 2 * stride, trimmed on the right as moshi does.

    Dense: `weight` is [in, kernel * out] (column k*out + o: tap k, channel o).
    Depthwise (groups == channels): `weight` is [kernel, channels].

    Output step t (stride samples) is x[t] @ taps 0..s-1 + x[t-1] @ taps s..2s-1: a kernel-2
    convolution over the input steps, with `stride * out` channels. `prepare()` derives that
    convolution's weight; the state is the previous call's last input step (zeros at first).
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
        self._in = in_channels
        self._out = out_channels
        self._depthwise = depthwise

    def prepare(self) -> None:
        """Derive the kernel-2 form from the weights (call after loading them)."""
        s, o = self._stride, self._out
        w, arrays = self.weight, []
        if self._depthwise:  # [2s, c] -> previous-step taps, this step's taps: [2, s, c]
            arrays.append(mx.stack([w[s:], w[:s]]))
        else:  # [in, 2s*o] -> rows for x[t-1] (taps s..2s-1), then for x[t] (taps 0..s-1)
            arrays.append(mx.contiguous(mx.concatenate([w[:, s * o :], w[:, : s * o]], axis=0)))
        if "bias" in self:
            arrays.append(mx.tile(self.bias, s))  # channel o of every one of the s samples
        mx.eval(arrays)
        self._derived = (w, *arrays)

    def _forms(self) -> tuple[mx.array, ...]:
        derived = getattr(self, "_derived", None)
        if derived is None or derived[0] is not self.weight:
            self.prepare()
        return self._derived[1:]

    def init_state(self, batch: int = 1) -> ConvState:
        return (mx.zeros((batch, 1, self._in)),)

    def __call__(
        self, x: mx.array, state: ConvState, pre_elu: bool = False
    ) -> tuple[mx.array, ConvState]:
        """x [b, t, in] -> [b, t * stride, out]; ELU(x) first if `pre_elu`."""
        b, t, c = x.shape
        forms = self._forms()
        if self._depthwise:
            previous = state[0] if t == 1 else mx.concatenate([state[0], x[:, :-1]], axis=1)
            now = x
            if pre_elu:
                now, previous = elu(now), elu(previous)
            taps = forms[0]
            y = previous[:, :, None, :] * taps[0] + now[:, :, None, :] * taps[1]
            if len(forms) > 1:
                y = y + forms[1].reshape(self._stride, self._out)
        else:
            both = mx.concatenate([state[0], x], axis=1)
            cols = _windows(both, 2, 1, 1, pre_elu)
            y = mx.addmm(forms[1], cols, forms[0]) if len(forms) > 1 else cols @ forms[0]
        return y.reshape(b, t * self._stride, self._out), (x[:, t - 1 :],)

    def kernel_form(self, layer: int, **how: bool) -> cuda.SeanetConv | None:
        """The kernel-2 convolution for the SEANet kernel (None: depthwise, which it lacks)."""
        if self._depthwise:
            return None
        forms = self._forms()
        bias = forms[1] if len(forms) > 1 else None
        return cuda.SeanetConv(
            forms[0], bias, self._in, 2, 1, 1, 1, layer, upsample=self._stride, **how
        )
