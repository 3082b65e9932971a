"""`benchmarks/kernel_profile.py`: the temporal kernel's profiling marks compile only when asked
for, and the phase table is read from them correctly (the timing itself needs a GPU)."""

from __future__ import annotations

from unittest import mock

import mlx.core as mx
import numpy as np

from benchmarks import kernel_profile
from model.checkpoints.random_weights import random_lm
from model.cuda import cubins, precompiled
from tests.lm_helpers import small_config
from tests.test_precompiled import NVRTC, fake_cuda


def units_of(variant: kernel_profile.Variant) -> list[tuple[str, str]]:
    config = small_config(d_model=256, num_heads=4, context=40, dep_dim=64,
                          dep_dim_feedforward=192, bits=4)  # fmt: skip
    lm = random_lm(config, dtype=mx.bfloat16, seed=0)
    variant.bind(lm)
    with precompiled.collecting() as units:
        states = [[mx.zeros((1,), dtype=lm.dtype)] * 2 for _ in lm.transformer.layers]
        x = mx.zeros((1, 1, 256), dtype=lm.dtype)
        variant.run(lm, variant.stack(lm), x, mx.array(3), states)
    return units


@NVRTC
def test_the_marks_compile_only_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(cubins, "_memory", {})
    with fake_cuda(), mock.patch.object(kernel_profile, "sm_count", lambda: 132):
        arch, cubin = cubins.device_target()
        found = {}
        for name in ("base", "marks", "loads-only"):
            [(symbol, source)] = units_of(kernel_profile.variants()[name])
            found[name] = source
            assert cubins.compiled(symbol, source, arch, cubin)[:4] == b"\x7fELF"
    assert "#define PPX_PROFILE " not in found["base"]
    assert (
        "#define PPX_PROFILE " in found["marks"] and "#define PPX_PROFILE " in found["loads-only"]
    )


def test_the_phase_table_reads_the_marks():
    variant = kernel_profile.Variant("marks", True)
    layers, blocks = 2, 3
    variant.base_words, variant.slots = 10, 2 + 3 * 6 * layers
    nbar = 6 * layers
    clk = np.zeros((variant.slots, blocks), np.int64)
    ns = np.zeros((variant.slots, blocks), np.int64)
    t = 0
    for b in range(nbar):  # block k arrives k * 100 ns late; the barrier takes 50 ns after that
        for k in range(blocks):
            ns[3 + 3 * b, k] = t + 20  # after a 20 ns prologue
            ns[1 + 3 * b, k] = t + 1000 + 100 * k
            ns[2 + 3 * b, k] = t + 1000 + 100 * (blocks - 1) + 50
        t = t + 1000 + 100 * (blocks - 1) + 50
    ns[1 + 3 * nbar] = t
    clk = ns * 2 - 2**31  # a 2 GHz clock that wraps round during the step
    words = np.zeros(variant.base_words + 2 * variant.slots * blocks, np.uint32)
    words[variant.base_words : variant.base_words + variant.slots * blocks] = (
        (clk % 2**32).astype(np.uint32).ravel()
    )
    words[variant.base_words + variant.slots * blocks :] = (
        (ns + 2**32 - 500).astype(np.uint32).ravel()
    )  # the timer wraps too
    prof = kernel_profile.phases(words.view(np.float32), variant, blocks, layers)
    assert prof["sm_ghz"] == 2.0
    assert prof["total_us"] == t / 1e3
    qkv = prof["phases"]["qkv"]
    assert qkv["barrier"] == round(layers * 50 / 1e3, 1)
    assert qkv["span"] == round(layers * 1200 / 1e3, 1)
    assert qkv["work_max"] == round(layers * 1200 / 1e3, 1)
    assert qkv["wait_min"] == round(layers * 50 / 1e3, 1)


def test_kernel_resources_names_the_unit_of_each_plan():
    """`benchmarks.kernel_resources` builds the 7B's temporal unit with the plan it is given (the
    stream's constants in the prelude), as an H200 would, without a GPU."""
    from benchmarks import kernel_resources

    _, streamed = kernel_resources.unit(4, (3, 2, 1))
    _, direct = kernel_resources.unit(8, (0, 0, 0))
    assert "constexpr int NS = 3;" in streamed and "constexpr int CPI = 2;" in streamed
    assert "constexpr int BITS = 4;" in streamed
    assert "constexpr int NS = 0;" in direct and "constexpr int BITS = 8;" in direct


@NVRTC
def test_no_barrier_leaves_out_the_grid_barriers_atomics():
    """`no-barrier` builds the kernel with PPX_NO_GRID_BARRIER: no counter is added to or
    polled (block barriers only), where the kernel as it runs has both."""
    from model.cuda import nvrtc

    ptx = {}
    with fake_cuda(), mock.patch.object(kernel_profile, "sm_count", lambda: 132):
        for name in ("base", "no-barrier"):
            [(symbol, source)] = units_of(kernel_profile.variants()[name])
            code = nvrtc.compile_source(
                source, f"{symbol}.cu", cubins.options("compute_90a"), False
            )
            ptx[name] = code.decode(errors="replace")
    for name, expected in (("base", True), ("no-barrier", False)):
        has_add = "red.global.add.u32" in ptx[name] or "atom.global.add.u32" in ptx[name]
        assert has_add is expected and ("ld.acquire.gpu" in ptx[name]) is expected, name
    assert "bar.sync" in ptx["no-barrier"]
