"""The sessions' LM step graph (`StepGraphs.lm_step`) equals the plain batched path, compiled or
not; forced depformer tokens are used as given; the agent's codebooks are the first 8 steps."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.config import mimi_tiny, tiny
from model.conversation.persona import random_model
from model.conversation.step_graphs import LMStepSpec, input_column
from model.lm.model import advance, step_window
from model.sampling import GREEDY, SamplingParams, sample_token
from tests.lm_helpers import random_columns

TEXT, AUDIO = SamplingParams(0.7, 25), SamplingParams(0.8, 40)
CONTEXT = 6
STEPS = 9  # the ring (context 6) fills up on the way: masked windows, then the full ring


@pytest.fixture(scope="module")
def model():
    m = random_model(tiny(context=CONTEXT, mimi=mimi_tiny()), dtype=mx.float32, seed=3)
    m.lm.prepare()
    return m


def _inputs(lm, seed: int):
    """A start state (text, agent codes, user acoustic codes) and the user codes of every step."""
    cfg, n_q = lm.config, lm.config.n_q_agent
    rng = np.random.default_rng(seed)
    text = mx.array(int(rng.integers(0, cfg.text_card)), dtype=mx.int32)
    agent = mx.array(rng.integers(0, cfg.card, n_q), dtype=mx.int32)
    user_acoustic = mx.array(rng.integers(0, cfg.card, n_q - 1), dtype=mx.int32)
    users = [mx.array(rng.integers(0, cfg.card, n_q), dtype=mx.int32) for _ in range(STEPS)]
    return (text, agent, user_acoustic), users


def graph_steps(model, compile: bool, spec: LMStepSpec, start, users, keys) -> list[list[int]]:
    """The step graph, as `Session` runs it: rings in and out, host offsets advanced after."""
    lm = model.lm
    graphs = model.step_graphs(compile)
    caches = lm.make_cache(smallest_window=2)
    text, agent, user_acoustic = start
    out = []
    for t in range(STEPS):
        fn = graphs.lm_step(spec, step_window(caches))
        pos = mx.array(caches[0].offset, dtype=mx.int32)
        states = [c.state for c in caches]
        (codes, text, agent, _, _), states = fn(
            users[t], text, agent, user_acoustic, pos, keys[t], states
        )
        for cache, state in zip(caches, states, strict=True):
            cache.state = list(state)
        mx.eval(codes, text, agent, [c.state for c in caches])
        advance(caches)
        user_acoustic = users[t][1:]
        out.append([int(text), *np.array(agent).tolist(), *np.array(codes).tolist()])
    return out


def plain_steps(model, spec: LMStepSpec, start, users, keys) -> list[list[int]]:
    """The same computation unfused: one column through the batched forward, then sampling."""
    lm = model.lm
    caches = lm.make_cache()
    text, agent, user_acoustic = start
    out = []
    for t in range(STEPS):
        _, key = mx.random.split(keys[t])  # the step keeps the first half as the session's key
        column = input_column(text, agent, users[t], user_acoustic)
        logits, h = lm.forward(lm.embed(column), caches)
        text_key, audio_key = mx.random.split(key, 2)
        new_text = sample_token(logits.reshape(-1), spec.text, text_key)
        new_agent = lm.depformer_step(
            h, new_text, n_steps=spec.depformer_steps, params=spec.audio, key=audio_key
        )[: spec.agent_codebooks]
        codes = mx.concatenate([agent[:1], new_agent[1:]])
        text, agent, user_acoustic = new_text, new_agent, users[t][1:]
        out.append([int(text), *np.array(agent).tolist(), *np.array(codes).tolist()])
    return out


@pytest.mark.parametrize(
    "text, audio", [(TEXT, AUDIO), (GREEDY, GREEDY)], ids=["sampled", "greedy"]
)
@pytest.mark.parametrize("depformer_steps", [8, 16])
def test_step_graph_equals_plain_path(model, text, audio, depformer_steps):
    spec = LMStepSpec(text=text, audio=audio, depformer_steps=depformer_steps, agent_codebooks=8)
    start, users = _inputs(model.lm, seed=4)
    keys = [mx.random.key(100 + t) for t in range(STEPS)]
    compiled = graph_steps(model, True, spec, start, users, keys)
    eager = graph_steps(model, False, spec, start, users, keys)
    plain = plain_steps(model, spec, start, users, keys)
    assert compiled == eager == plain
    assert len({tuple(row) for row in compiled}) == STEPS  # the model really ran


def test_forced_tokens_are_outputs_and_next_inputs(model):
    # As at the end of the prefill, where the last prompt frame's acoustic codes are known.
    lm = model.lm
    cols = random_columns(model.config, 3, seed=5)
    caches = lm.make_cache()
    _, h = lm.forward(lm.embed(mx.array(cols)), caches)
    h = h[:, -1:]
    forced = mx.array([7, 0, 0, 11, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 9], dtype=mx.int32)
    provided = forced > 0
    text = mx.array(42, dtype=mx.int32)
    audio = lm.depformer_step(h, text, forced=forced, provided=provided, params=GREEDY)
    audio = np.array(audio)
    assert audio[np.array(provided)].tolist() == [7, 11, 5, 9]

    # Greedy steps that were not forced are the argmax given the forced inputs before them.
    logits = np.array(lm.depformer_logits(h, text, mx.array(audio)))
    free = ~np.array(provided)
    assert audio[free].tolist() == np.argmax(logits, axis=-1)[free].tolist()
    unforced = np.array(lm.depformer_step(h, text, params=GREEDY))
    assert unforced.tolist() != audio.tolist()  # the forced tokens changed what followed


def test_agent_only_steps_are_the_first_eight(model):
    lm = model.lm
    h = mx.random.normal((1, 1, lm.config.temporal.d_model), key=mx.random.key(9))
    all16 = np.array(lm.depformer_step(h, mx.array(3), params=GREEDY))
    first8 = np.array(lm.depformer_step(h, mx.array(3), params=GREEDY, n_steps=8))
    assert first8.tolist() == all16[:8].tolist()
