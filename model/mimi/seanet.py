"""SEANet encoder and decoder of Mimi (causal, constant padding, ELU, true-skip residual blocks).

Layers sit in `layers` at the index they have in moshi's `nn.Sequential` (`encoder.model.{i}`),
ELUs included, so checkpoint keys map one to one. An ELU layer is run by the convolution after
it, while that one gathers its input windows (`pre_elu`): no kernel of its own.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..config import MimiConfig
from .conv import StreamingConv1d, StreamingConvTranspose1d, elu


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
    """A sequence of streaming layers, each `layer(x, state, pre_elu) -> (y, state)`."""

    layers: list

    def init_state(self, batch: int = 1) -> list:
        return [layer.init_state(batch) for layer in self.layers]

    def __call__(self, x: mx.array, state: list) -> tuple[mx.array, list]:
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
