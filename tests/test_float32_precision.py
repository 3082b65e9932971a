"""Float32 matrix products: full precision in the suite, and the reference's tokens with MLX's
default TF32 on CUDA, which is what users run (docs/cuda-kernels.md §TF32 on CUDA)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda

ROOT = Path(__file__).resolve().parents[1]
GPU = pytest.mark.skipif(not on_cuda(), reason="MLX runs float32 products as TF32 on CUDA only")
TF32_ABOVE = 3e-5  # measured: full float32 2.9e-7 (H100) to 2.4e-6 (CPU) relative; TF32 2.6e-4


def gemm_error() -> float:
    """The relative error of a 64-row float32 product here, against float64."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 4096), dtype=np.float32)
    b = rng.standard_normal((4096, 512), dtype=np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    got = np.array(mx.array(a) @ mx.array(b)).astype(np.float64)
    return float(np.abs(got - exact).max() / np.abs(exact).max())


def gemm_error_in_a_process(tf32: str | None) -> float:
    """`gemm_error` in a fresh process, `$MLX_ENABLE_TF32` set to `tf32` (None: unset, MLX's
    default), since MLX reads it once, at a process's first product."""
    env = {k: v for k, v in os.environ.items() if k != "MLX_ENABLE_TF32"}
    if tf32 is not None:
        env["MLX_ENABLE_TF32"] = tf32
    probe = "from tests.test_float32_precision import gemm_error; print(gemm_error())"
    args = [sys.executable, "-c", probe]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip())


def test_the_suite_multiplies_at_full_float32():
    assert gemm_error() < TF32_ABOVE


@GPU
def test_mlx_defaults_to_tf32_on_cuda_and_the_session_keeps_the_reference_tokens():
    assert gemm_error_in_a_process(None) > TF32_ABOVE  # what users run: MLX's default
    assert gemm_error_in_a_process("0") < TF32_ABOVE
    # The schedule test (prefill batched, steps one at a time) with TF32 on, as users run it.
    env = {**os.environ, "MLX_ENABLE_TF32": "1"}
    test = "tests/test_session_schedule.py::test_session_matches_the_reference_schedule_one_frame_earlier"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 passed" in out.stdout
