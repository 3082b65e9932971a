"""Mimi's transformer as one CUDA kernel (`model/cuda/mimi_transformer.py`): when it applies, and
on an NVIDIA GPU the kernel itself against MLX's ops.

The kernel runs only through MLX's CUDA backend; its GPU cases are skipped elsewhere (they ran
on an H200, see docs/cuda-kernels.md §Mimi's transformer). Everywhere: the published Mimi's
shapes are supported and the CPU keeps MLX's path.
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda
from model.config import MimiConfig, config_7b, mimi_tiny
from model.cuda import MIMI_TRANSFORMER as kernel
from model.cuda import ahead, persistent, precompiled
from model.cuda.mimi_transformer import MIMI_ROW_TOLERANCE
from model.cuda.seanet import VARIANTS as SEANET_VARIANTS
from model.mimi import MimiCodec
from tests.test_precompiled import NVRTC, compiles_for_an_h200, fake_cuda

GPU = pytest.mark.skipif(not on_cuda(), reason="the kernel runs on NVIDIA GPUs only")


@pytest.fixture(scope="module")
def codec() -> MimiCodec:
    return MimiCodec.random(MimiConfig(), seed=3)


def _frames(tr, n: int, seed: int, kernel_path: bool, step=None) -> np.ndarray:
    """Outputs of n frames of random steps from empty caches, by the kernel or MLX's ops."""
    d, ts = tr.layers[0].linear1.weight.shape[0], tr._per_frame
    state = tr.init_state()
    outs = []
    for i in range(n):
        x = mx.random.normal((1, ts, d), key=mx.random.key(seed + i))
        if kernel_path:
            y, state = (step or tr.step)(x, state)
        else:
            y, state = tr.mlx_step(x, state, tr.is_full(i * ts, ts))
        mx.eval(y, state)
        outs.append(np.array(y).reshape(ts, d))
    return np.stack(outs)


def test_the_published_shapes_are_supported_and_the_tiny_ones_are_not(codec):
    assert kernel.supports(codec.model.encoder_transformer) is None
    assert kernel.supports(codec.model.decoder_transformer) is None
    tiny = MimiCodec.random(mimi_tiny())
    assert "shapes" in kernel.supports(tiny.model.encoder_transformer)


def test_switched_off_or_off_the_gpu_the_codec_runs_mlx_ops(monkeypatch):
    """`PPX_MIMI=mlx` (or no CUDA): nothing is stacked or checked and `step` runs `mlx_step`."""
    monkeypatch.setenv(kernel.env_var, "mlx")
    codec = MimiCodec.random(MimiConfig(), seed=6)
    assert not codec.model.prepare_kernels()
    tr = codec.model.encoder_transformer
    assert not tr.on_kernel()
    x = mx.random.normal((1, 2, 512), key=mx.random.key(1))
    got, (offset, _) = tr.step(x, tr.init_state())
    want, _ = tr.mlx_step(x, tr.init_state())
    np.testing.assert_array_equal(np.array(got), np.array(want))
    assert offset.item() == 2


def test_the_stack_holds_the_rows_the_kernel_reads(codec):
    """wa: in_proj, out_proj * layer_scale_1, linear1 rows ([out, in]) per layer; wb: linear2
    * layer_scale_2 rows; norms: norm1 w, b, norm2 w, b per layer."""
    tr = codec.model.decoder_transformer
    stack = kernel.stack(tr)
    d, hid, layers = 512, 2048, len(tr.layers)
    assert stack.wa.shape == (layers * (3 * d + d + hid), d) and stack.wa.dtype == mx.float32
    assert stack.wb.shape == (layers * d, hid)
    assert stack.norms.shape == (layers * 4 * d,)
    layer, i = tr.layers[5], 5
    rows = np.array(stack.wa[i * (4 * d + hid) : (i + 1) * (4 * d + hid)])
    np.testing.assert_array_equal(rows[: 3 * d], np.array(layer.self_attn.in_proj.weight).T)
    out = np.array(layer.self_attn.out_proj.weight) * np.array(layer.layer_scale_1.scale)
    np.testing.assert_allclose(rows[3 * d : 4 * d], out.T, rtol=1e-6)
    np.testing.assert_array_equal(rows[4 * d :], np.array(layer.linear1.weight).T)
    w2 = np.array(layer.linear2.weight) * np.array(layer.layer_scale_2.scale)
    np.testing.assert_allclose(np.array(stack.wb[i * d : (i + 1) * d]), w2.T, rtol=1e-6)
    np.testing.assert_array_equal(
        np.array(stack.norms[(4 * i + 3) * d : (4 * i + 4) * d]), np.array(layer.norm2.bias)
    )


@GPU
def test_the_codec_runs_both_transformers_on_the_checked_kernel(codec):
    assert kernel.disabled_reason is None
    assert codec.model.encoder_transformer.on_kernel()
    assert codec.model.decoder_transformer.on_kernel()


@GPU
def test_the_kernel_streams_like_mlx_through_a_wrapping_ring(codec):
    """140 frames: 280 steps through the 250-slot ring (it wraps at frame 125)."""
    tr = codec.model.encoder_transformer
    assert tr.on_kernel()
    ours = _frames(tr, 140, seed=7, kernel_path=True)
    theirs = _frames(tr, 140, seed=7, kernel_path=False)
    worst = persistent.compare(mx.array(ours), mx.array(theirs), "outputs", MIMI_ROW_TOLERANCE)
    print(f"worst relative row error over 140 frames: {worst:.3g}")


@GPU
def test_compiled_kernel_steps_equal_direct_ones(codec):
    """Sessions run the step inside compiled graphs that return the rings they were given."""
    tr = codec.model.decoder_transformer
    assert tr.on_kernel()
    direct = _frames(tr, 12, seed=9, kernel_path=True)
    compiled = _frames(tr, 12, seed=9, kernel_path=True, step=mx.compile(tr.step))
    np.testing.assert_array_equal(compiled, direct)


@GPU
def test_the_check_catches_one_norm_weight_off_by_one_percent(codec):
    tr = codec.model.encoder_transformer
    stack = kernel.stack(tr)
    assert kernel.verify(tr, stack) <= MIMI_ROW_TOLERANCE
    d = 512
    scale = np.ones(stack.norms.shape, np.float32)
    scale[4 * 6 * d : (4 * 6 + 1) * d] = 1.01  # norm1's weight of layer 6
    with pytest.raises(ValueError, match="layer 6 keys"):
        kernel.verify(tr, replace(stack, norms=stack.norms * mx.array(scale)))


@GPU
def test_a_wrong_kernel_is_turned_off(monkeypatch):
    monkeypatch.setattr(kernel, "disabled_reason", None)
    monkeypatch.setattr(kernel, "_kernels", {})
    monkeypatch.setattr(kernel, "name", "ppx_mimi_broken")
    broken = kernel.body.replace("const float c = cosf(theta)", "const float c = 1.f")
    assert broken != kernel.body
    monkeypatch.setattr(kernel, "body", broken)
    codec = MimiCodec.random(MimiConfig(), seed=4)
    assert not kernel.enabled()
    assert "failed its check" in kernel.disabled_reason
    assert not codec.model.encoder_transformer.on_kernel()


@GPU
def test_the_codec_streams_like_mlx(codec, monkeypatch):
    """The whole streaming codec, kernel against MLX's ops: decoding the same codes gives the
    same audio to 1e-2 of each frame's norm; encoding speech-like noise gives mostly the same
    codes (a code whose two nearest entries are nearly tied may flip, as TF32 matmuls flip it)."""
    rng = np.random.default_rng(0)
    frames = 20
    pcm = (rng.standard_normal(frames * 1920) * 0.1).astype(np.float32)
    codes_in = rng.integers(0, 2048, size=(frames, 8)).astype(np.int32)
    results = {}
    for mode in ("kernel", "mlx"):
        if mode == "mlx":
            monkeypatch.setenv(kernel.env_var, "mlx")
        c = MimiCodec.random(MimiConfig(), seed=3)
        assert c.model.encoder_transformer.on_kernel() == (mode == "kernel")
        enc, dec = [], []
        for i in range(frames):
            enc.append(np.array(c.encode_step(mx.array(pcm[i * 1920 : (i + 1) * 1920]))))
            dec.append(np.array(c.decode_step(mx.array(codes_in[i]))))
        results[mode] = (np.stack(enc), np.stack(dec))
    same = (results["kernel"][0] == results["mlx"][0]).mean()
    print(f"codes equal: {same:.3f}")
    assert same >= 0.9
    persistent.compare(
        mx.array(results["kernel"][1]), mx.array(results["mlx"][1]), "audio", MIMI_ROW_TOLERANCE
    )


@NVRTC
def test_nvrtc_compiles_the_unit_for_an_h200(tmp_path, monkeypatch, codec):
    """On any Linux x86_64 machine: the kernel's translation unit compiles to a cubin."""
    tr = codec.model.encoder_transformer
    rings = [mx.zeros((1,))] * len(tr.layers)
    x = mx.zeros((1, 2, 512))
    compiles_for_an_h200(
        tmp_path,
        monkeypatch,
        kernel,
        lambda: kernel.run(tr, kernel.stack(tr), x, mx.array(0), rings),
    )


def test_the_unit_is_named_ahead_as_the_codec_compiles_it(monkeypatch, codec):
    """The app compiles the unit while the weights load (`ahead.units` with the Mimi config):
    it must be the very unit the loaded codec's transformers ask for."""
    monkeypatch.setenv(kernel.env_var, "")
    monkeypatch.setattr(kernel, "_kernels", {})
    monkeypatch.setattr(kernel, "disabled_reason", None)
    tr = codec.model.decoder_transformer
    with fake_cuda():
        with precompiled.collecting() as real:
            rings = [mx.zeros((1,))] * len(tr.layers)
            kernel.run(tr, kernel.stack(tr), mx.zeros((1, 2, 512)), mx.array(0), rings)
        named = ahead.units(config_7b().lm, mx.bfloat16, 4, 64, config_7b().mimi)
        without = ahead.units(config_7b().lm, mx.bfloat16, 4, 64)
    assert len(real) == 1 and real[0] in named
    # and the quantizer's, and the SEANet kernel's variants
    assert real[0] not in without and len(named) == len(without) + 2 + len(SEANET_VARIANTS)
