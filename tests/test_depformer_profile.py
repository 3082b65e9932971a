"""`benchmarks/depformer_profile.py`: the depformer kernel's profiling marks compile only in the
profile's kernel, and its phase table is read from them correctly (the timing needs a GPU)."""

from __future__ import annotations

from unittest import mock

import mlx.core as mx
import numpy as np

from benchmarks import depformer_profile
from model.checkpoints.random_weights import random_lm
from model.cuda import cubins, precompiled
from model.cuda.depformer import DepformerKernel
from model.sampling import SamplingParams
from tests.lm_helpers import small_config
from tests.test_precompiled import NVRTC, fake_cuda


def _lm():
    config = small_config(d_model=256, num_heads=4, context=40, dep_dim=64,
                          dep_dim_feedforward=192, bits=4)  # fmt: skip
    return random_lm(config, dtype=mx.bfloat16, seed=0)


@NVRTC
def test_the_marks_compile_only_in_the_profiles_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(cubins, "_memory", {})
    lm = _lm()
    plain = DepformerKernel()
    weights = plain.stack(lm)
    marked = depformer_profile.Marked(lm, weights)
    assert marked.per_step == 4 * lm.config.depformer.num_layers + 1
    assert marked.base == plain.work_size(lm, weights)
    found = {}
    with fake_cuda(), mock.patch.object(depformer_profile, "sm_count", lambda: 132):
        arch, cubin = cubins.device_target()
        assert marked.extra_words(lm) == 2 * marked.slots * 132
        for name, kernel in (("plain", plain), ("marked", marked)):
            with precompiled.collecting() as units:
                dep_in = mx.zeros((2 * lm.config.depformer.d_model,), dtype=lm.dtype)
                kernel.run(lm, weights, dep_in, mx.array(3), 2, SamplingParams(0.0, 0), None)
            [(symbol, source)] = units
            found[name] = source
            assert cubins.compiled(symbol, source, arch, cubin)[:4] == b"\x7fELF"
    assert "#define PPX_PROFILE " not in found["plain"]
    assert "#define PPX_PROFILE " in found["marked"]


def test_the_phase_table_reads_the_marks():
    marked = object.__new__(depformer_profile.Marked)  # no kernel needed to read marks
    layers, steps, blocks = 2, 2, 3
    marked.per_step = 4 * layers + 1
    marked.slots = 2 + 3 * steps * marked.per_step
    marked.base = 10
    nbar = steps * marked.per_step
    ns = np.zeros((marked.slots, blocks), np.int64)
    ns[0] = [0, 5, 7]  # the blocks' starts
    t = 7
    for b in range(nbar):  # block k arrives k * 100 ns late; the barrier takes 50 ns after that
        work = 2000 if b == 0 else 1000  # the first phase (a text token drawn) is longer
        for k in range(blocks):
            ns[1 + 3 * b, k] = t + work + 100 * k
            ns[2 + 3 * b, k] = t + work + 100 * (blocks - 1) + 50
        t = t + work + 100 * (blocks - 1) + 50
    ns[1 + 3 * nbar] = t + 300  # the last draw
    words = np.zeros(marked.base + 2 * marked.slots * blocks, np.uint32)
    words[marked.base + marked.slots * blocks :] = ((ns + 2**32 - 500) % 2**32).ravel()
    prof = depformer_profile.phases(words.view(np.float32), marked, steps, blocks)
    per = 1000 + 100 * (blocks - 1)
    assert prof["total_us"] == round((t + 300) / 1e3, 1)
    assert prof["first_phase_us"] == round((2000 + 200) / 1e3, 1)
    assert prof["last_draw_us"] == 0.3
    qkv = prof["phases"]["qkv"]
    assert qkv["count"] == steps * layers
    assert qkv["span"] == round((steps * layers * per + 1000) / 1e3, 1)  # the first is longer
    assert qkv["barrier"] == round(steps * layers * 50 / 1e3, 1)
    assert prof["phases"]["logits"]["count"] == steps
    assert prof["phases"]["linear_out"]["span"] == round(steps * layers * per / 1e3, 1)
