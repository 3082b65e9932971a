"""Mimi's SEANet encoder and decoder on CUDA: each convolution one kernel, its ELU, bias,
residual add and kept rows included.

On MLX's ops a streaming convolution is four or five kernels (joining the kept rows to the new
ones, gathering the windows with the ELU, the matmul and its split-K reduction, the residual
add), some 70 per SEANet and 140 per full-duplex step, and on an H200 the step is bound by the
host's launches, not by the GPU (docs/cuda-kernels.md §Where a step's GPU time goes). Here a
SEANet is 14 launches: each of `src/seanet_conv.cu` reads the kept rows and the new ones where
they lie (no join), adds the bias and the residual, and writes what the next convolution reads,
the sum, its ELU or both (an ELU is computed once, by the convolution before it, not on every
read), and the next kept rows. So a convolution that reads an ELU keeps ELU'd rows: the
kernel's states are the same arrays as MLX's ops' (shapes, zeros at first: ELU(0) = 0) with
other contents, and a stream is stepped one way (prepared at load, as Mimi's transformer).

Everything is float32, summed in full float32 (MLX's matmuls run float32 through TF32 tensor
cores); `verify` steps the kernel path beside MLX's ops for three frames at load. `PPX_SEANET=mlx`
turns it off. docs/cuda-kernels.md §Mimi's SEANet convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from model.cuda import persistent
from model.cuda.mimi_transformer import MIMI_ROW_TOLERANCE

THREADS = 256  # per block: 8 warps, each one output channel for TB times
WARPS = THREADS // 32
# The kernel's flags (src/seanet_conv.cu): which outputs it writes, which inputs it reads.
RAW, ELU, BIAS, RES, STATE = 1, 2, 4, 8, 16
# (TB, V) of every kernel a SEANet may ask for (`variant`): times per warp, floats per load.
VARIANTS = ((16, 4), (2, 4), (16, 1), (2, 1))


@dataclass(frozen=True)
class SeanetConv:
    """One convolution of a SEANet as the kernel runs it (made by `model/mimi/seanet.py`).

    `weight` [kernel * channels, out] is the matmul operand (row k * channels + c: tap k,
    channel c), `bias` [out] or None. A transposed convolution is given in its kernel-2 form
    with `upsample` its stride (its outputs [t, stride * out] are [t * stride, out] rows)."""

    weight: mx.array
    bias: mx.array | None
    channels: int
    kernel: int
    stride: int
    dilation: int
    context: int  # rows kept between calls
    layer: int  # the layer of the stack whose state holds the kept rows
    elu_input: bool = False  # reads the ELU of the previous convolution's sum (else the sum)
    residual: bool = False  # adds the previous convolution's input (a residual block's conv2)
    upsample: int = 1


@dataclass(frozen=True)
class ConvLaunch:
    """A convolution's arrays and launch for one frame: `weight` [out, kernel * channels]."""

    conv: SeanetConv
    weight: mx.array
    bias: mx.array
    params: mx.array  # int32, src/seanet_conv.cu's p
    flags: int
    rows_in: int
    rows_out: int
    outputs: int
    variant: tuple[int, int]
    blocks: int


@dataclass(frozen=True)
class SeanetPlan:
    """A SEANet's launches for one frame; `elu_out`: the stack ends with an ELU (its output is
    the last convolution's ELU); `dummy`: the one-element stand-in of unused inputs."""

    launches: tuple[ConvLaunch, ...]
    elu_out: bool
    dummy: mx.array


def variant(rows_out: int, channels: int) -> tuple[int, int]:
    """(TB, V): 2 times per warp for a frame of two rows or fewer (the 25 Hz end), else 16;
    16-byte loads where the channels come in fours."""
    return (2 if rows_out <= 2 else 16, 4 if channels % 4 == 0 else 1)


def flags_of(convs: list[SeanetConv], elu_out: bool) -> list[int]:
    """What each convolution writes and reads (RAW, ELU, BIAS, RES, STATE)."""
    n, out = len(convs), []
    for i, c in enumerate(convs):
        last = i == n - 1
        raw = (last and not elu_out) or (not last and not convs[i + 1].elu_input)
        raw = raw or (i + 2 < n and convs[i + 2].residual)
        elu = (last and elu_out) or (not last and convs[i + 1].elu_input)
        out.append(
            RAW * raw
            + ELU * elu
            + BIAS * (c.bias is not None)
            + RES * c.residual
            + STATE * (c.context > 0)
        )
    return out


def _span(c: SeanetConv) -> int:
    return (c.kernel - 1) * c.dilation + 1


class SeanetKernel(persistent.PersistentKernel):
    """A SEANet's convolutions, one kernel each (`run`) on a `SeanetPlan` (`stack`); the
    module in the base class's methods is a `model.mimi.seanet` stack (its `convolutions()`,
    `frame_rows`, `init_state` and `mlx_call`). `run` steps the per-layer list that the stack
    keeps under its `KERNEL_ROWS` key."""

    env_var = "PPX_SEANET"
    what = "the SEANet convolution kernel"
    path = "model/cuda/seanet.py"
    name = "ppx_seanet_conv"
    source_name = "seanet_conv"
    outputs = ("y", "e", "ns")
    threads = THREADS
    own_header = False

    def inputs(self, consts: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return ["x", "s", "w", "b", "r", "p"], {}

    def supports(self, stack: Any) -> str | None:
        """Why the kernel cannot run this SEANet (None: it can)."""
        convs = stack.convolutions()
        if not convs:
            return "it has a layer the kernel does not take"
        if convs[0].elu_input or convs[0].residual:
            return "its first convolution reads an ELU or a residual"
        if any(c.weight.dtype != mx.float32 for c in convs):
            return "its weights are not float32"
        return None

    def stack_sources(self, stack: Any) -> tuple[mx.array, ...]:
        """The arrays `stack(module)` reads (to tell when a plan is stale)."""
        out: list[mx.array] = []
        for c in stack.convolutions() or []:
            out += [c.weight] + ([c.bias] if c.bias is not None else [])
        return tuple(out)

    def stack(self, stack: Any) -> SeanetPlan:
        """The launches of one frame (`stack.frame_rows` input rows), weights transposed."""
        convs = stack.convolutions()
        elu_out = stack.ends_with_elu()
        dummy = mx.zeros((1,), dtype=mx.float32)
        launches, rows = [], stack.frame_rows
        for c, flags in zip(convs, flags_of(convs, elu_out), strict=True):
            out = c.weight.shape[1]
            rows_out = (c.context + rows - _span(c)) // c.stride + 1
            tb, v = variant(rows_out, c.channels)
            params = [c.channels, c.context, c.kernel, c.stride, c.dilation, rows_out, out]
            tasks = out * -(-rows_out // tb)
            launches.append(
                ConvLaunch(
                    conv=c,
                    weight=mx.contiguous(c.weight.T.astype(mx.float32)),
                    bias=c.bias.astype(mx.float32) if c.bias is not None else dummy,
                    params=mx.array(params + [rows, flags], dtype=mx.int32),
                    flags=flags,
                    rows_in=rows,
                    rows_out=rows_out,
                    outputs=out,
                    variant=(tb, v),
                    blocks=-(-tasks // WARPS),
                )
            )
            rows = rows_out * c.upsample
        plan = SeanetPlan(tuple(launches), elu_out, dummy)
        mx.eval([(a.weight, a.bias, a.params) for a in plan.launches], dummy)
        return plan

    def launch(
        self, a: ConvLaunch, x: mx.array, kept: mx.array, residual: mx.array
    ) -> tuple[mx.array, mx.array, mx.array]:
        """One convolution: (sum [1, rows, out], its ELU, next kept rows [1, context, channels]);
        an output not written is [1]. The kernel reads and writes them as flat rows, so a
        transposed convolution's sum is given its upsampled shape here, and no input needs a
        reshape."""
        tb, v = a.variant
        c = a.conv
        rows = (1, a.rows_out * c.upsample, a.outputs // c.upsample)
        shapes = [
            rows if a.flags & RAW else (1,),
            rows if a.flags & ELU else (1,),
            (1, c.context, c.channels) if a.flags & STATE else (1,),
        ]
        y, e, ns = self.compiled([("TB", tb), ("V", v)])(
            inputs=[x, kept, a.weight, a.bias, residual, a.params],
            grid=(a.blocks * THREADS, 1, 1),
            threadgroup=(THREADS, 1, 1),
            output_shapes=shapes,
            output_dtypes=[mx.float32] * 3,
        )
        return y, e, ns

    def run(self, stack: Any, plan: SeanetPlan, x: mx.array, state: list) -> tuple[mx.array, list]:
        """x [1, rows, channels] (float32, one frame) through the SEANet: (output, next state)."""
        new_state = list(state)
        dummy = plan.dummy
        inputs: list[mx.array] = []  # each convolution's input (the raw sum where it is read)
        y = e = x
        for a in plan.launches:
            c = a.conv
            operand = e if c.elu_input else y
            inputs.append(y)
            kept = state[c.layer][0] if c.context else dummy
            residual = inputs[-2] if c.residual else dummy
            y, e, ns = self.launch(a, operand, kept, residual)
            if c.context:
                new_state[c.layer] = (ns,)
        return (e if plan.elu_out else y), new_state

    def verify(self, stack: Any, plan: SeanetPlan) -> float:
        """Step the kernel beside MLX's ops (each with its own state) for three frames and raise
        ValueError where an output row differs (`persistent.compare` at `MIMI_ROW_TOLERANCE`);
        returns the worst relative row error."""
        ours, theirs = stack.init_state(kernel=False), stack.init_state(kernel=False)
        worst = 0.0
        for n in range(3):
            first = plan.launches[0]
            shape = (1, first.rows_in, first.conv.channels)
            x = mx.random.normal(shape, key=mx.random.key(20 + n)) * 0.3
            got, ours = self.run(stack, plan, x, ours)
            want, theirs = stack.mlx_call(x, theirs)
            mx.eval(got, want, ours, theirs)
            rows = (1, -1) if got.shape[-1] == 1 else (-1, got.shape[-1])
            what = f"outputs of frame {n}"
            pair = got.reshape(rows), want.reshape(rows)
            worst = max(worst, persistent.compare(*pair, what, MIMI_ROW_TOLERANCE))
        return worst


KERNEL = SeanetKernel()
