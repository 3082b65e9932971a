"""The compiled one-column step equals the plain path; forced tokens are used as given."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.lm_step import ColumnInputs, ColumnStepper
from model.random_weights import random_lm
from model.sampling import GREEDY, SamplingParams, sample_token
from tests.lm_helpers import random_columns, small_config

CONFIG = small_config(context=6)
TEXT, AUDIO = SamplingParams(0.7, 25), SamplingParams(0.8, 40)
STEPS = 9  # the ring (context 6) fills up on the way: both compiled variants run


@pytest.fixture(scope="module")
def lm():
    return random_lm(CONFIG, dtype=mx.float32, seed=3)


def plain_column(lm, caches, column: mx.array, key: mx.array, text: SamplingParams, audio):
    """The same computation, unfused: batched forward of one column, then sampling."""
    logits, h = lm.forward(lm.embed(column), caches)
    text_key, audio_key = mx.random.split(key, 2)
    token = sample_token(logits.reshape(-1), text, text_key)
    return token, lm.depformer_step(h, token, params=audio, key=audio_key, n_steps=16)


def run(stepper, cols, keys):
    outs = []
    for t in range(STEPS):
        text, audio = stepper(ColumnInputs.free(mx.array(cols[t]), 16), keys[t])
        outs.append([int(text), *np.array(audio).tolist()])
    return outs


@pytest.mark.parametrize(
    "text, audio", [(TEXT, AUDIO), (GREEDY, GREEDY)], ids=["sampled", "greedy"]
)
def test_compiled_step_equals_plain_path(lm, text, audio):
    cols = random_columns(CONFIG, STEPS, seed=4)
    keys = [mx.random.key(100 + t) for t in range(STEPS)]
    compiled = run(ColumnStepper(lm, lm.make_cache(), text=text, audio=audio), cols, keys)
    eager = run(
        ColumnStepper(lm, lm.make_cache(), text=text, audio=audio, compile=False), cols, keys
    )
    caches, plain = lm.make_cache(), []
    for t in range(STEPS):
        token, tokens = plain_column(lm, caches, mx.array(cols[t]), keys[t], text, audio)
        plain.append([int(token), *np.array(tokens).tolist()])
    assert compiled == eager == plain
    assert len({tuple(row) for row in compiled}) == STEPS  # the model really ran


def test_forced_tokens_are_outputs_and_next_inputs(lm):
    cols = random_columns(CONFIG, 4, seed=5)
    caches = _prefilled(lm, cols)
    forced = mx.array([7, 0, 0, 11, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 9], dtype=mx.int32)
    provided = forced > 0
    inputs = ColumnInputs(
        tokens=mx.array(cols[2], dtype=mx.int32),
        text_forced=mx.array(42, dtype=mx.int32),
        text_provided=mx.array(True),
        audio_forced=forced,
        audio_provided=provided,
    )
    stepper = ColumnStepper(lm, caches, text=TEXT, audio=GREEDY)
    text, audio = stepper(inputs, mx.random.key(0))
    assert int(text) == 42
    audio = np.array(audio)
    assert audio[np.array(provided)].tolist() == [7, 11, 5, 9]

    # Greedy steps that were not forced are the argmax given the forced inputs before them.
    _, h = lm.forward(lm.embed(mx.array(cols[2])), _prefilled(lm, cols))
    logits = np.array(lm.depformer_logits(h, mx.array(42), mx.array(audio)))
    free = ~np.array(provided)
    assert audio[free].tolist() == np.argmax(logits, axis=-1)[free].tolist()


def _prefilled(lm, cols):
    caches = lm.make_cache()
    lm.forward(lm.embed(mx.array(cols[:2])), caches)
    return caches


def test_agent_only_steps_are_the_first_eight(lm):
    h = mx.random.normal((1, 1, CONFIG.lm.temporal.d_model), key=mx.random.key(9))
    all16 = np.array(lm.depformer_step(h, mx.array(3), params=GREEDY))
    first8 = np.array(lm.depformer_step(h, mx.array(3), params=GREEDY, n_steps=8))
    assert first8.tolist() == all16[:8].tolist()
