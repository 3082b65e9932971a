"""Kyutai's Mimi codec in MLX: streaming encode/decode of 80 ms frames, loading the released weights."""

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
