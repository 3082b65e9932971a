"""SEANet encoder and decoder of Mimi (causal, constant padding, ELU, true-skip residual blocks).

Layers sit in `layers` at the index they have in moshi's `nn.Sequential` (`encoder.model.{i}`),
ELUs included, so checkpoint keys map one to one. An ELU layer is run by the convolution after
it, while that one gathers its input windows (`pre_elu`): no kernel of its own. On CUDA a codec
frame runs on the SEANet kernel instead, one launch per convolution (`model/cuda/seanet.py`,
docs/cuda-kernels.md §Mimi's SEANet convolutions), once `prepare_kernel` has checked it.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .. import cuda
from ..config import MimiConfig
from .conv import StreamingConv1d, StreamingConvTranspose1d, elu

KERNEL_ROWS = "kernel rows"  # the key of a state that the SEANet kernel keeps (see `_Stack`)
SeanetState = list | dict[str, list]  # MLX's ops' (per layer), or the kernel's under KERNEL_ROWS


class Elu(nn.Module):
    """A parameter-free ELU step of a layer stack (run by the next layer, see `_Stack`)."""

    def init_state(self, batch: int = 1) -> tuple:
        return ()

    def __call__(self, x: mx.array, state: tuple, pre_elu: bool = False) -> tuple[mx.array, tuple]:
        return elu(elu(x) if pre_elu else x), state


class ResidualBlock(nn.Module):
    """x + conv1x1(elu(conv_k(elu(x)))), moshi's SEANetResnetBlock with true_skip."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int):
        super().__init__()
        hidden = dim // compress
        self.conv1 = StreamingConv1d(dim, hidden, kernel_size, dilation=dilation)
        self.conv2 = StreamingConv1d(hidden, dim, 1)

    def init_state(self, batch: int = 1) -> Any:
        return self.conv1.init_state(batch)

    def __call__(self, x: mx.array, state: Any, pre_elu: bool = False) -> tuple[mx.array, Any]:
        if pre_elu:
            x = elu(x)
        h, state = self.conv1(x, state, pre_elu=True)
        h, _ = self.conv2(h, (), pre_elu=True)
        return x + h, state


def _residuals(cfg: MimiConfig, dim: int) -> list[ResidualBlock]:
    return [
        ResidualBlock(dim, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress)
        for j in range(cfg.n_residual_layers)
    ]


class _Stack(nn.Module):
    """A sequence of streaming layers, each `layer(x, state, pre_elu) -> (y, state)`.

    A state says which path steps it. MLX's ops keep a list (one entry per layer); on the SEANet
    kernel (`prepare_kernel`) a frame's convolutions keep ELU'd rows where they read an ELU, in
    arrays of the same shapes, so its state is that list under `KERNEL_ROWS` (a dict, which
    `mx.compile` carries through as one): `init_state` picks the path, and neither path accepts
    the other's state."""

    layers: list
    frame_rows: int  # input rows of one codec frame

    def __init__(self) -> None:
        super().__init__()
        self._kernel = cuda.ModuleStack(cuda.MIMI_SEANET)  # its plan, once checked

    def init_state(self, batch: int = 1, kernel: bool | None = None) -> SeanetState:
        """Zero state for the path a frame takes now (`kernel`: None), or for MLX's ops
        (`kernel=False`: whole signals, references) or the kernel (`kernel=True`)."""
        layers = [layer.init_state(batch) for layer in self.layers]
        if kernel is None:
            kernel = batch == 1 and self.on_kernel()
        return {KERNEL_ROWS: layers} if kernel else layers

    def prepare_kernel(self) -> bool:
        """On CUDA: check the SEANet kernel against MLX's ops for the current weights, once
        (outside compiled graphs). Returns whether a frame runs on it."""
        return self._kernel.prepare(self)

    def on_kernel(self) -> bool:
        """Whether a frame runs on the SEANet kernel (prepared for the current weights)."""
        return self._kernel.current(self) is not None

    def convolutions(self) -> list[cuda.SeanetConv] | None:
        """The convolutions in order as the SEANet kernel runs them, each told whether it
        reads an ELU and adds a residual (None: a layer it does not take)."""
        convs: list = []
        pre_elu = False
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Elu):
                if pre_elu:
                    return None  # two ELUs in a row
                pre_elu = True
                continue
            if isinstance(layer, ResidualBlock):
                if pre_elu:
                    return None  # its residual would be an ELU
                convs.append(layer.conv1.kernel_form(i, elu_input=True))
                convs.append(layer.conv2.kernel_form(i, elu_input=True, residual=True))
            else:
                convs.append(layer.kernel_form(i, elu_input=pre_elu))
            pre_elu = False
        return None if any(c is None for c in convs) else convs

    def ends_with_elu(self) -> bool:
        return bool(self.layers) and isinstance(self.layers[-1], Elu)

    def __call__(self, x: mx.array, state: SeanetState) -> tuple[mx.array, SeanetState]:
        """x [b, rows, channels] through every layer, on the path its state is for: the
        kernel's takes one frame (`frame_rows` float32 rows, batch 1) at a time."""
        if not isinstance(state, dict):
            return self.mlx_call(x, state)
        plan = self._kernel.current(self)
        if plan is None:
            raise ValueError("this SEANet state was made for the CUDA kernel, which is now off")
        if x.shape[:2] != (1, self.frame_rows) or x.dtype != mx.float32:
            raise ValueError(
                f"the SEANet kernel steps one frame of {self.frame_rows} float32 rows, "
                f"not {x.dtype} of shape {list(x.shape)}; whole signals use init_state(kernel=False)"
            )
        y, layers = cuda.MIMI_SEANET.run(self, plan, x, state[KERNEL_ROWS])
        return y, {KERNEL_ROWS: layers}

    def mlx_call(self, x: mx.array, state: list) -> tuple[mx.array, list]:
        """`__call__` by MLX's ops, on their state (the kernel's load-time reference)."""
        if isinstance(state, dict):
            raise ValueError("MLX's ops cannot step a state that the SEANet kernel keeps")
        new_state, pre_elu = [], False
        for layer, layer_state in zip(self.layers, state, strict=True):
            if isinstance(layer, Elu) and not pre_elu:
                pre_elu = True  # for the next layer to apply
            else:
                x, layer_state = layer(x, layer_state, pre_elu=pre_elu)
                pre_elu = False
            new_state.append(layer_state)
        if pre_elu:
            x = elu(x)
        return x, new_state


class SeanetEncoder(_Stack):
    """Waveform [b, t, channels] -> latent [b, t / hop, dimension]."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        self.frame_rows = cfg.frame_size
        nf = cfg.n_filters
        layers: list = [StreamingConv1d(cfg.channels, nf, cfg.kernel_size)]
        mult = 1
        for ratio in reversed(cfg.ratios):
            layers += _residuals(cfg, mult * nf)
            layers += [Elu(), StreamingConv1d(mult * nf, 2 * mult * nf, 2 * ratio, stride=ratio)]
            mult *= 2
        layers += [Elu(), StreamingConv1d(mult * nf, cfg.dimension, cfg.last_kernel_size)]
        self.layers = layers


class SeanetDecoder(_Stack):
    """Latent [b, t, dimension] -> waveform [b, t * hop, channels]."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        self.frame_rows = cfg.steps_per_frame
        nf = cfg.n_filters
        mult = 2 ** len(cfg.ratios)
        layers: list = [StreamingConv1d(cfg.dimension, mult * nf, cfg.kernel_size)]
        for ratio in cfg.ratios:
            dim_out = mult * nf // 2
            layers += [Elu(), StreamingConvTranspose1d(mult * nf, dim_out, 2 * ratio, ratio)]
            layers += _residuals(cfg, dim_out)
            mult //= 2
        layers += [Elu(), StreamingConv1d(nf, cfg.channels, cfg.last_kernel_size)]
        self.layers = layers
