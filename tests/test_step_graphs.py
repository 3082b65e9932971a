"""Step graphs belong to the model: sessions share them, a reset or a new session traces nothing,
the rings are written in place, and new weights rebuild them."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model import random_model
from model.config import mimi_tiny, tiny
from model.conversation.session_settings import SessionSettings
from tests.textdata import load_wav_24k

TOKENS = [5, 6, 7, 8]
NO_VOICE = SessionSettings(voice=None)  # a random model has no voice files


@pytest.fixture()
def model():
    # A short ring: the steps below cross two masked windows and reach the full ring.
    m = random_model(tiny(context=40, mimi=mimi_tiny()), dtype=mx.float32, seed=2)
    mx.eval(m.lm.parameters())
    return m


def _frames(n: int) -> list[np.ndarray]:
    pcm = load_wav_24k("shipping.wav")[: n * 1920]
    return [pcm[i * 1920 : (i + 1) * 1920] for i in range(n)]


def _run(session, frames) -> list[tuple[int, list[int], np.ndarray]]:
    out = []
    for pcm in frames:
        f = session.step(pcm)
        out.append((f.text_id, f.agent_codes.tolist(), f.pcm))
    return out


def _same(a, b) -> None:
    assert [x[:2] for x in a] == [x[:2] for x in b]
    np.testing.assert_array_equal(np.stack([x[2] for x in a]), np.stack([x[2] for x in b]))


def test_sessions_share_graphs_and_resets_trace_nothing(model, monkeypatch):
    monkeypatch.setattr("model.lm.model.SMALLEST_WINDOW", 8)
    graphs = model.step_graphs()
    frames = _frames(40)
    a = model.session(NO_VOICE.replace(seed=5), system_tokens=TOKENS)
    a.warm_up()
    built, traces = graphs.keys(), graphs.traces
    assert traces == len(built) >= 6  # encode and decode x2, an LM graph per window ahead
    assert len(graphs.timings) == len(built)  # each first use timed
    first = _run(a, frames)
    assert a.position > 40  # the ring filled (and Mimi's caches)

    a.reset()
    _same(_run(a, frames), first)
    b = model.session(NO_VOICE.replace(seed=5), system_tokens=TOKENS)
    b.warm_up()
    _same(_run(b, frames), first)
    assert graphs.traces == traces and graphs.keys() == built
    assert len(graphs.timings) == len(built)  # nothing was run for the first time again

    # Other sampling parameters: new LM graphs, the same Mimi graphs.
    c = model.session(NO_VOICE.replace(seed=5, text_temperature=0.5), system_tokens=TOKENS)
    c.warm_up()
    new = graphs.keys() - built
    assert new and all(k[0] == "lm" for k in new)


def test_shared_compiled_graphs_equal_the_eager_functions(model):
    frames = _frames(12)
    compiled = _run(model.session(NO_VOICE.replace(seed=9), system_tokens=TOKENS), frames)
    compiled_again = _run(model.session(NO_VOICE.replace(seed=9), system_tokens=TOKENS), frames)
    eager = _run(
        model.session(NO_VOICE.replace(seed=9), system_tokens=TOKENS, compile=False), frames
    )
    _same(compiled, compiled_again)
    assert [x[:2] for x in compiled] == [x[:2] for x in eager]
    for x, y in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(x[2], y[2], atol=1e-5)


def _buffers(session) -> list[int]:
    """Addresses of the rings' key buffers (CPU arrays are numpy-viewable without a copy)."""
    return [np.asarray(c.state[0]).__array_interface__["data"][0] for c in session._caches]


def test_steps_write_the_rings_in_place(model):
    session = model.session(NO_VOICE.replace(seed=1), system_tokens=TOKENS)
    before = _buffers(session)
    for pcm in _frames(3):
        session.step(pcm)
        session.step_codes(np.zeros(8, np.int32))
        assert _buffers(session) == before
    # The check can fail: a ring that something else still holds is copied, not written.
    held = [c.state[0] for c in session._caches]
    session.step(_frames(1)[0])
    assert _buffers(session) != before
    del held


def test_new_weights_rebuild_the_graphs(model):
    graphs = model.step_graphs()
    frames = _frames(4)
    old = _run(model.session(NO_VOICE.replace(seed=3), system_tokens=TOKENS), frames)
    built = graphs.keys()
    model.lm.out_norm.alpha = model.lm.out_norm.alpha * 0.25
    mx.eval(model.lm.out_norm.alpha)
    session = model.session(NO_VOICE.replace(seed=3), system_tokens=TOKENS)
    assert graphs.keys() == set()
    new = _run(session, frames)
    assert graphs.keys() == built
    eager = _run(
        model.session(NO_VOICE.replace(seed=3), system_tokens=TOKENS, compile=False), frames
    )
    assert [x[:2] for x in new] == [x[:2] for x in eager]
    assert [x[:2] for x in new] != [x[:2] for x in old]


def test_a_deferred_warm_up_steps_eagerly_then_compiles_graph_by_graph(model, monkeypatch):
    """`warm_up(defer=True)` compiles nothing: the steps run the eager functions until
    `compile_next`, called between steps, has warmed each graph on the live state. The
    conversation is the one an eager session has (graph runs between steps change nothing),
    and afterwards every graph is compiled and shared."""
    monkeypatch.setattr("model.lm.model.SMALLEST_WINDOW", 8)
    frames = _frames(40)
    eager = _run(
        model.session(NO_VOICE.replace(seed=4), system_tokens=TOKENS, compile=False), frames
    )
    graphs = model.step_graphs()
    s = model.session(NO_VOICE.replace(seed=4), system_tokens=TOKENS)
    reports = []
    s.warm_up(lambda *a: reports.append(a), defer=True)
    assert s.steps_eagerly and graphs.traces == 0 and reports == [(0, 0, "")]
    out = _run(s, frames[:10])
    assert graphs.traces == 0 and s.steps_eagerly  # eager steps compile nothing
    names = []
    for pcm in frames[10:]:
        if s.steps_eagerly:
            names.append(s.compile_next())
        out += _run(s, [pcm])
    assert not s.steps_eagerly and s.compile_next() is None
    assert names[0] == "encode (Mimi full)" and any(n.startswith("LM step") for n in names)
    assert graphs.traces == len(names) == len(graphs.timings)
    assert [x[:2] for x in out] == [x[:2] for x in eager]
    for x, y in zip(out, eager, strict=True):
        np.testing.assert_allclose(x[2], y[2], atol=1e-5)
    # the graphs are the model's: a new session compiles only those of the frames the
    # deferred one had passed before compiling (Mimi's filling caches, the first window)
    done = len(graphs.timings)
    t = model.session(NO_VOICE.replace(seed=4), system_tokens=TOKENS)
    t.warm_up()
    late = [g.graph for g in graphs.timings[done:]]
    assert late and all("filling" in n or "window 8 " in n for n in late), late
    assert not t.steps_eagerly and not any(n in names for n in late)
    traces = graphs.traces
    _run(t, frames)
    assert graphs.traces == traces
