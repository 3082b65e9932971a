"""Checkpoints on disk: the two layouts, safetensors and `.pt` readers, the hub, voices, writing.

Uses `model.config`, `model.errors` and, to build the model it loads, `model.lm`. Knows nothing
of sessions. `voice_presets` and `hub` load no MLX.
"""
