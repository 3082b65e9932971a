"""Mimi's quantizer encode as one CUDA kernel (`model/cuda/mimi_quantizer.py`): when it applies,
its tables, and on an NVIDIA GPU the kernel's picks against float64 scores and MLX's ops.

The kernel runs only through MLX's CUDA backend; its GPU cases are skipped elsewhere (they ran
on an H200, see docs/cuda-kernels.md §Mimi's quantizer).
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda
from model.config import MimiConfig, mimi_tiny
from model.cuda import MIMI_QUANTIZER as kernel
from model.cuda import ModuleStack
from model.cuda.mimi_quantizer import PICK_TOLERANCE
from model.mimi import MimiCodec
from model.stt.random_listener import random_listener_quantizer
from tests.test_precompiled import NVRTC, compiles_for_an_h200

GPU = pytest.mark.skipif(not on_cuda(), reason="the kernel runs on NVIDIA GPUs only")


@pytest.fixture(scope="module")
def codec() -> MimiCodec:
    return MimiCodec.random(MimiConfig(), seed=5)


def test_the_published_shapes_are_supported_and_the_tiny_ones_are_not(codec):
    assert kernel.supports(codec.model.quantizer) is None
    assert kernel.supports(random_listener_quantizer(codec, 32)) is None
    assert "shapes" in kernel.supports(MimiCodec.random(mimi_tiny()).model.quantizer)


def test_the_stack_is_the_projections_rows_the_codebooks_and_their_half_norms(codec):
    q = codec.model.quantizer
    stack = kernel.stack(q)
    proj = np.concatenate([np.array(q.semantic_input_proj), np.array(q.acoustic_input_proj)])
    np.testing.assert_array_equal(np.array(stack.proj), proj)
    np.testing.assert_array_equal(np.array(stack.books), np.array(q.codebooks))
    books = np.array(q.codebooks, dtype=np.float64)
    np.testing.assert_allclose(
        np.array(stack.bias), -0.5 * (books * books).sum(-1), rtol=1e-5, atol=1e-5
    )


def test_switched_off_or_off_the_gpu_the_quantizer_runs_mlx_ops(monkeypatch):
    """`PPX_MIMI=mlx` (or no CUDA): `prepare_kernel` stacks nothing and `encode` runs MLX's ops,
    whose codes are the nearest entries (checked in float64 on the host)."""
    monkeypatch.setenv(kernel.env_var, "mlx")
    q = MimiCodec.random(MimiConfig(), seed=6).model.quantizer  # not the shared fixture's
    assert not q.prepare_kernel() and not q.on_kernel()
    z = np.random.default_rng(3).standard_normal(512).astype(np.float32)
    codes = np.array(q.encode(mx.array(z).reshape(1, 1, -1))).reshape(-1)
    books = np.array(q.codebooks, dtype=np.float64)
    x = np.array(q.semantic_input_proj, np.float64) @ z
    scores = books[0] @ x - 0.5 * (books[0] ** 2).sum(-1)
    assert scores[codes[0]] >= scores.max() - 1e-4 * np.abs(scores).max()


@NVRTC
def test_nvrtc_compiles_the_unit_for_an_h200(tmp_path, monkeypatch, codec):
    q = codec.model.quantizer
    compiles_for_an_h200(
        tmp_path, monkeypatch, kernel, lambda: kernel.run(q, kernel.stack(q), mx.zeros((512,)))
    )


@GPU
def test_the_codec_and_the_listeners_quantizer_run_on_the_checked_kernel(codec):
    assert kernel.disabled_reason is None
    assert codec.model.quantizer.on_kernel()
    assert random_listener_quantizer(codec, 32).on_kernel()


@GPU
@pytest.mark.parametrize("codebooks", [8, 32])
def test_the_kernels_codes_are_mlx_ops_codes(codec, codebooks):
    """On latents of several scales: every pick passes the float64 check; the first code (one
    search, no residual chain) equals MLX's on nearly every latent. Both are float32, but MLX's
    matmul may run on TF32, so a near tie can flip, and a flip changes every later residual:
    whole-latent agreement is printed, not bounded."""
    q = codec.model.quantizer if codebooks == 8 else random_listener_quantizer(codec, codebooks)
    assert q.on_kernel()
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((40, 512)).astype(np.float32) * rng.choice([0.1, 1, 5], (40, 1))
    ours, theirs = [], []
    for z in latents:
        x = mx.array(z).reshape(1, 1, -1)
        ours.append(np.array(q.encode(x)).reshape(-1))
        saved, q._kernel = q._kernel, ModuleStack(kernel)  # none prepared: MLX's ops
        theirs.append(np.array(q.encode(x)).reshape(-1))
        q._kernel = saved
    ours, theirs = np.stack(ours), np.stack(theirs)
    same = (ours == theirs).all(axis=1).mean()
    first = (ours[:, 0] == theirs[:, 0]).mean()
    print(f"{codebooks} codebooks: every code equal {same:.3f}, the first {first:.3f}")
    assert first >= 0.9
    assert kernel.verify(q, kernel.stack(q)) <= PICK_TOLERANCE


@GPU
def test_the_check_catches_a_codebook_off_by_one_percent(codec):
    q = codec.model.quantizer
    stack = kernel.stack(q)
    scale = np.ones(stack.books.shape, np.float32)
    scale[3] = 1.01
    with pytest.raises(ValueError, match="codebook"):
        kernel.verify(q, replace(stack, books=stack.books * mx.array(scale)))
