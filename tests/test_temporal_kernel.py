"""The one-kernel temporal step (`model/cuda/temporal.py`): its stacked weights, when it applies,
and on an NVIDIA GPU the kernel itself against MLX's ops.

The kernel runs only through MLX's CUDA backend; its GPU cases are skipped elsewhere (they ran
on an H100/H200, see docs/speed-log.md). Everywhere: stacking the weights changes no
number and the CPU keeps MLX's path.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda
from model.checkpoints.random_weights import random_lm
from model.cuda import TEMPORAL as temporal_kernel
from model.cuda import persistent, temporal
from tests.lm_helpers import small_config

GPU = pytest.mark.skipif(not on_cuda(), reason="the kernel runs on NVIDIA GPUs only")


def small_lm(bits: int | None = 8, dtype: mx.Dtype = mx.bfloat16, context: int = 40, seed=0):
    # head_dim 64 (whole lanes), group-aligned widths
    config = small_config(
        d_model=256, num_heads=4, context=context, dep_dim=64, dep_dim_feedforward=192, bits=bits
    )
    return random_lm(config, dtype=dtype, seed=seed)


def steps(lm, n: int, seed: int = 4, compiled: bool = False) -> np.ndarray:
    """Outputs h of n one-position steps from empty rings (MLX's or the kernel's path), called
    directly or (`compiled`) through one compiled graph per window, as sessions run them."""
    caches = lm.make_cache(smallest_window=8)
    graphs = {}
    outs = []
    for p in range(n):
        x = mx.random.normal((1, 1, lm.config.temporal.d_model), key=mx.random.key(seed + p))
        states = [c.state for c in caches]
        window = caches[0].step_window()

        def step(x, pos, states, window=window):
            return lm.forward_step(x, states, pos, window)[1], states

        if compiled:
            step = graphs.setdefault(window, mx.compile(step))
        h, states = step(x.astype(lm.dtype), mx.array(p, dtype=mx.int32), states)
        for c, s in zip(caches, states, strict=True):
            c.state = list(s)
            c.offset += 1
        outs.append(np.array(h.astype(mx.float32)).reshape(-1))
    return np.stack(outs)


def test_the_model_supports_it_when_its_projections_are_quantized():
    assert temporal_kernel.supports(small_lm(bits=8)) is None
    assert temporal_kernel.supports(small_lm(bits=4)) is None
    assert "quantized" in temporal_kernel.supports(small_lm(bits=None))
    assert "float32" in temporal_kernel.supports(small_lm(bits=8, dtype=mx.float32))


def test_stacking_keeps_the_results_and_the_modules_read_the_stack():
    lm = small_lm(dtype=mx.float32)
    before = steps(lm, 3)
    stack = temporal_kernel.stack(lm)
    lm.kernels.adopt(temporal_kernel, lm, stack)
    lm.prepare()
    assert lm.temporal_stack() is stack
    # bit-identical on the CPU; on a GPU MLX may pick other kernels for the views (~1e-6)
    np.testing.assert_allclose(steps(lm, 3), before, rtol=1e-5, atol=1e-5)
    cfg = lm.config.temporal
    d, hidden = cfg.d_model, cfg.dim_feedforward
    per_layer = 3 * d + d + 2 * hidden
    layer = lm.transformer.layers[1]
    rows = slice(per_layer + 3 * d, per_layer + 4 * d)  # layer 1, out_proj
    np.testing.assert_array_equal(np.array(layer.self_attn.out_proj.weight), stack.qa[rows])
    rows = slice(d, 2 * d)  # layer 1, linear_out
    np.testing.assert_array_equal(np.array(layer.gating.linear_out.biases), stack.bb[rows])
    layer.norm2.alpha = layer.norm2.alpha * 2
    assert lm.temporal_stack() is None  # a replaced weight makes the stack stale


@pytest.mark.skipif(on_cuda(), reason="on CUDA the kernel runs")
def test_off_the_gpu_the_step_runs_on_mlx_ops():
    lm = small_lm()
    assert not temporal_kernel.enabled()
    assert lm.temporal_stack() is None


@GPU
@pytest.mark.parametrize("bits", [4, 8])
def test_the_kernel_steps_like_mlx_through_a_wrapping_ring(bits, monkeypatch):
    lm = small_lm(bits=bits)  # building it prepares it: stack + check
    assert temporal_kernel.disabled_reason is None
    assert lm.temporal_stack() is not None
    ours = steps(lm, 50)  # the 40-slot ring wraps after 40 positions
    monkeypatch.setenv(temporal_kernel.env_var, "mlx")
    theirs = steps(lm, 50)
    persistent.compare(mx.array(ours), mx.array(theirs), "outputs")  # the check's bound


@GPU
def test_compiled_kernel_steps_equal_direct_ones():
    """Sessions run the step as compiled graphs that return the rings they were given."""
    lm = small_lm(bits=8)
    np.testing.assert_array_equal(steps(lm, 45, compiled=True), steps(lm, 45))


@GPU
def test_the_kernel_continues_a_prefill_of_mlx_ops(monkeypatch):
    """A session prefills the rings with MLX's batched forward, then steps with the kernel."""
    lm = small_lm(bits=8)
    d = lm.config.temporal.d_model
    prompt = mx.random.normal((1, 30, d), key=mx.random.key(2)).astype(lm.dtype)
    outs = {}
    for mode in ("kernel", "mlx"):
        if mode == "mlx":
            monkeypatch.setenv(temporal_kernel.env_var, "mlx")
        caches = lm.make_cache(smallest_window=8)
        lm.forward(prompt, caches)
        rows = []
        for p in range(30, 45):  # past the 40-slot ring's end
            x = mx.random.normal((1, 1, d), key=mx.random.key(100 + p)).astype(lm.dtype)
            states = [c.state for c in caches]
            pos = mx.array(p, dtype=mx.int32)
            _, h = lm.forward_step(x, states, pos, caches[0].step_window())
            for c, s in zip(caches, states, strict=True):
                c.state = list(s)
                c.offset += 1
            rows.append(np.array(h.astype(mx.float32)).reshape(-1))
        outs[mode] = np.stack(rows)
    persistent.compare(mx.array(outs["kernel"]), mx.array(outs["mlx"]), "outputs")


@GPU
def test_a_wrong_kernel_is_turned_off(monkeypatch):
    monkeypatch.setattr(temporal_kernel, "disabled_reason", None)
    monkeypatch.setattr(temporal_kernel, "_kernels", {})
    monkeypatch.setattr(temporal_kernel, "name", "ppx_temporal_broken")
    broken = temporal_kernel.body.replace(
        "make_float2(cosf(theta), sinf(theta))", "make_float2(1.f, sinf(theta))"
    )
    assert broken != temporal_kernel.body
    monkeypatch.setattr(temporal_kernel, "body", broken)
    lm = small_lm()
    assert not temporal_kernel.enabled()
    assert "failed its check" in temporal_kernel.disabled_reason
    assert lm.temporal_stack() is not None  # stacked, but MLX's ops run the step


@GPU
@pytest.mark.parametrize("bits", [4, 8])
def test_the_check_catches_one_norm_weight_off_by_one_percent(bits):
    """A kernel that is only slightly wrong -- one layer's norm 1% off -- fails the check,
    which compares every layer's keys and values as well as the outputs and logits."""
    from dataclasses import replace

    lm = small_lm(bits=bits, context=64)
    weights = lm.temporal_stack()
    assert weights is not None
    assert temporal_kernel.verify(lm, weights) <= persistent.ROW_TOLERANCE
    d = lm.config.temporal.d_model
    layer = 1  # the last of the small model's two
    scale = np.ones(weights.norms.shape, np.float32)
    scale[2 * layer * d : (2 * layer + 1) * d] = 1.01  # norm1 of layer 1
    off = replace(
        weights, norms=(weights.norms.astype(mx.float32) * mx.array(scale)).astype(lm.dtype)
    )
    with pytest.raises(ValueError, match="layer 1 keys"):
        temporal_kernel.verify(lm, off)


def stream_lm(bits: int):
    """A model whose widths the weight stream takes (d_model 2048, feed-forward 5632 as the STT's:
    scales in whole 16-byte pieces, a partial last chunk column at 4 bits)."""
    config = small_config(
        d_model=2048, num_heads=16, context=40, dep_dim=64, dep_dim_feedforward=288, bits=bits
    )  # the depformer's hidden 192: whole groups of 64
    return random_lm(config, dtype=mx.bfloat16, seed=3)


def use_stream(monkeypatch, plan: tuple[int, int, int]) -> None:
    stages, chunks, ahead = plan
    monkeypatch.delenv(temporal.STREAM_ENV_VAR, raising=False)
    monkeypatch.setattr(temporal, "STREAM_BITS", (4, 8))
    monkeypatch.setattr(temporal, "STREAM_STAGES", stages)
    monkeypatch.setattr(temporal, "STREAM_CHUNKS", chunks)
    monkeypatch.setattr(temporal, "STREAM_AHEAD", ahead)


@GPU
@pytest.mark.parametrize("plan", [(2, 4, 0), (2, 4, 1), (3, 2, 1), (5, 2, 1), (2, 3, 1)])
@pytest.mark.parametrize("bits", [4, 8])
def test_the_weight_stream_gives_the_direct_kernels_numbers_bit_for_bit(bits, plan, monkeypatch):
    """Streamed through shared memory or read into registers, the mat-vecs sum the same products
    in the same order: outputs equal bit for bit through a wrapping ring, and within the check's
    bound of MLX's ops."""
    lm = stream_lm(bits)
    assert temporal_kernel.disabled_reason is None
    use_stream(monkeypatch, (0, 0, 0))
    direct = steps(lm, 45)
    use_stream(monkeypatch, plan)
    assert temporal_kernel.stream(lm, lm.temporal_stack())[0] == plan[0]
    streamed = steps(lm, 45)
    np.testing.assert_array_equal(streamed, direct)
    monkeypatch.setenv(temporal_kernel.env_var, "mlx")
    persistent.compare(mx.array(streamed), mx.array(steps(lm, 45)), "outputs")


H200_SHARED = 232448  # bytes of shared memory one block may ask for on an H100/H200


@pytest.mark.parametrize(
    ("bits", "group", "optin", "want", "plan"),
    [
        (4, 64, H200_SHARED, (2, 4, 1), (2, 4, 1, 2 * 16 * 288 * 16)),
        (8, 64, H200_SHARED, (2, 4, 1), (2, 4, 1, 2 * 16 * 272 * 16)),
        (4, 64, H200_SHARED, (8, 2, 0), (5, 2, 0, 5 * 16 * 144 * 16)),  # as many as fit
        (4, 64, 101376, (2, 4, 1), (0, 0, 0, 0)),  # an RTX 30/40's 99 KiB: not two stages
        (4, 64, None, (2, 4, 1), (0, 0, 0, 0)),  # not known
        (8, 128, H200_SHARED, (2, 4, 1), (0, 0, 0, 0)),  # 8 bytes of scales per column
        (4, 64, H200_SHARED, (0, 4, 1), (0, 0, 0, 0)),  # asked for none
    ],
)
def test_the_weight_stream_takes_the_stages_that_fit_or_none(
    bits, group, optin, want, plan, monkeypatch
):
    monkeypatch.setattr(temporal, "shared_memory_optin", lambda: optin)
    got = temporal.stream_plan(4096, 11264, 128, mx.bfloat16, bits, group, want)
    assert got == plan
    static = temporal._shared_bytes(4096, 11264, 128, bits)
    assert optin is None or static + got[3] <= optin


def _segment(s: int, spc: int) -> int:
    return s ^ ((s >> 3) & (spc - 1))  # the kernel's `ppx_seg<SPC>`


@pytest.mark.parametrize("spc", [1, 2, 4, 8])
def test_the_shared_memory_swizzle_is_a_permutation_without_bank_conflicts(spc):
    n = 8 * 64
    assert sorted(_segment(s, spc) for s in range(n)) == list(range(n))
    # lane L reads the SPC segments of chunk L + 32 j; 8 lanes' 16-byte reads form one wavefront,
    # conflict-free when their segments fall in 8 different groups of 4 banks
    for j in range(2):
        for v in range(spc):
            for wave in range(4):
                groups = {
                    _segment((lane + 32 * j) * spc + v, spc) % 8
                    for lane in range(8 * wave, 8 * wave + 8)
                }
                assert len(groups) == 8


def test_ppx_stream_overrides_the_shipped_plan_and_rejects_nonsense(monkeypatch):
    """The shipped plan streams 4-bit weights only; `PPX_STREAM` picks the plan at every width
    (what the GPU benchmarks use to compare plans end to end)."""
    monkeypatch.setattr(temporal, "STREAM_STAGES", 3)
    monkeypatch.setattr(temporal, "STREAM_CHUNKS", 2)
    monkeypatch.setattr(temporal, "STREAM_AHEAD", 1)
    monkeypatch.setattr(temporal, "STREAM_BITS", (4,))
    monkeypatch.delenv(temporal.STREAM_ENV_VAR, raising=False)
    assert temporal.wanted_stream(4) == (3, 2, 1)
    assert temporal.wanted_stream(8) == (0, 0, 0)
    monkeypatch.setenv(temporal.STREAM_ENV_VAR, " 2,4,0 ")
    assert temporal.wanted_stream(4) == temporal.wanted_stream(8) == (2, 4, 0)
    monkeypatch.setenv(temporal.STREAM_ENV_VAR, "off")
    assert temporal.wanted_stream(4) == (0, 0, 0)
    for bad in ("2,4", "a,b,c", "2;4;1", "-1,4,1"):
        monkeypatch.setenv(temporal.STREAM_ENV_VAR, bad)
        with pytest.raises(ValueError, match="stages,chunks,ahead"):
            temporal.wanted_stream(4)


def test_the_shipped_plan_streams_the_7b_at_4_bits_on_an_h100_or_h200(monkeypatch):
    """As measured (docs/cuda-kernels.md §The weight stream): 3 stages of 2 chunks at 4 bits fit
    beside the static shared memory of 227 KiB GPUs; 8-bit weights are read into registers."""
    monkeypatch.delenv(temporal.STREAM_ENV_VAR, raising=False)
    monkeypatch.setattr(temporal, "shared_memory_optin", lambda: H200_SHARED)
    four = temporal.stream_plan(4096, 11264, 128, mx.bfloat16, 4, 64)
    assert four[:3] == (3, 2, 1) and four[3] > 0
    assert temporal.stream_plan(4096, 11264, 128, mx.bfloat16, 8, 64) == (0, 0, 0, 0)
