"""The one-kernel depformer (`model/cuda/depformer.py`): its stacked weights, when it applies, its
top-k selection, and on an NVIDIA GPU the kernel itself against MLX's ops.

The kernel runs only through MLX's CUDA backend; its GPU cases are skipped elsewhere (they ran
on an H100/H200, see docs/speed-log.md). Everywhere: stacking the weights changes no
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
from model.cuda import TextDraw
from model.cuda.depformer import numpy_draw
from model.sampling import SamplingParams, draw, sample_token
from tests.lm_helpers import small_config

GPU = pytest.mark.skipif(not on_cuda(), reason="the kernel runs on NVIDIA GPUs only")


def small_lm(bits: int | None = 8, dtype: mx.Dtype = mx.float32, seed: int = 0):
    # depformer head_dim 32 (a warp's lanes), card a power of two, group-aligned widths
    config = small_config(
        d_model=256,
        dep_dim=64,
        dep_heads=2,
        dep_dim_feedforward=192,
        bits=bits,
        card=256,
        text_card=200,  # a multiple of 8: the kernel draws the text token too
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


def kernel_kth(values: np.ndarray, top_k: int, last_shift: int = 0) -> np.float32:
    """The kernel's radix select, step by step: the top_k-th largest value, 8 bits at a time,
    from the top byte of the keys down to `last_shift` (ppx_key_bytes: 16 for bfloat16 values,
    8 for float16 ones), the bytes below filled as the value's sign has them."""
    keys = _key(values)
    prefix, mask, kk = 0, 0, top_k
    for shift in range(24, last_shift - 1, -8):
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
    low = (1 << last_shift) - 1
    return _unkey(prefix if prefix & 0x80000000 else prefix | low)


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


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("dtype", "last_shift"), [(mx.bfloat16, 16), (mx.float16, 8)])
def test_the_cut_of_half_precision_logits_needs_only_their_significant_bytes(
    seed, dtype, last_shift
):
    rng = np.random.default_rng(seed)
    n = 2048
    values = rng.normal(size=n).astype(np.float32) * (4 if seed % 2 else 0.01)
    if seed == 2:
        values[::5] = 0.0
        values[1::5] = -0.0
    if seed == 4:
        values = np.abs(values)  # all positive
    if seed == 5:
        values = -np.abs(values)  # all negative
    values = np.array(mx.array(values).astype(dtype).astype(mx.float32))
    for top_k in (1, 8, 25, 250, n - 1):
        want = np.partition(values, n - top_k)[n - top_k]
        got = kernel_kth(values, top_k, last_shift)
        assert got == want
        assert got.view(np.uint32) == kernel_kth(values, top_k).view(np.uint32)


def _text_case(card: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Text logits on a coarse grid (many ties, at the top and at the cut), and Gumbel noise."""
    rng = np.random.default_rng(seed)
    logits = (np.round(rng.standard_normal(card) * 8.0) / 4.0).astype(np.float32)
    noise = np.array(mx.random.gumbel((card,), key=mx.random.key(seed)))
    return logits, noise


TEXT_PARAMS = [
    SamplingParams(0.0, 0),
    SamplingParams(0.7, 25),
    SamplingParams(0.7, 1),
    SamplingParams(1.3, 0),
    SamplingParams(0.5, 4000),  # no cut: top-k at least the vocabulary
]


@pytest.mark.parametrize("params", TEXT_PARAMS)
def test_the_checks_reference_draw_is_mlxs(params):
    for seed in range(4):
        logits, noise = _text_case(3000, seed)
        want = draw(mx.array(logits), params, None if params.greedy else mx.array(noise))
        assert numpy_draw(logits, params, noise) == int(want.item())


@pytest.mark.parametrize("text_params", [SamplingParams(0.0, 0), SamplingParams(0.7, 25)])
def test_drawing_the_column_is_the_text_token_then_the_depformer_step(text_params):
    lm = small_lm(bits=4, dtype=mx.bfloat16)
    h = mx.random.normal((1, 1, 256), key=mx.random.key(4)).astype(mx.bfloat16)
    logits = mx.array(_text_case(lm.config.text_card, 2)[0]).astype(mx.bfloat16)
    audio = SamplingParams(0.8, 25)
    text_key, key = mx.random.key(5), mx.random.key(6)
    text, tokens = lm.draw_column(
        h, logits, text_params=text_params, text_key=text_key, n_steps=8, params=audio, key=key
    )
    want_text = sample_token(logits, text_params, text_key)
    want = lm.depformer_step(h, want_text, n_steps=8, params=audio, key=key)
    assert text.dtype == mx.int32 and text.shape == ()
    assert int(text.item()) == int(want_text.item())
    assert np.array(tokens).tolist() == np.array(want).tolist()


@pytest.mark.parametrize(("cut", "passes"), [(0, True), (1, False), (-1, False)])
def test_the_check_of_the_text_draw_tells_a_cut_one_off(monkeypatch, cut, passes):
    """The load-time check, run against a stand-in for the kernel that draws in NumPy with the
    top-k cut moved by `cut`: it passes the right cut only."""
    lm = small_lm(bits=4, dtype=mx.bfloat16)
    column = mx.array([1, 2, 3], dtype=mx.int32)

    def stand_in(self, lm, weights, dep_in, text, n_steps, params, noise):
        p = text.params
        moved = p if p.greedy else SamplingParams(p.temperature, p.top_k + cut)
        noise_np = None if text.noise is None else np.array(text.noise)
        token = numpy_draw(np.array(text.logits.astype(mx.float32)), moved, noise_np)
        return mx.array(token, dtype=mx.int32), column, None

    monkeypatch.setattr(type(depformer_kernel), "run_drawing_text", stand_in)
    noise = mx.random.gumbel((3, lm.config.card), key=mx.random.key(1))
    check = depformer_kernel._verify_text_draw
    args = (lm, None, None, SamplingParams(0.8, 25), noise, column, mx.random.key(2))
    if passes:
        check(*args)
    else:
        with pytest.raises(ValueError, match="is not the draw's"):
            check(*args)


@GPU
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16, mx.float16])
def test_the_kernel_draws_the_text_token_as_mlx_and_runs_the_column_after_it(dtype):
    lm = small_lm(bits=4, dtype=dtype)
    assert depformer_kernel.disabled_reason is None
    stack = lm.depformer_stack()
    h = mx.random.normal((1, 1, 256), key=mx.random.key(9)).astype(dtype)
    dep_in = lm.depformer_inputs_flat(h, 8)
    audio = SamplingParams(0.8, 25)
    noise = mx.random.gumbel((8, lm.config.card), key=mx.random.key(8))
    for seed in range(3):
        logits, tnoise = _text_case(lm.config.text_card, seed)
        logits = np.array(mx.array(logits).astype(dtype).astype(mx.float32))
        for params in TEXT_PARAMS:
            draw_of = TextDraw(
                mx.array(logits).astype(dtype), params, None if params.greedy else mx.array(tnoise)
            )
            text, tokens, _ = depformer_kernel.run_drawing_text(
                lm, stack, dep_in, draw_of, 8, audio, noise
            )
            want = draw(
                mx.array(logits).astype(dtype), params, None if params.greedy else mx.array(tnoise)
            )
            assert int(text.item()) == int(want.item()) == numpy_draw(logits, params, tnoise)
            given, _, _ = depformer_kernel.run(lm, stack, dep_in, text, 8, audio, noise)
            assert np.array(tokens).tolist() == np.array(given).tolist()


@GPU
def test_a_kernel_that_draws_the_text_token_wrong_is_turned_off(monkeypatch):
    monkeypatch.setattr(depformer_kernel, "disabled_reason", None)
    real = type(depformer_kernel).run_drawing_text

    def wrong_cut(self, lm, weights, dep_in, text, *args):  # one more logit past the cut
        text = TextDraw(text.logits, SamplingParams(text.params.temperature, 26), text.noise)
        return real(self, lm, weights, dep_in, text, *args)

    monkeypatch.setattr(type(depformer_kernel), "run_drawing_text", wrong_cut)
    small_lm(seed=3)
    assert not depformer_kernel.enabled()
    assert "text token" in depformer_kernel.disabled_reason


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
