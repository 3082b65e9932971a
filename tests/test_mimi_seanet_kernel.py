"""Mimi's SEANet convolutions on CUDA (`model/cuda/seanet.py`): the plan the model hands the
kernel, the kernel's arithmetic emulated in NumPy against MLX's ops, its units, and on an NVIDIA
GPU the kernel itself against MLX's ops.

The kernel runs only through MLX's CUDA backend; its GPU cases are skipped elsewhere (they ran
on an H200, see docs/cuda-kernels.md §Mimi's SEANet convolutions).
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda
from model.config import MimiConfig, mimi_tiny
from model.cuda import MIMI_SEANET as kernel
from model.cuda import ModuleStack, ahead, precompiled
from model.cuda.seanet import BIAS, ELU, RAW, RES, STATE, VARIANTS
from model.mimi import MimiCodec
from model.mimi.seanet import KERNEL_ROWS
from tests.test_precompiled import NVRTC, compiles_for_an_h200, fake_cuda

GPU = pytest.mark.skipif(not on_cuda(), reason="the kernel runs on NVIDIA GPUs only")


@pytest.fixture(scope="module")
def codec() -> MimiCodec:
    return MimiCodec.random(MimiConfig(), seed=7)


def emulate(a, x, kept, residual):
    """What src/seanet_conv.cu computes for one launch, in float64 NumPy, from its int params."""
    c, ctx, k, s, d, t, o, t_in, flags = (int(v) for v in np.array(a.params))
    rows = np.concatenate(
        [
            np.array(kept, np.float64)[: ctx * c].reshape(ctx, c),
            np.array(x, np.float64).reshape(t_in, c),
        ]
    )
    taps = np.arange(t)[:, None] * s + np.arange(k)[None, :] * d  # [t, k] row of each tap
    y = rows[taps].reshape(t, k * c) @ np.array(a.weight, np.float64).T
    if flags & BIAS:
        y += np.array(a.bias, np.float64)
    if flags & RES:
        y += np.array(residual, np.float64).reshape(t, o)
    ones = np.zeros(1)

    up = a.conv.upsample

    def out(v, shape):
        return mx.array(v.reshape(shape).astype(np.float32))

    rows_out = (1, t * up, o // up)  # the shapes the kernel's outputs are declared with
    return (
        out(y, rows_out) if flags & RAW else out(ones, (1,)),
        out(np.where(y > 0, y, np.expm1(np.minimum(y, 0))), rows_out)
        if flags & ELU
        else out(ones, (1,)),
        out(rows[t_in : t_in + ctx], (1, ctx, c)) if flags & STATE else out(ones, (1,)),
    )


def test_the_published_seanets_are_planned_as_fourteen_convolutions(codec):
    enc, dec = codec.model.encoder, codec.model.decoder
    for stack in (enc, dec):
        assert kernel.supports(stack) is None
        plan = kernel.stack(stack)
        assert len(plan.launches) == 14
    enc_plan, dec_plan = kernel.stack(enc), kernel.stack(dec)
    # the encoder: 1920 samples in, 2 latent rows of 512 out; the decoder the reverse
    assert enc_plan.launches[0].rows_in == 1920 and enc_plan.launches[-1].rows_out == 2
    assert enc_plan.launches[-1].outputs == 512
    assert dec_plan.launches[0].rows_in == 2 and dec_plan.launches[-1].rows_out == 1920
    # the transposed convolutions upsample: 2 -> 16 -> 96 -> 480 -> 1920 rows
    assert [a.rows_in for a in dec_plan.launches if a.conv.upsample > 1] == [2, 16, 96, 480]
    # each residual block: conv1 reads an ELU and writes only its ELU; conv2 adds the block's
    # input, which the convolution before it wrote raw as well as ELU'd
    for plan in (enc_plan, dec_plan):
        a = plan.launches
        for i, launch in enumerate(a):
            if launch.conv.residual:
                assert a[i - 1].flags & (RAW | ELU) == ELU and a[i - 1].conv.elu_input
                assert a[i - 2].flags & RAW and a[i - 2].flags & ELU
                assert not launch.flags & STATE and launch.conv.context == 0
    # the last convolution writes the raw sum only (Mimi's SEANets end with a convolution)
    assert enc_plan.launches[-1].flags & (RAW | ELU) == RAW
    assert {a.variant for p in (enc_plan, dec_plan) for a in p.launches} <= set(VARIANTS)


def test_layers_it_does_not_take_leave_the_stack_on_mlx_ops():
    tiny = MimiCodec.random(mimi_tiny(), seed=1).model
    assert kernel.supports(tiny.encoder) is None  # the tiny shapes are fine
    assert tiny.downsample.kernel_form(0) is None  # replicate padding
    assert tiny.upsample.kernel_form(0) is None  # depthwise


def test_the_kernels_arithmetic_emulated_equals_mlx_ops_over_frames(codec, monkeypatch):
    """The plan (transposed weights, params, flags, which output each convolution reads, the
    residuals, the kept rows carried as ELU'd rows) run through `emulate` for four frames from
    zero state equals MLX's ops: to 1e-4 on the CPU, where MLX sums in float32; to 1e-2 on CUDA,
    where MLX's float32 matmuls run on TF32 tensor cores (8e-4 measured on an H200)."""
    bound = 1e-2 if on_cuda() else 1e-4
    monkeypatch.setattr(kernel, "launch", emulate)
    for stack, n in ((codec.model.encoder, 1), (codec.model.decoder, 512)):
        plan = kernel.stack(stack)
        ours, theirs = stack.init_state(kernel=False), stack.init_state(kernel=False)
        for frame in range(4):
            x = mx.random.normal((1, stack.frame_rows, n), key=mx.random.key(frame)) * 0.3
            got, ours = kernel.run(stack, plan, x, ours)
            want, theirs = stack.mlx_call(x, theirs)
            assert got.shape == want.shape
            g, w = np.array(got).reshape(-1), np.array(want).reshape(-1)
            assert np.linalg.norm(g - w) <= bound * np.linalg.norm(w), frame
        # kept rows: the same shapes as MLX's ops keep
        for a, b in zip(ours, theirs, strict=True):
            assert [s.shape for s in a] == [s.shape for s in b]
    # and `verify` (the load-time check) passes on the emulation
    assert kernel.verify(codec.model.encoder, kernel.stack(codec.model.encoder)) < bound


def one_percent_off(plan, i: int):
    """The plan with launch i's weight scaled by 1.01 (a convolution subtly wrong)."""
    a = plan.launches[i]
    bad = replace(a, weight=a.weight * 1.01)
    return replace(plan, launches=(*plan.launches[:i], bad, *plan.launches[i + 1 :]))


def test_the_emulated_check_catches_a_downsampling_weight_off_by_one_percent(codec, monkeypatch):
    """Launch 6 is the encoder's second downsampling convolution: its output's gain moves by
    about 6.6e-3 (emulated), over the check's 4e-3 for rows of 512. (A residual block's conv1
    off by 1% moves the output less than the check sees: residual branches are small.)"""
    monkeypatch.setattr(kernel, "launch", emulate)
    stack = codec.model.encoder
    with pytest.raises(ValueError, match="gain"):
        kernel.verify(stack, one_percent_off(kernel.stack(stack), 6))


def test_switched_off_or_off_the_gpu_the_seanets_run_mlx_ops(monkeypatch):
    monkeypatch.setenv(kernel.env_var, "mlx")
    m = MimiCodec.random(MimiConfig(), seed=8).model
    assert not m.encoder.prepare_kernel() and not m.encoder.on_kernel()
    assert not m.decoder.prepare_kernel() and not m.decoder.on_kernel()


@NVRTC
@pytest.mark.parametrize("variant", VARIANTS)
def test_nvrtc_compiles_each_unit_for_an_h200(tmp_path, monkeypatch, codec, variant):
    plan = kernel.stack(codec.model.encoder)
    a = replace(plan.launches[3], variant=variant)
    z = mx.zeros((1,))
    compiles_for_an_h200(tmp_path, monkeypatch, kernel, lambda: kernel.launch(a, z, z, z))


def test_the_units_named_ahead_cover_every_launch_of_the_published_mimi(codec, monkeypatch):
    monkeypatch.setenv(kernel.env_var, "")
    monkeypatch.setattr(kernel, "_kernels", {})
    monkeypatch.setattr(kernel, "disabled_reason", None)
    with fake_cuda():
        named = {s for s, _ in ahead.seanet_units()}
        with precompiled.collecting() as real:
            for stack in (codec.model.encoder, codec.model.decoder):
                stack_plan = kernel.stack(stack)
                state = stack.init_state(kernel=False)
                x = mx.zeros((1, stack.frame_rows, stack_plan.launches[0].conv.channels))
                kernel.run(stack, stack_plan, x, state)
    assert {s for s, _ in real} <= named
    assert len(named) == len(VARIANTS)


@GPU
def test_the_codecs_seanets_run_on_the_checked_kernel(codec):
    assert kernel.disabled_reason is None
    assert codec.model.encoder.on_kernel() and codec.model.decoder.on_kernel()


@GPU
def test_the_kernel_equals_mlx_ops_frame_after_frame(codec):
    """Ten frames of speech-like input through the encoder, then its codes through the decoder,
    on the kernel and on MLX's ops (each with its own state): rows agree to the check's bound."""
    for stack, n in ((codec.model.encoder, 1), (codec.model.decoder, 512)):
        plan = kernel.stack(stack)
        ours, theirs = stack.init_state(kernel=False), stack.init_state(kernel=False)
        worst = 0.0
        for frame in range(10):
            x = mx.random.normal((1, stack.frame_rows, n), key=mx.random.key(50 + frame))
            got, ours = kernel.run(stack, plan, x * (0.05 if n == 1 else 1.0), ours)
            want, theirs = stack.mlx_call(x * (0.05 if n == 1 else 1.0), theirs)
            g, w = np.array(got).reshape(-1), np.array(want).reshape(-1)
            worst = max(worst, float(np.linalg.norm(g - w) / np.linalg.norm(w)))
        print(f"worst relative error over 10 frames: {worst:.2e}")
        assert worst <= 1e-2


@GPU
def test_compiled_and_direct_calls_are_equal(codec):
    stack = codec.model.encoder
    x = mx.random.normal((1, stack.frame_rows, 1), key=mx.random.key(3)) * 0.1
    direct, _ = stack(x, stack.init_state())
    compiled, _ = mx.compile(stack)(x, stack.init_state())
    np.testing.assert_array_equal(np.array(direct), np.array(compiled))


@GPU
def test_the_check_catches_a_downsampling_weight_off_by_one_percent_on_the_gpu(codec):
    stack = codec.model.encoder
    with pytest.raises(ValueError, match="gain"):
        kernel.verify(stack, one_percent_off(kernel.stack(stack), 6))


@GPU
def test_a_failed_check_leaves_mlx_ops(codec, monkeypatch):
    m = MimiCodec.random(MimiConfig(), seed=9).model
    monkeypatch.setattr(kernel, "disabled_reason", None)
    stack = ModuleStack(kernel)

    def broken(module, plan):
        raise ValueError("made to fail")

    monkeypatch.setattr(kernel, "verify", broken)
    assert not stack.prepare(m.encoder)
    assert "made to fail" in (kernel.disabled_reason or "")


# Emulated kernel against MLX's ops: 1e-4 of the norm on the CPU; on CUDA MLX's float32 matmuls
# run on TF32 tensor cores, and an H200 measured 9.0e-4 (26 decoded frames) and 8.1e-4 (one
# encoded frame), so 5e-3 there. A wrong state is far above either: the last of the 26 frames
# decoded from a fresh state instead differs by 0.20 of the norm.
EMULATED_BOUND = 5e-3 if on_cuda() else 1e-4


def test_a_streamed_kernel_and_whole_signals_on_mlx_ops_agree(monkeypatch):
    """With the kernel on (emulated in NumPy), `decode_step` frame by frame runs it, and
    decoding a whole signal runs MLX's ops for the SEANet (chunks of 25 frames carrying MLX's
    state: a 26-frame signal's last chunk is one frame, which must not meet the kernel, whose
    kept rows differ, with that state). The two agree; the whole signal is the same with the
    kernel on or off."""
    monkeypatch.setattr(kernel, "launch", emulate)
    monkeypatch.setattr(kernel, "available", lambda: True)
    monkeypatch.setattr(kernel, "disabled_reason", None)
    m = MimiCodec.random(MimiConfig(), seed=11).model
    assert m.decoder.prepare_kernel() and m.decoder.on_kernel()
    codes = mx.array(np.random.default_rng(2).integers(0, 2048, (8, 26)), dtype=mx.int32)
    whole = np.array(m.decode(codes))
    state, streamed = m.init_decode_state(), []
    for i in range(26):
        pcm, state = m.decode_step(codes[:, i], state)
        streamed.append(np.array(pcm))
    streamed = np.concatenate(streamed)
    assert np.linalg.norm(streamed - whole) <= EMULATED_BOUND * np.linalg.norm(whole)
    monkeypatch.setattr(kernel, "available", lambda: False)
    assert not m.decoder.on_kernel()
    np.testing.assert_array_equal(np.array(m.decode(codes)), whole)


def test_whole_signals_encode_the_same_with_the_kernel_on_or_off(monkeypatch):
    """The encoder's side of the test above: a 26-frame signal (its last chunk one frame) gives
    the same codes whether the SEANet kernel (emulated) is on or off."""
    monkeypatch.setattr(kernel, "launch", emulate)
    monkeypatch.setattr(kernel, "available", lambda: True)
    monkeypatch.setattr(kernel, "disabled_reason", None)
    m = MimiCodec.random(MimiConfig(), seed=12).model
    assert m.encoder.prepare_kernel() and m.encoder.on_kernel()
    pcm = mx.array(np.random.default_rng(4).standard_normal(26 * 1920).astype(np.float32) * 0.1)
    on = np.array(m.encode(pcm))
    monkeypatch.setattr(kernel, "available", lambda: False)
    np.testing.assert_array_equal(np.array(m.encode(pcm)), on)


def test_a_state_is_stepped_only_by_the_path_it_was_made_for(monkeypatch):
    """With the kernel on (emulated), a fresh state is the kernel's (its layers under
    `KERNEL_ROWS`) and a step keeps it so; `kernel=False` gives MLX's ops' list. Handing the
    kernel's state to MLX's ops, or more than one frame to the kernel, is refused, and so is
    the kernel's state once the kernel is off: their kept rows differ (308c51f's bug)."""
    monkeypatch.setattr(kernel, "launch", emulate)
    monkeypatch.setattr(kernel, "available", lambda: True)
    monkeypatch.setattr(kernel, "disabled_reason", None)
    m = MimiCodec.random(MimiConfig(), seed=13).model
    stack = m.encoder
    assert stack.prepare_kernel()
    frame = mx.random.normal((1, stack.frame_rows, 1), key=mx.random.key(5)) * 0.1
    ours = stack.init_state()
    assert isinstance(ours, dict) and list(ours) == [KERNEL_ROWS]
    y, ours = stack(frame, ours)
    assert isinstance(ours, dict) and len(ours[KERNEL_ROWS]) == len(stack.layers)
    theirs = stack.init_state(kernel=False)
    assert isinstance(theirs, list)
    want, theirs = stack(frame, theirs)  # a frame on MLX's ops' state: MLX's ops
    assert isinstance(theirs, list)
    g, w = np.array(y).reshape(-1), np.array(want).reshape(-1)
    assert np.linalg.norm(g - w) <= EMULATED_BOUND * np.linalg.norm(w)
    with pytest.raises(ValueError, match="MLX's ops cannot step"):
        stack.mlx_call(frame, ours)
    two = mx.concatenate([frame, frame], axis=1)
    with pytest.raises(ValueError, match="one frame"):
        stack(two, ours)
    assert isinstance(stack(two, theirs)[1], list)
    monkeypatch.setattr(kernel, "available", lambda: False)
    assert isinstance(stack.init_state(), list)
    with pytest.raises(ValueError, match="now off"):
        stack(frame, ours)
