"""The Mimi network: pure functions of (input, streaming state) for one frame, and whole signals.

Attribute names follow moshi's MimiModel, so `weights.sanitize` maps checkpoint keys directly.
Nothing here evaluates arrays or reads them back to the host.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..config import MimiConfig
from ..errors import CheckpointError
from .conv import StreamingConv1d, StreamingConvTranspose1d
from .quantizer import SplitResidualQuantizer
from .seanet import SeanetDecoder, SeanetEncoder
from .transformer import MimiTransformer

EncodeState = dict[str, Any]
DecodeState = dict[str, Any]

_CHUNK_FRAMES = 25  # frames per SEANet call when a whole signal is coded (bounds memory)


def check_config(cfg: MimiConfig) -> None:
    """Raises CheckpointError for a Mimi config (from a checkpoint's config.json) this cannot run."""
    if cfg.frame_size % cfg.hop_length or cfg.steps_per_frame < 1:
        raise CheckpointError(
            f"The Mimi config's frame of {cfg.frame_size} samples is not a whole number of "
            f"encoder hops of {cfg.hop_length} samples."
        )
    if cfg.dimension % cfg.num_heads:
        raise CheckpointError(
            f"The Mimi config's dimension {cfg.dimension} is not a multiple of its "
            f"{cfg.num_heads} heads."
        )
    if not 1 <= cfg.num_codebooks <= cfg.n_q:
        raise CheckpointError(
            f"The Mimi config uses {cfg.num_codebooks} codebooks but stores {cfg.n_q}."
        )
    if cfg.context < cfg.steps_per_frame:
        raise CheckpointError(
            f"The Mimi config's context of {cfg.context} steps is shorter than one frame."
        )


class MimiModel(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        d, stride = cfg.dimension, cfg.steps_per_frame
        self.encoder = SeanetEncoder(cfg)
        self.decoder = SeanetDecoder(cfg)
        self.encoder_transformer = MimiTransformer(cfg)
        self.decoder_transformer = MimiTransformer(cfg)
        self.quantizer = SplitResidualQuantizer(cfg)
        self.downsample = StreamingConv1d(d, d, 2 * stride, stride, bias=False, replicate=True)
        self.upsample = StreamingConvTranspose1d(d, d, 2 * stride, stride, False, depthwise=True)
        self.prepare()

    def prepare(self) -> None:
        """Refreshes the arrays derived from the weights (after `load_weights`), evaluated."""
        for _, module in self.named_modules():
            if module is not self and hasattr(module, "prepare"):
                module.prepare()

    def prepare_kernels(self) -> bool:
        """On CUDA: the transformers', the quantizer's and the SEANets' kernels stacked and
        checked for the current weights (`MimiTransformer.prepare_kernel`,
        `SplitResidualQuantizer.prepare_kernel`, the SEANets' `prepare_kernel`). Returns whether
        all five run on them."""
        results = [
            self.encoder_transformer.prepare_kernel(),
            self.decoder_transformer.prepare_kernel(),
            self.quantizer.prepare_kernel(),
            self.encoder.prepare_kernel(),
            self.decoder.prepare_kernel(),
        ]
        return all(results)

    # --- streaming: one frame, state in and out ---------------------------------------------

    def init_encode_state(self) -> EncodeState:
        """A fresh stream's state for `encode_step` (zeros; the SEANet's on the path a frame takes)."""
        return {
            "encoder": self.encoder.init_state(),
            "transformer": self.encoder_transformer.init_state(),
            "downsample": self.downsample.init_state(),
        }

    def init_decode_state(self) -> DecodeState:
        """A fresh stream's state for `decode_step`."""
        return {
            "upsample": self.upsample.init_state(),
            "transformer": self.decoder_transformer.init_state(),
            "decoder": self.decoder.init_state(),
        }

    def full_after(self, frames: int) -> bool:
        """Whether the transformers' caches are full in the step of the frame after `frames`
        streamed ones (then `encode_step`/`decode_step` may be told `full=True`)."""
        spf = self.cfg.steps_per_frame
        return self.encoder_transformer.is_full(frames * spf, spf)

    def encode_step(
        self,
        pcm: mx.array,
        state: EncodeState,
        full: bool = False,
        quantizer: SplitResidualQuantizer | None = None,
    ) -> tuple[mx.array, EncodeState]:
        """pcm [frame_size] -> codes [num_codebooks] int32, as moshi's streaming `encode`.

        `full` as `full_after(frames streamed so far)` says (False is always correct).
        `quantizer`: another one with more codebooks (the STT's), in place of this model's.
        """
        x = pcm.astype(mx.float32).reshape(1, -1, 1)
        x, enc = self.encoder(x, state["encoder"])
        x, tr = self.encoder_transformer.step(x, state["transformer"], full)
        codes, down = self.quantize_step(x, state["downsample"], quantizer)
        return codes, {"encoder": enc, "transformer": tr, "downsample": down}

    def quantize_step(
        self, x: mx.array, down: Any, quantizer: SplitResidualQuantizer | None = None
    ) -> tuple[mx.array, Any]:
        """`encode_step`'s end: the transformer's output downsampled to one frame and its codes
        (`quantizer` as there) -> (codes [num_codebooks] int32, downsample state)."""
        x, down = self.downsample(x, down)
        return (quantizer or self.quantizer).encode(x).reshape(-1), down

    def decode_step(
        self, codes: mx.array, state: DecodeState, full: bool = False
    ) -> tuple[mx.array, DecodeState]:
        """codes [num_codebooks] -> pcm [frame_size] float32, as moshi's streaming `decode`."""
        x = self.quantizer.decode(codes.astype(mx.int32).reshape(1, 1, -1))
        x, up = self.upsample(x, state["upsample"])
        x, tr = self.decoder_transformer.step(x, state["transformer"], full)
        x, dec = self.decoder(x, state["decoder"])
        return x.reshape(-1), {"upsample": up, "transformer": tr, "decoder": dec}

    # --- whole signals: fresh state, same numbers as streaming frame by frame ----------------

    def encode(self, pcm: mx.array) -> mx.array:
        """pcm [n * frame_size] -> codes [num_codebooks, n] int32."""
        x = pcm.astype(mx.float32).reshape(1, -1, 1)
        chunk = _CHUNK_FRAMES * self.cfg.frame_size
        state = self.encoder.init_state(kernel=False)  # MLX's ops: chunks of any length
        latents = []
        for start in range(0, x.shape[1], chunk):
            y, state = self.encoder(x[:, start : start + chunk], state)
            latents.append(y)
        x = mx.concatenate(latents, axis=1)
        x = self.encoder_transformer(x)
        x, _ = self.downsample(x, self.downsample.init_state())
        return self.quantizer.encode(x)[0].T

    def decode(self, codes: mx.array) -> mx.array:
        """codes [num_codebooks, n] -> pcm [n * frame_size] float32."""
        x = self.quantizer.decode(codes.astype(mx.int32).T[None])
        x, _ = self.upsample(x, self.upsample.init_state())
        x = self.decoder_transformer(x)
        chunk = _CHUNK_FRAMES * self.cfg.steps_per_frame
        state = self.decoder.init_state(kernel=False)  # as in `encode`
        pieces = []
        for start in range(0, x.shape[1], chunk):
            y, state = self.decoder(x[:, start : start + chunk], state)
            pieces.append(y)
        return mx.concatenate(pieces, axis=1).reshape(-1)
