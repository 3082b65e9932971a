"""The MLX LM equals PyPI `moshi` (PyTorch) on the same random weights, loaded from both layouts."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from moshi.models.lm import LMGen

from model.checkpoints.layout import CONVERTED, ORIGINAL
from model.checkpoints.load import load_lm
from model.checkpoints.write import layout_tensors, write_checkpoint
from model.lm.model import advance, step_window
from model.lm.ring_mask import ENV_VAR, MODES
from model.sampling import GREEDY
from tests.lm_helpers import (
    assert_close,
    build_moshi,
    moshi_depformer_logits,
    moshi_forward,
    random_columns,
    reference_mode,
    small_config,
    weights_from_moshi,
)

STEPS = 10  # more than the context (6): the sliding window matters


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    config = small_config(context=6)
    moshi = build_moshi(config, seed=1)
    weights = weights_from_moshi(moshi)
    loaded = {}
    for layout in (CONVERTED, ORIGINAL):
        folder = tmp_path_factory.mktemp(layout)
        write_checkpoint(folder, config, layout_tensors(weights, config, layout))
        loaded[layout], _ = load_lm(folder, dtype=mx.float32)
    cols = random_columns(config, STEPS, seed=2)
    ref_logits, ref_h = moshi_forward(moshi, cols)
    return {
        "config": config,
        "moshi": moshi,
        "lms": loaded,
        "cols": cols,
        "logits": ref_logits,
        "h": ref_h,
    }


@pytest.mark.parametrize("layout", [CONVERTED, ORIGINAL])
def test_batched_forward_matches_moshi(reference, layout):
    lm = reference["lms"][layout]
    logits, h = lm.forward(lm.embed(mx.array(reference["cols"])), lm.make_cache())
    assert_close(np.array(logits[0]), reference["logits"])
    assert_close(np.array(h[0]), reference["h"])


@pytest.mark.parametrize("layout", [CONVERTED, ORIGINAL])
def test_depformer_logits_match_moshi(reference, layout):
    lm, cols = reference["lms"][layout], reference["cols"]
    ref = moshi_depformer_logits(reference["moshi"], cols, reference["h"])
    h = mx.array(reference["h"])[None]
    for t in range(STEPS):
        got = lm.depformer_logits(h[:, t : t + 1], mx.array(cols[t, 0]), mx.array(cols[t, 1:]))
        assert_close(np.array(got), ref[t])


@pytest.mark.parametrize("layout", [CONVERTED, ORIGINAL])
def test_greedy_depformer_tokens_equal_moshi(reference, layout):
    lm, cols, h = reference["lms"][layout], reference["cols"], reference["h"]
    gen = LMGen(reference["moshi"], use_sampling=False)
    for t in range(0, STEPS, 3):
        text = int(cols[t, 0]) if cols[t, 0] >= 0 else 7
        with reference_mode():
            ref = gen.depformer_step(torch.tensor([text]), torch.from_numpy(h[None, t : t + 1]))
        h_t = mx.array(h[None, t : t + 1])
        got = lm.depformer_step(h_t, mx.array(text), params=GREEDY)
        assert np.array(got).tolist() == ref[0].tolist()
        agent_only = lm.depformer_step(h_t, mx.array(text), params=GREEDY, n_steps=8)
        assert np.array(agent_only).tolist() == ref[0, :8].tolist()


@pytest.mark.parametrize("hide", MODES)
def test_cached_steps_equal_batched_forward_and_moshi_streaming(reference, hide, monkeypatch):
    monkeypatch.setenv(ENV_VAR, hide)
    lm, cols, moshi = reference["lms"][CONVERTED], reference["cols"], reference["moshi"]
    x = lm.embed(mx.array(cols))

    eager_caches, fixed_caches = lm.make_cache(), lm.make_cache(smallest_window=2)
    eager, fixed = [], []
    for t in range(STEPS):  # windows 2, 4, 6 (masked) while the ring fills, then 6 unmasked
        logits, _ = lm.forward(x[:, t : t + 1], eager_caches)
        eager.append(np.array(logits[0, 0]))
        pos = mx.array(t, dtype=mx.int32)
        window = step_window(fixed_caches)
        states = [c.state for c in fixed_caches]
        logits, _ = lm.forward_step(x[:, t : t + 1], states, pos, window)
        advance(fixed_caches)
        fixed.append(np.array(logits[0, 0]))

    chunked_caches, chunked = lm.make_cache(), []
    start = 0
    for size in (3, 1, 4, 2):
        logits, _ = lm.forward(x[:, start : start + size], chunked_caches)
        chunked.extend(np.array(logits[0]))
        start += size

    streamed = []
    with reference_mode(), moshi.streaming(1):
        for t in range(STEPS):
            seq = torch.from_numpy(cols[t][None, :, None].copy())
            _, logits = moshi.forward_text(seq)
            streamed.append(logits[0, 0, 0].numpy())

    for got in (eager, fixed, chunked, streamed):
        assert_close(np.stack(got), reference["logits"])
