"""How a one-position step hides the ring slots of its window that hold no position yet.

Two ways, equal in result (backend-dependent speed, so `PPX_RING_MASK` can pick one; it is read
when a step graph is traced, and the step graphs are keyed by it):
- `bool`: a boolean mask given to the attention kernel (free on Metal and the CPU, whose kernels
  take masks; on CUDA a mask sends MLX's attention down its unfused path, ~5 kernels).
- `far_keys`: the unwritten slots' keys are replaced by `-BIG * sign(q)`, whose score
  `-BIG * scale * sum|q|` makes their softmax weight exactly 0 for any query that is not the zero
  vector (one fused elementwise kernel, and the attention stays on the fused single-query kernel).
"""

from __future__ import annotations

import os

import mlx.core as mx

from model.backend import on_cuda

BOOL, FAR_KEYS = "bool", "far_keys"
MODES = (BOOL, FAR_KEYS)
ENV_VAR = "PPX_RING_MASK"

# Key magnitude of hidden slots: a power of two (exact in every float type), large enough that
# exp(score) underflows to 0 for any realistic query, small enough that scores stay finite.
_FAR = {mx.float16: 2.0**14, mx.bfloat16: 2.0**30, mx.float32: 2.0**30}


def default_mode() -> str:
    """`PPX_RING_MASK` if set, else `far_keys` on CUDA and `bool` elsewhere (Metal, CPU)."""
    mode = os.environ.get(ENV_VAR, "").strip().lower()
    if mode:
        if mode not in MODES:
            raise ValueError(f"{ENV_VAR} must be one of {', '.join(MODES)}, not '{mode}'.")
        return mode
    return FAR_KEYS if on_cuda() else BOOL


def hide_unwritten(
    q: mx.array, keys: mx.array, written: mx.array | None
) -> tuple[mx.array, mx.array | None]:
    """Keys and mask for attending `keys` [B, H, L, Dh] where `written` (bool [L]) is False,
    the way `default_mode()` says.

    `written` None means every slot is valid: the keys come back unchanged, with no mask.
    """
    if written is None:
        return keys, None
    if default_mode() == BOOL:
        return keys, written
    far = mx.sign(q) * -_FAR.get(keys.dtype, 2.0**14)
    return mx.where(written[:, None], keys, far.astype(keys.dtype)), None
