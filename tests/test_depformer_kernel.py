"""The one-kernel depformer (`model/cuda/depformer.py`): its stacked weights, when it applies, its
top-k selection, and on an NVIDIA GPU the kernel itself against MLX's ops.

The kernel runs only through MLX's CUDA backend; its GPU cases are skipped elsewhere (they ran
on an H100/H200, see the README's Speed section). Everywhere: stacking the weights changes no
number, the kernel's radix select of the top-k cut (emulated step by step in NumPy) finds the
same threshold as a partition, and the CPU keeps MLX's path.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda
from model.checkpoints.random_weights import random_lm
from model.cuda import DEPFORMER as depformer_kernel
from tests.lm_helpers import small_config

GPU = pytest.mark.skipif(not on_cuda(), reason="the kernel runs on NVIDIA GPUs only")


def small_lm(bits: int | None = 8, dtype: mx.Dtype = mx.float32, seed: int = 0):
    # depformer head_dim 32 (a warp's lanes), card a power of two, group-aligned widths
    config = small_config(
        d_model=256, dep_dim=64, dep_heads=2, dep_dim_feedforward=192, bits=bits, card=256
    )
    return random_lm(config, dtype=dtype, seed=seed)


def teacher_forced(lm, seed: int = 3) -> np.ndarray:
    h = mx.random.normal((1, 1, lm.config.temporal.d_model), key=mx.random.key(seed))
    tokens = mx.array(np.arange(lm.config.dep_q) * 7 % lm.config.card)
    return np.array(lm.depformer_logits(h.astype(lm.dtype), mx.array(5), tokens))


def test_the_model_supports_it_when_its_projections_are_quantized():
    assert depformer_kernel.supports(small_lm(bits=8)) is None
    assert depformer_kernel.supports(small_lm(bits=4)) is None
    assert "quantized" in depformer_kernel.supports(small_lm(bits=None))


def test_stacking_keeps_the_results_and_the_modules_read_the_stack():
    lm = small_lm()
    before = teacher_forced(lm)
    stack = depformer_kernel.stack(lm)
    lm.kernels.adopt(depformer_kernel, lm, stack)
    lm.prepare()
    assert lm.depformer_stack() is stack
    # bit-identical on the CPU; on a GPU MLX may pick other kernels for the views (~1e-6)
    np.testing.assert_allclose(teacher_forced(lm), before, rtol=1e-5, atol=1e-5)
    # the modules' weights are row blocks of the stacks, in the order the kernel reads them
    d, s = lm.config.depformer.d_model, lm.config.dep_q
    hidden = lm.depformer.layers[0].gating[0].linear_out.weight.shape[1] * 32 // stack.bits
    per_layer = s * (3 * d + d + 2 * hidden)
    layer = lm.depformer.layers[1]
    start = per_layer + s * 4 * d + 3 * 2 * hidden  # layer 1, linear_in of step 3
    rows = slice(start, start + 2 * hidden)
    np.testing.assert_array_equal(np.array(layer.gating[3].linear_in.weight), stack.qa[rows])
    rows = slice((s + 5) * d, (s + 6) * d)  # layer 1, linear_out of step 5
    np.testing.assert_array_equal(np.array(layer.gating[5].linear_out.scales), stack.sb[rows])
    np.testing.assert_array_equal(np.array(lm.linears[2].weight), stack.heads[2 * 256 : 3 * 256])
    # replacing a weight makes the stack stale (the kernel would read the old one)
    lm.linears[0].weight = lm.linears[0].weight + 1
    assert lm.depformer_stack() is None


@pytest.mark.skipif(on_cuda(), reason="on CUDA the kernel runs")
def test_off_the_gpu_the_depformer_runs_on_mlx_ops():
    lm = small_lm()
    assert not depformer_kernel.enabled()
    assert lm.depformer_stack() is None  # prepare stacks nothing where the kernel cannot run


def _key(values: np.ndarray) -> np.ndarray:
    u = values.astype(np.float32).view(np.uint32)
    return np.where(u & 0x80000000, ~u, u | 0x80000000).astype(np.uint32)


def _unkey(key: int) -> np.float32:
    u = key & 0x7FFFFFFF if key & 0x80000000 else ~key & 0xFFFFFFFF
    return np.array([u], dtype=np.uint32).view(np.float32)[0]


def kernel_kth(values: np.ndarray, top_k: int) -> np.float32:
    """The kernel's radix select, step by step: the top_k-th largest value, 8 bits at a time."""
    keys = _key(values)
    prefix, mask, kk = 0, 0, top_k
    for shift in (24, 16, 8, 0):
        candidates = keys[(keys & mask) == prefix]
        hist = np.bincount((candidates >> shift) & 255, minlength=256)
        above, chosen = 0, None
        for digit in range(255, -1, -1):  # the kernel: lanes of 8 bins, suffix sums from the top
            if above < kk <= above + hist[digit]:
                chosen, new_kk = digit, kk - above
            above += hist[digit]
        prefix |= chosen << shift
        mask |= 255 << shift
        kk = new_kk
    return _unkey(prefix)


@pytest.mark.parametrize("seed", range(6))
def test_the_kernels_top_k_cut_is_the_partitions(seed):
    rng = np.random.default_rng(seed)
    n = 2048
    values = rng.normal(size=n).astype(np.float32) * 4
    if seed % 2:  # bfloat16 logits: many ties
        values = np.array(mx.array(values).astype(mx.bfloat16).astype(mx.float32))
    if seed == 4:
        values[:7] = values.max()  # the largest value tied 8 times
    if seed == 5:
        values = -np.abs(values)  # all negative
    for top_k in (1, 8, 25, 250, n - 1):
        want = np.partition(values, n - top_k)[n - top_k]
        assert kernel_kth(values, top_k) == want


@GPU
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_the_kernel_passes_its_check_and_runs_the_depformer(bits, dtype):
    lm = small_lm(bits=bits, dtype=dtype)  # building it prepares it: stack + check
    assert depformer_kernel.disabled_reason is None
    assert lm.depformer_stack() is not None
    h = mx.random.normal((1, 1, 256), key=mx.random.key(9)).astype(dtype)
    text = mx.array(11, dtype=mx.int32)
    forced = mx.array(np.arange(16) * 3, dtype=mx.int32)
    provided = mx.array(np.arange(16) % 3 == 0)
    tokens = lm.depformer_step(h, text, forced=forced, provided=provided, n_steps=16)
    # the forced tokens come out where provided; the others are the argmax of MLX's logits
    ref = np.array(lm.depformer_logits(h, text, tokens, 16))
    got = np.array(tokens)
    p = np.array(provided)
    np.testing.assert_array_equal(got[p], np.array(forced)[p])
    for k in np.flatnonzero(~p):
        best = int(ref[k].argmax())
        assert got[k] == best or ref[k, best] - ref[k, got[k]] <= 2e-2 * np.abs(ref[k]).max()


@GPU
def test_a_wrong_kernel_is_turned_off(monkeypatch):
    monkeypatch.setattr(depformer_kernel, "disabled_reason", None)
    monkeypatch.setattr(depformer_kernel, "_kernels", {})
    monkeypatch.setattr(depformer_kernel, "name", "ppx_depformer_broken")
    broken = depformer_kernel.body.replace("x2[r] = ppx_f(T(v + xs[r]))", "x2[r] = ppx_f(T(v))")
    assert broken != depformer_kernel.body
    monkeypatch.setattr(depformer_kernel, "body", broken)
    lm = small_lm()
    assert not depformer_kernel.enabled()
    assert "failed its check" in depformer_kernel.disabled_reason
    assert lm.depformer_stack() is not None  # stacked, but the MLX ops run it
