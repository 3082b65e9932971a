"""The fused quantized mat-vec (`model/cuda/matvec.py`, chosen in `model.lm.layers.matvec`): its arithmetic, when it applies, and its fallback.

The CUDA kernel itself runs only on an NVIDIA GPU: `test_kernel_equals_mlx` checks it there
(skipped elsewhere). On every machine, `emulate` repeats the kernel's arithmetic step by step in
NumPy (16-byte chunks, codes read as 2^23 + q floats, affine terms folded per chunk) and is
checked against MLX's own quantized matmul, and the functions' MLX fallback is checked too.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from model import quantized as quantized_module
from model.backend import on_cuda
from model.cuda import MATVEC as kernel
from model.cuda import matvec as kernel_module
from model.lm import layers
from model.quantized import Quantized


def quantized(rows: int, inputs: int, bits: int, group_size: int = 64, seed: int = 0) -> Quantized:
    w = mx.random.normal((rows, inputs), key=mx.random.key(seed)) * inputs**-0.5
    weight, scales, biases = mx.quantize(w, group_size, bits)
    return Quantized(weight, scales, biases, group_size, bits)


def row(inputs: int, seed: int = 1, dtype: mx.Dtype = mx.float32) -> mx.array:
    return mx.random.normal((1, 1, inputs), key=mx.random.key(seed)).astype(dtype)


def reference(x: mx.array, q: Quantized) -> np.ndarray:
    y = mx.quantized_matmul(
        x.astype(mx.float32),
        q.weight,
        q.scales.astype(mx.float32),
        q.biases.astype(mx.float32),
        transpose=True,
        group_size=q.group_size,
        bits=q.bits,
    )
    return np.array(y).reshape(-1)


def emulate(x: mx.array, q: Quantized, mode: str, residual: np.ndarray | None = None) -> np.ndarray:
    """The kernel's computation, written out in NumPy (float32 throughout)."""
    words = np.array(q.weight).view(np.uint32)
    scales = np.array(q.scales.astype(mx.float32))
    biases = np.array(q.biases.astype(mx.float32))
    xs = np.array(x.astype(mx.float32)).reshape(-1)
    per_word = 32 // q.bits
    per_chunk = 4 * per_word
    magic = np.uint32(0x4B000000)
    acc = np.zeros(words.shape[0], dtype=np.float32)
    for c in range(words.shape[1] // 4):
        chunk = words[:, 4 * c : 4 * c + 4]
        xc = xs[c * per_chunk : (c + 1) * per_chunk]
        codes = []
        for k in range(4):
            word = chunk[:, k]
            if q.bits == 8:
                parts = [(word >> np.uint32(8 * i)) & np.uint32(0xFF) for i in range(4)]
            else:  # nibbles 0, 2, 4, 6 from the low halves of the bytes, 1, 3, 5, 7 from the high
                lo, hi = (
                    word & np.uint32(0x0F0F0F0F),
                    (word >> np.uint32(4)) & np.uint32(0x0F0F0F0F),
                )
                parts = []
                for i in range(4):
                    parts += [(lo >> np.uint32(8 * i)) & np.uint32(0xFF)]
                    parts += [(hi >> np.uint32(8 * i)) & np.uint32(0xFF)]
            for p in parts:  # the bits under the exponent of 2^23, minus 2^23
                codes.append((magic | p).view(np.float32) - np.float32(2**23))
        codes = np.stack(codes, axis=1)  # [rows, per_chunk]
        g = c * per_chunk // q.group_size
        dot = codes @ xc
        acc += scales[:, g] * dot + biases[:, g] * xc.sum(dtype=np.float32)
    if mode == "gated":
        gate, value = np.split(acc, 2)
        return gate / (1 + np.exp(-gate)) * value
    if mode == "residual":
        return acc + residual
    return acc


@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, 64), (4, 128), (8, 64), (8, 128)])
def test_emulated_kernel_arithmetic_equals_mlx(bits, group_size):
    q = quantized(24, 512, bits, group_size)
    x = row(512)
    ref = reference(x, q)
    got = emulate(x, q, "plain")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    r = np.linspace(-1, 1, 24).astype(np.float32)
    np.testing.assert_allclose(emulate(x, q, "residual", r), ref + r, rtol=1e-4, atol=1e-4)
    gate, value = np.split(ref, 2)
    gated = gate / (1 + np.exp(-gate)) * value
    np.testing.assert_allclose(emulate(x, q, "gated"), gated, rtol=1e-4, atol=1e-5)


def test_emulation_notices_a_wrong_code_order():
    # The check above can fail: swapping two nibbles of every word changes the result.
    q = quantized(16, 256, 4)
    swapped = np.array(q.weight).view(np.uint32)
    swapped = ((swapped & np.uint32(0x0F0F0F0F)) << np.uint32(4)) | (
        (swapped >> np.uint32(4)) & np.uint32(0x0F0F0F0F)
    )
    bad = Quantized(mx.array(swapped), q.scales, q.biases, q.group_size, q.bits)
    x = row(256)
    assert np.abs(emulate(x, bad, "plain") - reference(x, q)).max() > 1e-2


def test_usable_only_for_what_the_kernel_handles(monkeypatch):
    monkeypatch.setattr(kernel, "enabled", lambda: True)
    q8 = quantized(64, 512, 8)
    assert kernel.usable(row(512), q8)
    assert kernel.usable(row(512, dtype=mx.bfloat16), q8)
    assert not kernel.usable(mx.zeros((1, 2, 512)), q8)  # two rows: prefill
    assert not kernel.usable(row(512), quantized(64, 512, 3, 64))  # 3 bits
    assert not kernel.usable(row(512), quantized(4, 512, 8))  # too few rows
    assert not kernel.usable(row(512).astype(mx.int32), q8)


def test_off_unless_cuda(monkeypatch):
    monkeypatch.delenv(kernel.env_var, raising=False)
    assert kernel.enabled() == on_cuda()
    monkeypatch.setenv(kernel.env_var, "mlx")
    assert not kernel.enabled()


def test_fallback_is_mlx_ops(monkeypatch):
    monkeypatch.setattr(kernel, "enabled", lambda: False)
    q = quantized(64, 256, 4)
    x, r = row(256), row(64, seed=3)
    plain = mx.quantized_matmul(x, q.weight, q.scales, q.biases, True, q.group_size, q.bits)
    assert mx.array_equal(layers.matvec(x, q), plain)
    assert mx.array_equal(layers.matvec(x, q, r), r + plain)
    gate, value = mx.split(plain, 2, axis=-1)
    assert mx.allclose(layers.gated_matvec(x, q), nn.silu(gate) * value)
    halves = tuple(
        Quantized(q.weight[s], q.scales[s], q.biases[s], q.group_size, q.bits)
        for s in (slice(0, 32), slice(32, None))
    )
    assert mx.allclose(layers.gated_matvec(x, q, halves), nn.silu(gate) * value)


@pytest.mark.skipif(not on_cuda(), reason="the kernel runs on NVIDIA GPUs only")
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("shape", [(3072, 1024), (1000, 2816), (4104, 4096)])
def test_kernel_equals_mlx(bits, dtype, shape, monkeypatch):
    rows, inputs = shape
    q = quantized(rows, inputs, bits)
    x = row(inputs, dtype=dtype)
    r = row(rows, seed=5, dtype=dtype)
    # float32: summation order only; bfloat16: the check's bound on the row's norm
    tol = 1e-4 if dtype == mx.float32 else kernel_module.CHECK_TOLERANCE
    ref = reference(x, q)
    for got, want in (
        (layers.matvec(x, q), ref),
        (layers.matvec(x, q, r), ref + np.array(r.astype(mx.float32)).reshape(-1)),
        (layers.gated_matvec(x, q), emulate(x, q, "gated")),
    ):
        got = np.array(got.astype(mx.float32)).reshape(-1)
        assert np.linalg.norm(got - want) <= tol * np.linalg.norm(want)
    # row-block views (the per-step depformer weights) start inside the stacked arrays
    block = slice(rows // 2 - rows // 2 % 8, rows)
    view = Quantized(q.weight[block], q.scales[block], q.biases[block], q.group_size, q.bits)
    got = np.array(layers.matvec(x, view).astype(mx.float32)).reshape(-1)
    assert np.linalg.norm(got - ref[block]) <= tol * np.linalg.norm(ref[block])


@pytest.fixture
def fresh_check_state(monkeypatch):
    """A CUDA-like machine for `kernel.check`, with the kernel's check state reset."""
    monkeypatch.delenv(kernel.env_var, raising=False)
    monkeypatch.setattr("model.cuda.kernel.on_cuda", lambda: True)
    monkeypatch.setattr(kernel, "disabled_reason", None)
    monkeypatch.setattr(kernel, "checked", set())


def mlx_run(x, q, n_out, r):
    """What the kernel computes, with MLX's ops (a stand-in that passes the check)."""
    y = mx.quantized_matmul(x, q.weight, q.scales, q.biases, True, q.group_size, q.bits)
    if r.size == 2:
        gate, value = mx.split(y, 2, axis=-1)
        return nn.silu(gate) * value
    return y if r.size == 1 else y + r.reshape(y.shape)


def test_check_keeps_a_kernel_that_computes_the_right_thing(fresh_check_state, monkeypatch):
    monkeypatch.setattr(kernel, "run", mlx_run)
    assert kernel.check(mx.float32, 4, 64) and kernel.check(mx.float32, 8, 64)
    assert kernel.enabled() and kernel.disabled_reason is None


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        (lambda x, q, n, r: mx.zeros((n,), dtype=x.dtype), "its result is off by"),
        (lambda x, q, n, r: mlx_run(x, q, n, r) * mx.nan, "its result is off by"),
        (lambda *a: (_ for _ in ()).throw(RuntimeError("nvrtc: not found")), "nvrtc: not found"),
    ],
)
def test_a_kernel_that_fails_its_check_falls_back_to_mlx(
    fresh_check_state, monkeypatch, run, reason
):
    monkeypatch.setattr(kernel, "run", run)
    assert not kernel.check(mx.float32, 8, 64)
    assert not kernel.enabled()
    assert reason in kernel.disabled_reason and "using MLX's kernels" in kernel.disabled_reason
    q, x = quantized(64, 512, 8), row(512)  # and products run on MLX's kernels from then on
    assert mx.array_equal(layers.matvec(x, q), reference_mlx(x, q))


def reference_mlx(x, q):
    return mx.quantized_matmul(x, q.weight, q.scales, q.biases, True, q.group_size, q.bits)


def test_check_runs_nothing_without_cuda(monkeypatch):
    monkeypatch.setattr("model.cuda.kernel.on_cuda", lambda: False)
    monkeypatch.setattr(kernel, "checked", set())
    monkeypatch.setattr(kernel, "run", lambda *a: pytest.fail("the kernel ran"))
    assert not kernel.check(mx.float32, 8, 64)
    assert kernel.checked == set()


def test_preparing_a_quantized_lm_checks_each_kind_of_weight(monkeypatch):
    from model.checkpoints.random_weights import random_lm
    from tests.lm_helpers import small_config

    calls = []
    monkeypatch.setattr(kernel, "check", lambda *kind: calls.append(kind) or False)
    lm = random_lm(small_config(d_model=256, dep_dim=64, dep_dim_feedforward=192, bits=8))
    lm.prepare()
    assert {(bits, group) for _, bits, group in calls} == {(8, 64)}
    assert {dtype for dtype, _, _ in calls} == {lm.dtype}


def test_several_rows_on_cuda_multiply_the_dequantized_weight(monkeypatch):
    # on CUDA a prefill's rows go through dequantize + matmul (no JIT-compiled quantized GEMM)
    q = quantized(64, 256, 8)
    x = mx.random.normal((1, 5, 256), key=mx.random.key(3))
    want = np.array(mx.quantized_matmul(x, q.weight, q.scales, q.biases, transpose=True, bits=8))
    monkeypatch.setattr(quantized_module, "on_cuda", lambda: True)
    monkeypatch.delenv(quantized_module.ROWS_ENV_VAR, raising=False)
    calls = []
    monkeypatch.setattr(
        quantized_module,
        "dequantized",
        lambda q, f=quantized_module.dequantized: calls.append(1) or f(q),
    )
    got = np.array(layers.matvec(x, q))
    # a GPU's cuBLAS multiplies float32 in TF32 (~1e-3); the CPU agrees to float32 rounding
    tol = 1e-5 if mx.default_device() == mx.cpu else 5e-3
    assert calls and np.abs(got - want).max() <= tol * np.abs(want).max()
    monkeypatch.setenv(quantized_module.ROWS_ENV_VAR, "qmm")
    calls.clear()
    np.testing.assert_array_equal(np.array(layers.matvec(x, q)), want)
    assert not calls
