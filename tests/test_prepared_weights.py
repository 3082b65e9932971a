"""`LM.prepare()`: pre-split, stacked and cast weights give the numbers of the checkpoint's layout."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from model.checkpoints.random_weights import random_lm
from model.lm.layers import MultiLinear, QuantizedMultiLinear, RMSNorm, embed_or_zero
from tests.lm_helpers import random_columns, small_config

CONFIG = small_config(d_model=256, dep_dim=64, dep_dim_feedforward=192, bits=8)


@pytest.fixture(scope="module")
def lm():
    return random_lm(CONFIG, dtype=mx.float32, seed=6)  # loaded, so already prepared


@pytest.mark.parametrize("quantized", [False, True])
def test_pre_split_steps_equal_the_stacked_rows(quantized):
    layer = MultiLinear(4, 64, 32)
    if quantized:
        layer = QuantizedMultiLinear.from_multi_linear(layer, 64, 8)
    x = mx.random.normal((1, 1, 64), key=mx.random.key(1))
    sliced = [layer(x, k) for k in range(4)]  # not prepared: rows sliced on the fly
    layer.prepare()
    for k in range(4):
        rows = slice(k * 32, (k + 1) * 32)
        for part, array in zip(layer._sources(), layer.step_weights(k), strict=True):
            assert mx.array_equal(array, part[rows])
        assert mx.array_equal(layer(x, k), sliced[k])


def test_stacked_depformer_inputs_equal_one_linear_per_step(lm):
    h = mx.random.normal((1, 1, CONFIG.lm.temporal.d_model), key=mx.random.key(2))
    assert isinstance(lm.depformer_in[0], nn.QuantizedLinear)
    stacked = lm._depformer_inputs(h, CONFIG.lm.dep_q)
    for k, linear in enumerate(lm.depformer_in):
        np.testing.assert_allclose(np.array(stacked[k]), np.array(linear(h)), rtol=1e-5, atol=1e-5)
    # The modules' parameters are row blocks of the stack: no second copy of the weights.
    d = CONFIG.lm.depformer.d_model
    first4 = lm._dep_in.value[4][0]
    assert mx.array_equal(first4[d : 2 * d], lm.depformer_in[1].weight)


def test_stacked_embedding_table_equals_the_per_table_sum(lm):
    cols = mx.array(random_columns(CONFIG, 6, seed=3))  # real ids, initial tokens and -1
    tables = [lm.text_emb, *lm.emb]
    expected = sum(embed_or_zero(t.weight, cols[:, i]) for i, t in enumerate(tables))
    np.testing.assert_allclose(np.array(lm.embed(cols)[0]), np.array(expected), atol=1e-6)


def test_replaced_weights_are_used_until_prepared_again():
    lm = random_lm(CONFIG, dtype=mx.float32, seed=7)
    h = mx.random.normal((1, 1, CONFIG.lm.temporal.d_model), key=mx.random.key(4))
    before = np.array(lm._depformer_inputs(h, 2)[1])
    new = nn.QuantizedLinear.from_linear(
        nn.Linear(CONFIG.lm.temporal.d_model, CONFIG.lm.depformer.d_model, bias=False), 64, 8
    )
    lm.depformer_in[1] = new
    stale = np.array(lm._depformer_inputs(h, 2)[1])
    np.testing.assert_allclose(stale, np.array(new(h)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(stale, before)
    lm.prepare()
    np.testing.assert_allclose(np.array(lm._depformer_inputs(h, 2)[1]), stale, rtol=1e-5, atol=1e-5)

    norm = lm.out_norm
    x = mx.random.normal((1, 1, CONFIG.lm.temporal.d_model), key=mx.random.key(5))
    norm.alpha = norm.alpha * 2
    np.testing.assert_allclose(
        np.array(norm(x)), np.array(2 * mx.fast.rms_norm(x, None, norm.eps)), rtol=1e-5
    )


def test_norm_weight_takes_the_activation_dtype():
    norm = RMSNorm(64)
    norm.alpha = 1.0 + 0.1 * mx.random.normal((1, 1, 64), key=mx.random.key(6))
    norm.prepare(mx.bfloat16)
    x = mx.random.normal((2, 64), key=mx.random.key(7)).astype(mx.bfloat16)
    y = norm(x)
    assert y.dtype == mx.bfloat16 and norm.alpha.dtype == mx.float32
    ref = mx.fast.rms_norm(x.astype(mx.float32), norm.alpha.reshape(-1), 1e-8)
    # One bfloat16 rounding more than the float32 path: at most a unit in the last place.
    np.testing.assert_allclose(np.array(y.astype(mx.float32)), np.array(ref), rtol=2**-7, atol=1e-6)


def test_wide_quantized_ffn_inputs_in_halves_give_the_same_numbers(lm, monkeypatch):
    """Where the backend's mat-vec kernel takes fewer rows (CUDA: 16384), the FFN input runs as
    gate and value matmuls: same numbers, and new weights are not missed."""
    ffn = lm.transformer.layers[0].gating
    rows = ffn.linear_in.weight.shape[0]
    x = mx.random.normal((1, 1, CONFIG.lm.temporal.d_model), key=mx.random.key(4))
    whole = ffn(x)
    monkeypatch.setattr("model.backend.matvec_rows", lambda: rows - 1)
    ffn.prepare()
    assert ffn._halves is not None and ffn._halves.fresh(ffn._sources())
    assert mx.array_equal(ffn(x), whole)
    residual = mx.ones_like(whole)
    assert mx.array_equal(ffn(x, residual=residual), residual + whole)
    old = ffn.linear_in.weight
    ffn.linear_in.weight = mx.zeros_like(old)  # replaced: the halves are stale, not used
    assert not mx.array_equal(ffn(x), whole)
    ffn.linear_in.weight = old
    monkeypatch.setattr("model.backend.matvec_rows", lambda: rows)
    ffn.prepare()
    assert ffn._halves is None and mx.array_equal(ffn(x), whole)
