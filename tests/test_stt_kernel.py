"""The STT's transformer step through the project's one-kernel temporal step (`model/cuda/`).

Kyutai's STT LM is the temporal transformer's layers at other widths, so a quantized STT runs
its step as the same persistent kernel on CUDA, checked against MLX's ops when `prepare`d. Its
GPU cases are skipped elsewhere (they ran on an H200, see docs/speed-log.md).
Everywhere: the 1B shape is one the kernel takes, and a prepared model steps as before.
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda
from model.config import TransformerConfig
from model.cuda import TEMPORAL as temporal_kernel
from model.cuda import persistent
from model.stt.config import SttConfig, stt_1b_en_fr
from model.stt.model import SttLM
from model.stt.stream import SttStream

GPU = pytest.mark.skipif(not on_cuda(), reason="the kernel runs on NVIDIA GPUs only")


def small_stt(
    bits: int | None = 8, dtype: mx.Dtype = mx.bfloat16, context: int = 24, seed: int = 0
) -> SttLM:
    """A random STT the kernel takes: head_dim 128, group-aligned widths, 8 codebooks."""
    t = TransformerConfig(
        d_model=256, num_heads=2, num_layers=2, dim_feedforward=704, context=context
    )
    cfg = SttConfig(transformer=t, n_q=8, text_card=400, extra_heads=4)
    mx.random.seed(seed)
    lm = SttLM(cfg)
    lm.set_dtype(dtype)
    if bits is not None:
        lm.quantize(bits)
    mx.eval(lm.parameters())
    lm.prepare()
    return lm


def direct_steps(lm: SttLM, n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Text logits and extra-head probabilities of n one-position steps from empty rings, each
    on its own random input (no feedback: MLX's path and the kernel's see the same inputs)."""
    caches = lm.make_cache(smallest_window=8)
    logits, probs = [], []
    d = lm.config.transformer.d_model
    for p in range(n):
        x = mx.random.normal((1, 1, d), key=mx.random.key(seed + p)).astype(lm.dtype)
        states = [c.state for c in caches]
        out, heads = lm.forward_step(
            x, states, mx.array(p, dtype=mx.int32), caches[0].step_window()
        )
        for c, s in zip(caches, states, strict=True):
            c.state = list(s)
            c.offset += 1
        logits.append(np.array(out.astype(mx.float32)).reshape(-1))
        probs.append(np.array(heads).reshape(-1))
    return np.stack(logits), np.stack(probs)


def stream_tokens(
    lm: SttLM, frames: int, *, compile: bool = True, warm_up_at: int | None = None
) -> tuple[list[int], np.ndarray]:
    """A stream's text tokens and end-of-turn probabilities on random codes (warmed up after
    `warm_up_at` frames)."""
    stream = SttStream(lm, compile=compile)
    rng = np.random.default_rng(1)
    tokens, eot = [], []
    for n in range(frames):
        if n == warm_up_at:
            stream.warm_up()
        codes = mx.array(rng.integers(0, lm.config.card, lm.config.n_q).astype(np.int32))
        step = stream.step(codes)
        mx.eval(step.text_token, step.end_of_turn, stream.state_arrays())
        tokens.append(int(step.text_token.item()))
        eot.append(np.array(step.end_of_turn))
    return tokens, np.stack(eot)


def test_the_published_shape_is_one_the_kernel_takes_when_quantized():
    cfg = replace(stt_1b_en_fr(), extra_heads=4)
    for bits in (4, 8):
        lm = SttLM(cfg)  # lazy: nothing of its 1B weights is computed
        lm.set_dtype(mx.bfloat16)
        lm.quantize(bits)
        assert temporal_kernel.supports(lm) is None, bits
    lm = SttLM(cfg)
    lm.set_dtype(mx.bfloat16)
    assert "quantized" in temporal_kernel.supports(lm)


def test_preparing_changes_no_number():
    """`prepare` derives per-step views (and on CUDA stacks the weights): same outputs."""
    lm = small_stt(bits=8, dtype=mx.float32)  # float32: MLX's ops, prepared
    fresh = small_stt(bits=8, dtype=mx.float32)
    fresh.prepare = lambda: None  # never prepared
    assert lm._tables is not None and lm._heads is not None  # stacked: one gather, one product
    a, b = direct_steps(lm, 5), direct_steps(fresh, 5)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(2)
    column = rng.integers(0, lm.config.text_card, (3, lm.config.n_streams)).astype(np.int32)
    column[0, 0], column[1, 3] = -1, -1  # no token
    column[2, 0], column[2, 1:] = lm.config.text_card, lm.config.card  # the initial ids
    got, want = lm.embed(mx.array(column)), fresh.embed(mx.array(column))
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(on_cuda(), reason="on CUDA the kernel runs")
def test_off_the_gpu_nothing_is_stacked():
    lm = small_stt()
    assert lm.kernels.stack(temporal_kernel, lm) is None


@GPU
@pytest.mark.parametrize("bits", [4, 8])
def test_the_kernel_steps_the_stt_like_mlx_through_a_wrapping_ring(bits, monkeypatch):
    lm = small_stt(bits=bits)  # built and prepared: stacked and checked
    assert temporal_kernel.disabled_reason is None
    assert lm.kernels.stack(temporal_kernel, lm) is not None
    ours = direct_steps(lm, 40)  # the 24-slot ring wraps
    monkeypatch.setenv(temporal_kernel.env_var, "mlx")
    theirs = direct_steps(lm, 40)
    persistent.compare(mx.array(ours[0]), mx.array(theirs[0]), "logits")  # the check's bound
    for p in range(40):
        persistent.same_argmax(mx.array(ours[0][p]), mx.array(theirs[0][p]), f"position {p}")
    np.testing.assert_allclose(ours[1], theirs[1], atol=2e-2)


@GPU
def test_a_compiled_stream_on_the_kernel_steps_like_an_uncompiled_one():
    """Streams run compiled graphs that return the rings the kernel wrote in place; a warm-up
    mid-stream (on rings of its own) changes nothing."""
    lm = small_stt(bits=8)
    tokens, eot = stream_tokens(lm, 30, compile=False)
    compiled_tokens, compiled_eot = stream_tokens(lm, 30, warm_up_at=5)
    assert compiled_tokens == tokens
    np.testing.assert_allclose(compiled_eot, eot, atol=1e-3)


@GPU
def test_the_check_catches_an_stt_norm_weight_off_by_one_percent():
    lm = small_stt(bits=8)
    weights = lm.kernels.stack(temporal_kernel, lm)
    assert temporal_kernel.verify(lm, weights) <= persistent.ROW_TOLERANCE
    d = lm.config.transformer.d_model
    scale = np.ones(weights.norms.shape, np.float32)
    scale[2 * d : 3 * d] = 1.01  # layer 1's norm1
    off = replace(
        weights, norms=(weights.norms.astype(mx.float32) * mx.array(scale)).astype(lm.dtype)
    )
    with pytest.raises(ValueError, match="layer 1 keys"):
        temporal_kernel.verify(lm, off)
