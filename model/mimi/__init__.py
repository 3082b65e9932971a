"""Kyutai's Mimi codec in MLX: streaming encode/decode of 80 ms frames, loading the released weights.

codec = MimiCodec.from_file("mimi.safetensors")      # or MimiCodec.random(cfg) for tests
codes = codec.encode_step(pcm_frame)                 # mx [1920] float -> mx [8] int32, lazy
pcm = codec.decode_step(codes)                       # mx [8] int -> mx [1920] float32, lazy
mx.eval(codes, pcm, codec.state_arrays())            # the caller decides when to evaluate
codec.reset()                                        # forget the stream (both directions)
codes = codec.encode_numpy(audio)                    # whole signals, numpy in and out
"""

from .codec import MimiCodec
from .model import MimiModel
from .random_weights import random_mimi_weights, save_weights
from .weights import checkpoint_spec, read_safetensors, read_safetensors_header

__all__ = [
    "MimiCodec",
    "MimiModel",
    "checkpoint_spec",
    "random_mimi_weights",
    "read_safetensors",
    "read_safetensors_header",
    "save_weights",
]
