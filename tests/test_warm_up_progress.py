"""`Session.warm_up(progress)`: one call before each graph it compiles, counted out of those
still to compile (the listener's speech-to-text windows included), and one at the end."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

import model
from model import SessionSettings, random_model
from model.config import mimi_tiny, tiny
from model.stt import load_stt
from tests.stt_app import write_pair

TOKENS = [5, 6, 7, 8]
NO_VOICE = SessionSettings(voice=None)  # a random model has no voice files


def _warm(session) -> list[tuple[int, int, str]]:
    calls: list[tuple[int, int, str]] = []
    session.warm_up(lambda done, total, name: calls.append((done, total, name)))
    return calls


def _check_counts(calls: list[tuple[int, int, str]], total: int) -> None:
    """done goes 0..total, one call per graph then the last one; total never changes."""
    assert [c[0] for c in calls] == list(range(total + 1))
    assert {c[1] for c in calls} == {total}
    assert all(name for _, _, name in calls[:-1]) and calls[-1][2] == ""


@pytest.fixture()
def tiny_model(monkeypatch):
    # A short ring with small windows: several masked windows ahead, then the full ring.
    monkeypatch.setattr("model.lm.model.SMALLEST_WINDOW", 8)
    m = random_model(tiny(context=40, mimi=mimi_tiny()), dtype=mx.float32, seed=2)
    mx.eval(m.lm.parameters())
    return m


@pytest.mark.parametrize("phases", [False, True])
def test_progress_counts_the_graphs_compiled(tiny_model, phases: bool) -> None:
    graphs = tiny_model.step_graphs()
    session = tiny_model.session(
        NO_VOICE.replace(seed=1), system_tokens=TOKENS, measure_phases=phases
    )
    before = len(graphs.timings)
    calls = _warm(session)
    warmed = graphs.timings[before:]
    total = len(warmed)
    assert total >= 6  # encode and decode x2, an LM graph (or temporal) per window ahead
    _check_counts(calls, total)
    # each call names the graph that is compiled next, in order
    assert [name for _, _, name in calls[:-1]] == [t.graph for t in warmed]
    lm_graphs = [n for _, _, n in calls if n.startswith("temporal" if phases else "LM step")]
    assert len(lm_graphs) >= 3 and all("window" in n for n in lm_graphs)

    # A second session of the model compiles nothing: only the final call, with total 0.
    again = tiny_model.session(
        NO_VOICE.replace(seed=2), system_tokens=TOKENS, measure_phases=phases
    )
    assert _warm(again) == [(0, 0, "")]
    assert len(graphs.timings) == before + total


def test_other_sampling_counts_only_its_new_graphs(tiny_model) -> None:
    graphs = tiny_model.step_graphs()
    _warm(tiny_model.session(NO_VOICE.replace(seed=1), system_tokens=TOKENS))
    before = len(graphs.timings)
    other = tiny_model.session(NO_VOICE.replace(seed=1, text_temperature=0.5), system_tokens=TOKENS)
    calls = _warm(other)
    total = len(graphs.timings) - before
    assert total > 0
    _check_counts(calls, total)
    assert all(name.startswith("LM step") for _, _, name in calls[:-1])  # Mimi's are built


def test_without_a_callback_the_warm_up_compiles_the_same_graphs(tiny_model) -> None:
    graphs = tiny_model.step_graphs()
    tiny_model.session(NO_VOICE.replace(seed=1), system_tokens=TOKENS).warm_up()
    warmed = len(graphs.timings)
    assert warmed >= 6
    assert _warm(tiny_model.session(NO_VOICE.replace(seed=1), system_tokens=TOKENS)) == [(0, 0, "")]


def test_an_eager_session_compiles_nothing(tiny_model) -> None:
    session = tiny_model.session(NO_VOICE.replace(seed=1), system_tokens=TOKENS, compile=False)
    assert _warm(session) == [(0, 0, "")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"))


def test_the_listeners_windows_are_counted_too(pair) -> None:
    persona_dir, stt_dir = pair
    persona = model.load(persona_dir)
    persona.listen(load_stt(stt_dir))
    graphs, stt_graphs = persona.step_graphs(), persona.listener.graphs
    session = persona.session(SessionSettings(seed=3))
    calls = _warm(session)
    step_graphs, stt_windows = len(graphs.timings), len(stt_graphs)
    assert step_graphs >= 3 and stt_windows >= 2
    _check_counts(calls, step_graphs + stt_windows)
    stt = [name for _, _, name in calls if name.startswith("speech-to-text")]
    assert len(stt) == stt_windows
    assert calls[-1 - stt_windows : -1] == [
        (step_graphs + i, step_graphs + stt_windows, name) for i, name in enumerate(stt)
    ]
    # the next session of the model: everything is built, the listener's graphs too
    assert _warm(persona.session(SessionSettings(seed=4))) == [(0, 0, "")]
    assert len(stt_graphs) == stt_windows
