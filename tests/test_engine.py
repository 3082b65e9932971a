"""The engine thread: everything on one thread, events in order, cancellation, errors survived."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict

import numpy as np
import pytest

import model as ppx
from model.conversation.session_settings import SessionSettings
from model.conversation.types import Frame, StepTimings
from personaplex_tui.engine import FIRST_RUN_NOTE, Engine
from personaplex_tui.events import (
    EngineError,
    FrameOut,
    LoadProgress,
    ModelInfo,
    StateChanged,
    StepTiming,
)
from tests.checkpoints import write_small_checkpoint


class FakeSession:
    def __init__(self, owner, settings, fail_at=None):
        self.owner, self.settings, self.fail_at, self.steps = owner, settings, fail_at, 0

    def step(self, pcm):
        self.owner.threads.add(threading.get_ident())
        if self.fail_at is not None and self.steps == self.fail_at:
            self.steps += 1
            raise RuntimeError("boom")
        i = self.steps
        self.steps += 1
        return Frame(
            i, pcm * 0.5, 3, "", np.zeros(8, np.int32), np.zeros(8, np.int32), StepTimings(1.0)
        )

    def reset(self):
        self.steps = 0


class FakeModel:
    def __init__(self, fail_at=None):
        self.threads: set[int] = set()
        self.fail_at = fail_at
        self.sessions = []

    def session(self, settings):
        self.threads.add(threading.get_ident())
        s = FakeSession(self, settings, self.fail_at)
        self.sessions.append(s)
        return s


def _engine(model, events):
    def loader(progress):
        model.threads.add(threading.get_ident())
        return model, ModelInfo("fake", "4-bit", "cpu", ("NATF2",))

    return Engine(loader, events.append)


def test_runs_everything_on_one_thread_and_reports_frames():
    async def main():
        events, model = [], FakeModel()
        engine = _engine(model, events)
        await engine.load()
        await engine.warm_up(steps=2)
        await engine.new_session(SessionSettings(voice="VARF2", seed=1))
        pcm = [np.full(1920, 0.1, np.float32)] * 5
        played = []
        frames = await engine.generate(pcm, played.append)
        await engine.close()
        return events, model, frames, played, engine

    events, model, frames, played, engine = asyncio.run(main())
    assert len(frames) == 5 and played == frames
    assert len(model.threads) == 1 and model.threads == {engine.thread_ident}
    assert engine.thread_ident != threading.get_ident()
    assert model.sessions[-1].settings == SessionSettings(voice="VARF2", seed=1)
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states == ["loading", "warming_up", "ready"]
    assert [e.index for e in events if isinstance(e, FrameOut)] == [0, 1, 2, 3, 4]
    assert len([e for e in events if isinstance(e, StepTiming)]) == 5


def test_stop_cancels_within_a_step():
    async def main():
        events, model = [], FakeModel()
        engine = _engine(model, events)
        await engine.load()
        await engine.new_session()
        gate = threading.Event()

        def mic():
            for i in range(1000):
                if i == 3:
                    gate.set()
                yield np.zeros(1920, np.float32)

        task = asyncio.create_task(engine.generate(mic()))
        await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        await engine.stop()
        frames = await task
        await engine.close()
        return frames

    frames = asyncio.run(main())
    assert 3 <= len(frames) < 1000


def test_an_engine_error_becomes_an_event_and_the_engine_stays_usable():
    async def main():
        events, model = [], FakeModel(fail_at=2)
        engine = _engine(model, events)
        await engine.load()
        await engine.new_session()
        first = await engine.generate([np.zeros(1920, np.float32)] * 4)
        model.fail_at = None
        await engine.reset()
        second = await engine.generate([np.zeros(1920, np.float32)] * 4)
        await engine.close()
        return events, first, second

    events, first, second = asyncio.run(main())
    assert first is None
    errors = [e for e in events if isinstance(e, EngineError)]
    assert len(errors) == 1 and "boom" in errors[0].message and errors[0].kind == "RuntimeError"
    assert second is not None and len(second) == 4


def test_operations_without_a_model_fail_with_a_sentence():
    async def main():
        events = []
        engine = Engine(lambda p: (_ for _ in ()).throw(AssertionError), events.append)
        ok = await engine.new_session()
        await engine.close()
        return ok, events

    ok, events = asyncio.run(main())
    assert ok is False
    assert [e.message for e in events if isinstance(e, EngineError)] == ["No model is loaded yet."]


def test_quiet_steps_are_stepped_and_timed_but_not_reported():
    async def main():
        events, model = [], FakeModel()
        engine = _engine(model, events)
        await engine.load()
        await engine.new_session()
        pcm = [np.full(1920, 0.1, np.float32)] * 6
        played = []
        frames = await engine.generate(pcm, played.append, quiet_steps=4)
        await engine.close()
        return events, frames, played

    events, frames, played = asyncio.run(main())
    assert len(frames) == 6 and played == frames  # on_frame sees every frame
    assert [e.index for e in events if isinstance(e, FrameOut)] == [4, 5]
    assert [e.index for e in events if isinstance(e, StepTiming)] == [0, 1, 2, 3, 4, 5]


def test_every_nth_step_is_timed_phase_by_phase():
    class PhasedSession(FakeSession):
        measure_phases = False

        def step(self, pcm):
            frame = super().step(pcm)
            if self.measure_phases:
                frame.timings = StepTimings(2.0, 0.5, 0.5, 0.5, 0.5)
            return frame

    class PhasedModel(FakeModel):
        def session(self, settings):
            s = PhasedSession(self, settings)
            self.sessions.append(s)
            return s

    async def main():
        events, model = [], PhasedModel()
        engine = _engine(model, events)
        engine.phase_every = 4
        await engine.load()
        await engine.new_session()
        await engine.generate([np.zeros(1920, np.float32)] * 10)
        await engine.close()
        return events, model

    events, model = asyncio.run(main())
    timed = [e.index for e in events if isinstance(e, StepTiming) and e.encode_ms > 0]
    assert timed == [3, 7]
    assert model.sessions[-1].measure_phases is False


def test_warm_up_says_when_the_gpu_kernels_are_compiled_for_the_first_time():
    async def main(compiles: bool):
        events, model = [], FakeModel()

        def loader(progress):
            return model, ModelInfo("fake", "8-bit", "gpu", ("NATF2",), compiles_kernels=compiles)

        engine = Engine(loader, events.append)
        await engine.load()
        await engine.warm_up(steps=1)
        await engine.close()
        return [e.message for e in events if isinstance(e, LoadProgress) and e.stage == "warm_up"]

    first = asyncio.run(main(True))
    assert len(first) == 1 and FIRST_RUN_NOTE in first[0]
    later = asyncio.run(main(False))
    assert len(later) == 1 and "kernels" not in later[0]


def test_the_warm_up_reports_each_graph_it_compiles_with_its_count():
    """Session.warm_up's progress becomes LoadProgress events, delivered on the event loop in
    order with growing counts, for the warm-up and for a new session's compile-ahead."""

    class WarmingSession(FakeSession):
        def warm_up(self, progress, defer=False):
            self.owner.threads.add(threading.get_ident())
            names = self.owner.to_compile
            for i, name in enumerate(names):
                progress(i, len(names), name)
            progress(len(names), len(names), "")
            self.owner.to_compile = []  # compiled: the model's next sessions reuse them

    class WarmingModel(FakeModel):
        to_compile = ["encode (Mimi filling)", "LM step (window 8 masked)", "decode (Mimi full)"]

        def session(self, settings):
            s = WarmingSession(self, settings)
            self.sessions.append(s)
            return s

    async def main():
        events, model, sink_threads = [], WarmingModel(), set()

        def sink(event):
            sink_threads.add(threading.get_ident())
            events.append(event)

        def loader(progress):
            return model, ModelInfo("fake", "4-bit", "cpu", ("NATF2",))

        engine = Engine(loader, sink)
        await engine.load()
        await engine.warm_up(steps=1)
        warmed = [e for e in events if isinstance(e, LoadProgress) and e.stage == "warm_up"]
        model.to_compile = ["LM step (window 16 masked)"]  # other settings: one new graph
        await engine.new_session(SessionSettings(seed=2))
        await engine.new_session()  # all built: no count at all
        await engine.close()
        progress = [e for e in events if isinstance(e, LoadProgress) and e.stage == "warm_up"]
        return warmed, progress[len(warmed) :], sink_threads, model, engine

    warmed, later, sink_threads, model, engine = asyncio.run(main())
    assert sink_threads == {threading.get_ident()}  # the loop's thread, not the engine's
    assert model.threads == {engine.thread_ident}
    counted = warmed[1:]  # after the first line (steps of silence)
    assert [(e.done_count, e.total_count) for e in counted] == [(i, 3) for i in range(4)]
    assert [e.message for e in counted] == [
        "compiling encode (Mimi filling) (0/3)",
        "compiling LM step (window 8 masked) (1/3)",
        "compiling decode (Mimi full) (2/3)",
        "compiled 3 graphs",
    ]
    assert all(e.total_bytes == 0 for e in counted)  # a count, not bytes
    assert [(e.done_count, e.total_count, e.message) for e in later] == [
        (0, 1, "compiling LM step (window 16 masked) (0/1)"),
        (1, 1, "compiled 1 graph"),
    ]


def test_a_real_sessions_warm_up_is_counted_graph_by_graph(tmp_path):
    """The small checkpoint through the engine: one counted event per graph the model compiles
    (as many as `StepGraphs.timings` grew), then the last one; a new session compiles none."""
    persona = ppx.load(write_small_checkpoint(tmp_path / "persona", seed=0))

    async def main():
        events = []
        engine = Engine(lambda p: (persona, ModelInfo("small", "f32", "cpu", ())), events.append)
        await engine.load()
        await engine.warm_up(steps=1, settings=SessionSettings(seed=1))
        warmed = len(events)
        await engine.new_session()
        await engine.close()
        counted = [e for e in events if isinstance(e, LoadProgress) and e.total_count > 0]
        return counted, [e for e in counted if events.index(e) >= warmed]

    counted, after = asyncio.run(main())
    total = len(persona.step_graphs().timings)
    assert total >= 4
    assert [(e.done_count, e.total_count) for e in counted] == [
        (i, total) for i in range(total + 1)
    ]
    assert all(e.stage == "warm_up" for e in counted)
    assert after == []


@pytest.mark.parametrize("failed", [False, True])
def test_a_deferred_warm_up_compiles_one_graph_per_step_once_the_helpers_are_done(
    monkeypatch, failed: bool
):
    """While JIT helpers compile (a fresh GPU), a session of the checkpoint's default sampling
    warms up deferred (it talks on eager graphs); once the helpers are done, the engine warms
    one compiled graph after each step until none is left (none if a helper failed: its
    modules would compile mid-conversation). Other sampling: no deferring."""
    from personaplex_tui import jit_workers
    from personaplex_tui.engine import DEFERRED_NOTE

    busy = {"helpers": True}
    monkeypatch.setattr(jit_workers, "defer_compile", lambda: busy["helpers"])
    monkeypatch.setattr(jit_workers, "helpers_running", lambda: busy["helpers"])
    monkeypatch.setattr(jit_workers, "helpers_failed", lambda: failed and not busy["helpers"])

    class DeferringSession(FakeSession):
        def __init__(self, owner, settings):
            super().__init__(owner, settings)
            self.sampling, self.deferred, self.compiled = settings.sampling, None, []

        def warm_up(self, progress, defer=False):
            self.deferred = defer
            self.steps_eagerly = defer

        def compile_next(self):
            self.owner.threads.add(threading.get_ident())
            self.compiled.append(self.steps)
            self.steps_eagerly = len(self.compiled) < 3
            return "graph"

    class DeferringModel(FakeModel):
        def session(self, settings):
            s = DeferringSession(self, settings)
            self.sessions.append(s)
            return s

        def default_settings(self):
            return SessionSettings()

    async def main():
        events, model = [], DeferringModel()
        engine = _engine(model, events)
        await engine.load()
        await engine.warm_up(steps=1)
        await engine.new_session(SessionSettings())
        silence = np.zeros(1920, np.float32)
        await engine.generate([silence] * 2)
        busy["helpers"] = False
        await engine.generate([silence] * 5)
        busy["helpers"] = True  # helpers at work, but for the default sampling only
        await engine.new_session(SessionSettings().replace(text_temperature=0.3))
        await engine.close()
        return events, model, engine

    events, model, engine = asyncio.run(main())
    warm, talk, other = model.sessions
    assert warm.deferred and talk.deferred and other.deferred is False
    if failed:
        assert talk.compiled == [] and talk.steps_eagerly
    else:
        assert talk.compiled == [3, 4, 5] and not talk.steps_eagerly  # after steps 3, 4, 5
    assert model.threads == {engine.thread_ident}
    notes = [e.message for e in events if isinstance(e, LoadProgress) and e.stage == "warm_up"]
    assert DEFERRED_NOTE in notes


def test_a_deferred_warm_up_follows_the_sampling_the_helpers_were_given(monkeypatch):
    """Helpers told the conversation's sampling (the app's loader does): sessions of that
    sampling defer, those of the checkpoint's default do not."""
    from model.config import SamplingConfig
    from personaplex_tui import jit_workers

    named = SamplingConfig(text_temperature=0.4)
    monkeypatch.setattr(jit_workers, "defer_compile", lambda: True)
    monkeypatch.setattr(jit_workers, "helpers_sampling", lambda: asdict(named))
    engine = Engine(lambda progress: None, lambda event: None)
    engine.model = FakeModel()

    class Session:
        def __init__(self, sampling):
            self.sampling = sampling

    try:
        assert engine._defer_compile(Session(named))
        assert not engine._defer_compile(Session(SamplingConfig()))
    finally:
        asyncio.run(engine.close())
