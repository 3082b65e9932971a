"""Which kernels run a loaded model's hot path: ours on CUDA (`model/cuda/`) or MLX's ops, and why."""

from __future__ import annotations

from model import PersonaPlex, cuda
from model.backend import on_cuda


def matvec_kernels(model: PersonaPlex) -> str:
    """Which kernels run the model's quantized mat-vecs: ours (`model/cuda/matvec.py`) or MLX's."""
    if model.config.quantization is None or not on_cuda():
        return "MLX"
    if cuda.MATVEC.enabled():
        return f"fused ({cuda.MATVEC.path})"
    return f"MLX ({cuda.MATVEC.disabled_reason or f'{cuda.MATVEC.env_var}=mlx'})"


def depformer_kernels(model: PersonaPlex) -> str:
    """Which kernels run the depformer: ours (`model/cuda/depformer.py`, one per column) or MLX's."""
    prepared = on_cuda() and model.lm.depformer_stack() is not None
    return _one_kernel(model, cuda.DEPFORMER, prepared, "one kernel per column")


def temporal_kernels(model: PersonaPlex) -> str:
    """Which kernels run the temporal step: ours (`model/cuda/temporal.py`, one per step) or MLX's."""
    prepared = on_cuda() and model.lm.temporal_stack() is not None
    return _one_kernel(model, cuda.TEMPORAL, prepared, "one kernel per step")


def mimi_kernels(model: PersonaPlex) -> str:
    """Which kernels run Mimi's two transformers, its quantizer and its SEANets: ours (one per
    frame each, `model/cuda/mimi_transformer.py`, `model/cuda/mimi_quantizer.py`; one per
    convolution, `model/cuda/seanet.py`) or MLX's ops."""
    if not on_cuda():
        return "MLX"
    mimi = model.mimi.model
    ours = []
    if mimi.encoder_transformer.on_kernel() and mimi.decoder_transformer.on_kernel():
        ours.append(f"transformers ({cuda.MIMI_TRANSFORMER.path})")
    if mimi.quantizer.on_kernel():
        ours.append(f"quantizer ({cuda.MIMI_QUANTIZER.path})")
    seanets = mimi.encoder.on_kernel() and mimi.decoder.on_kernel()
    if seanets:
        ours.append(f"SEANets, a kernel per convolution ({cuda.MIMI_SEANET.path})")
    if len(ours) == 3:
        return "one kernel per frame each: " + ", ".join(ours)
    why = (
        cuda.MIMI_TRANSFORMER.why_off(mimi.encoder_transformer)
        or cuda.MIMI_QUANTIZER.why_off(mimi.quantizer)
        or cuda.MIMI_SEANET.why_off(mimi.encoder)
    )
    mlx = f"MLX ({why})" if why else "MLX"
    return f"{mlx}; ours: {', '.join(ours)}" if ours else mlx


def stt_kernels(model: PersonaPlex) -> str:
    """Which kernels run the user transcript's STT step: the temporal kernel (a quantized STT on
    CUDA, `model/stt/model.py`) or MLX's ops; "off" without a listener."""
    listener = getattr(model, "listener", None)
    if listener is None:
        return "off (no user transcript)"
    lm = listener.lm
    if not on_cuda():
        return "MLX"
    prepared = lm.kernels.stack(cuda.TEMPORAL, lm) is not None
    if cuda.TEMPORAL.enabled() and prepared:
        return f"one kernel per step ({cuda.TEMPORAL.path})"
    why = cuda.TEMPORAL.why_off(lm)
    return f"MLX ({why})" if why else "MLX"


def _one_kernel(model: PersonaPlex, kernel: cuda.Kernel, prepared: bool, what: str) -> str:
    if not on_cuda():
        return "MLX"
    if kernel.enabled() and prepared:
        return f"{what} ({kernel.path})"
    why = kernel.why_off(model.lm)
    return f"MLX ({why})" if why else "MLX"
