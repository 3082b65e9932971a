"""The PersonaPlex language model (`model.LM`): layers, the ring KV cache, stacked weights.

Uses MLX, `model.config`, `model.sampling`, `model.quantized`, `model.derived`, `model.backend`
and, for the CUDA fast paths, `model.cuda` (its seam only). Knows nothing of checkpoints,
Mimi or sessions.
"""
