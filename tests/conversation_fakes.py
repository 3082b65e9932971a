"""Stand-ins for the conversation tests: a fake model shaped like `model.load()`'s, a probe that
records every call into any model (thread, inputs), fake PortAudio devices, and an event log."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.conversation.session_settings import SessionSettings
from model.conversation.types import Frame, StepTimings
from personaplex_tui.audio import DeviceInfo, read_audio
from personaplex_tui.conversation import (
    AudioFactory,
    ControllerConfig,
    ConversationController,
    create_conversation,
)
from personaplex_tui.events import LoadProgress, ModelInfo, Notice, StateChanged

AUDIO = Path(__file__).parent / "data" / "audio"
CONVERSATION = AUDIO / "conversation.wav"
WORDS = (" Hello", " there,", " how", " can", " I", " help", "?")


def conversation_pcm() -> np.ndarray:
    return read_audio(CONVERSATION).pcm


# -- models -----------------------------------------------------------------------------------
class FakeSession:
    """Shaped like `model.Session`: `step(pcm[1920] float32) -> Frame`, `reset()`.

    The agent says a 220 Hz tone on the steps where `talk(step)` is true (silence otherwise)
    and a word of inner monologue every fourth step.
    """

    def __init__(self, model: FakeModel, settings: SessionSettings) -> None:
        self.model = model
        self.settings = settings
        self.steps = 0

    def step(self, pcm: np.ndarray) -> Frame:
        assert pcm.shape == (1920,) and pcm.dtype == np.float32
        model = self.model
        model.total_steps += 1
        if model.fail_at is not None and model.total_steps == model.fail_at:
            raise RuntimeError("boom")
        if model.step_delay:
            time.sleep(model.step_delay)
        i = self.steps
        self.steps += 1
        t = (np.arange(1920) + i * 1920) / 24000
        loud = model.talk(i)
        out = (
            (0.25 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
            if loud
            else np.zeros(1920, np.float32)
        )
        text = WORDS[(i // 4) % len(WORDS)] if i % 4 == 3 else ""
        codes = np.zeros(8, np.int32)
        return Frame(
            i,
            out,
            3 if not text else 1000 + i,
            text,
            codes,
            codes.copy(),
            StepTimings(
                total_ms=1.5, encode_ms=0.2, temporal_ms=0.8, depformer_ms=0.3, decode_ms=0.2
            ),
        )

    def reset(self) -> None:
        self.steps = 0


class FakeModel:
    """Shaped like `model.PersonaPlex`: `session(SessionSettings) -> Session`."""

    def __init__(
        self,
        fail_at: int | None = None,
        step_delay: float = 0.0,
        talk: Callable[[int], bool] = lambda step: True,
    ) -> None:
        self.fail_at = fail_at  # the total step number (1-based, all sessions) that raises
        self.step_delay = step_delay
        self.talk = talk
        self.total_steps = 0

    def session(self, settings: SessionSettings) -> FakeSession:
        assert isinstance(settings, SessionSettings)
        return FakeSession(self, settings)


class ProbedSession:
    """Wraps any session: records the thread of every call, what it heard and what it said."""

    def __init__(self, probe: Probe, inner: object, settings: SessionSettings) -> None:
        self.probe, self.inner, self.settings = probe, inner, settings
        self.inputs: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []
        self.texts: list[str] = []
        self.step_started: list[float] = []

    def step(self, pcm: np.ndarray) -> Frame:
        self.probe.threads.add(threading.get_ident())
        self.step_started.append(time.perf_counter())
        self.inputs.append(np.array(pcm, copy=True))
        frame = self.inner.step(pcm)
        self.outputs.append(np.array(frame.pcm, copy=True))
        self.texts.append(frame.text)
        return frame

    def reset(self) -> None:
        self.probe.threads.add(threading.get_ident())
        self.inner.reset()


class Probe:
    """Wraps any model shaped like `model.PersonaPlex` (fake or real) to watch the calls into it.

    `inner` is the model, or a function that makes it: called by the loader, on the engine
    thread (MLX streams belong to the thread that made them, so a real model must be loaded
    on the thread that runs it)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.threads: set[int] = set()
        self.sessions: list[ProbedSession] = []

    def session(self, settings: SessionSettings) -> ProbedSession:
        self.threads.add(threading.get_ident())
        session = ProbedSession(self, self.inner.session(settings), settings)
        self.sessions.append(session)
        return session

    def loader(self) -> Callable:
        """An Engine loader returning this probe as the model (with one progress report)."""

        def load(progress: Callable[[LoadProgress], None]) -> tuple[Probe, ModelInfo]:
            self.threads.add(threading.get_ident())
            progress(LoadProgress("load", "loading the test model"))
            if callable(self.inner) and not hasattr(self.inner, "session"):
                self.inner = self.inner()
            return self, ModelInfo("test-model", "bf16", "cpu", ("NATF2", "VARM1"))

        return load


def tiny_mlx(checkpoint: Path) -> object:
    """The real model: a small checkpoint of random weights through `model.load`."""
    import model

    return model.load(checkpoint)


# Model factories the conversation tests run against (given the small checkpoint's folder).
MODEL_FACTORIES: dict[str, Callable[[Path], object]] = {
    "fake": lambda _checkpoint: FakeModel(),
    "tiny-mlx": tiny_mlx,
}


# -- fake PortAudio ---------------------------------------------------------------------------
class FakeStream:
    """What the fake PortAudio streams share: the stream's kwargs, a thread that calls back
    every `period_s` once started, and `lose()`, which makes the device vanish."""

    def __init__(self, period_s: float, run: Callable[[], None], **kwargs: object) -> None:
        self.kwargs = kwargs
        self.period_s = period_s
        self.active = False
        self._halt = threading.Event()
        self._thread = threading.Thread(target=run, daemon=True)

    def lose(self) -> None:
        """The device vanishes: no more callbacks, and the stream is no longer active."""
        self._halt.set()
        self.active = False

    def stop(self) -> None:
        """Stop calling back (as `sounddevice`'s `stop`)."""
        self._halt.set()

    def close(self) -> None:
        """Stop calling back and deactivate (as `sounddevice`'s `close`)."""
        self._halt.set()
        self.active = False


class FakeInputStream(FakeStream):
    """Stands in for `sounddevice.InputStream`: its own thread calls the callback with the
    signal (then silence) every `period_s`; `lose()` makes the device vanish."""

    def __init__(self, signal: np.ndarray, period_s: float, **kwargs: object) -> None:
        super().__init__(period_s, self._feed, **kwargs)
        self.signal = signal
        self.blocks = 0

    def start(self) -> None:
        self.active = True
        self._thread.start()

    def _feed(self) -> None:
        n = int(self.kwargs["blocksize"])
        callback = self.kwargs["callback"]
        while not self._halt.wait(self.period_s):
            block = self.signal[self.blocks * n : (self.blocks + 1) * n]
            block = np.pad(block, (0, n - len(block)))
            callback(block[:, None].astype(np.float32), n, None, None)
            self.blocks += 1


class FakeOutputStream(FakeStream):
    """Stands in for `sounddevice.OutputStream`: pulls a block every `period_s` (or never, when
    `pull` is False, so audio stays queued); `lose()` makes the device vanish."""

    def __init__(self, period_s: float, pull: bool, **kwargs: object) -> None:
        super().__init__(period_s, self._drain, **kwargs)
        self.pull = pull
        self.played: list[np.ndarray] = []

    def start(self) -> None:
        self.active = True
        if self.pull:
            self._thread.start()

    def _drain(self) -> None:
        n = int(self.kwargs["blocksize"])
        callback = self.kwargs["callback"]
        while not self._halt.wait(self.period_s):
            out = np.zeros((n, 1), np.float32)
            callback(out, n, None, None)
            self.played.append(out[:, 0].copy())


class FakeDevices:
    """A PortAudio with two microphones and two speakers; devices in `busy` refuse to open."""

    def __init__(
        self, signal: np.ndarray | None = None, period_s: float = 0.004, pull: bool = True
    ):
        self.signal = conversation_pcm() if signal is None else signal
        self.period_s = period_s
        self.pull = pull
        self.busy: set[int] = set()
        self.inputs: list[FakeInputStream] = []
        self.outputs: list[FakeOutputStream] = []
        self.infos = [
            DeviceInfo(0, "Desk Mic", "ALSA", 1, 0, 24000.0, is_default_input=True),
            DeviceInfo(1, "USB Headset", "ALSA", 1, 2, 24000.0),
            DeviceInfo(2, "Speakers", "ALSA", 0, 2, 24000.0, is_default_output=True),
        ]

    def _check(self, device: object) -> None:
        if device in self.busy:
            raise RuntimeError("Device unavailable [PaErrorCode -9985]")

    def input_stream(self, **kwargs: object) -> FakeInputStream:
        self._check(kwargs["device"])
        stream = FakeInputStream(self.signal, self.period_s, **kwargs)
        self.inputs.append(stream)
        return stream

    def output_stream(self, **kwargs: object) -> FakeOutputStream:
        self._check(kwargs["device"])
        stream = FakeOutputStream(self.period_s, self.pull, **kwargs)
        self.outputs.append(stream)
        return stream

    def factory(self) -> AudioFactory:
        return AudioFactory(
            input_stream=self.input_stream,
            output_stream=self.output_stream,
            devices=lambda: self.infos,
            rate=lambda info, direction: 24000,
            realtime_files=False,
            file_end="end",
        )


def file_factory() -> AudioFactory:
    """Files as fast as the engine takes them; a played input file ends the input."""
    return AudioFactory(realtime_files=False, file_end="end")


# -- events -----------------------------------------------------------------------------------
class Events:
    """The sink: keeps every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self._changed: asyncio.Event | None = None

    def __call__(self, event: object) -> None:
        self.items.append(event)
        if self._changed is not None:
            self._changed.set()

    def of(self, kind: type) -> list:
        return [e for e in self.items if isinstance(e, kind)]

    def states(self) -> list[str]:
        return [e.state for e in self.of(StateChanged)]

    async def wait_for(
        self, predicate: Callable[[object], bool], timeout: float = 20.0, after: int = 0
    ) -> object:
        """The first event from index `after` on that matches (waiting for it if needed)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            for event in self.items[seen:]:
                if predicate(event):
                    return event
            seen = len(self.items)
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event in {timeout} s; states: {self.states()}")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass


def ended(event: object) -> bool:
    """True for the notice that says the conversation has ended."""
    return isinstance(event, Notice) and "has ended" in event.message


async def run_until_ended(
    config: ControllerConfig, probe: Probe, events: Events, audio: AudioFactory | None = None
) -> ConversationController:
    """Start a conversation on `probe`, wait until it has ended, and shut it down."""
    conv = create_conversation(
        probe.loader(), events, config, audio=audio if audio is not None else file_factory()
    )
    await conv.start()
    await events.wait_for(ended)
    await conv.shutdown()
    return conv


def is_state(name: str, detail: str | None = None) -> Callable[[object], bool]:
    return lambda e: (
        isinstance(e, StateChanged) and e.state == name and (detail is None or detail in e.detail)
    )
