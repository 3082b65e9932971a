"""A fake conversation controller for the TUI tests: realistic, deterministic event streams.

Mic levels come from the speech WAVs in tests/data/audio (the same ones the real app is tested
with), user turns from where that speech is, the agent's text, levels and step timings from a
seeded generator. `python -m tests.tui_fakes` runs the app on this fake (a demo without a model);
`--screenshot FILE.svg` saves a screenshot of it instead.
"""

from __future__ import annotations

import asyncio
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from model.checkpoints.voice_presets import VOICE_PRESETS
from model.conversation.session_settings import SESSION_KEYS
from personaplex_tui.audio.frames import FRAME_SAMPLES, FRAME_SECONDS
from personaplex_tui.events import (
    EngineError,
    EngineEvent,
    EventSink,
    Levels,
    LoadProgress,
    ModelInfo,
    Notice,
    PlaybackStats,
    SessionStarted,
    StateChanged,
    StepTiming,
    TextOut,
    UserTurn,
)
from personaplex_tui.settings import Settings

AUDIO = Path(__file__).parent / "data" / "audio"
MODEL_INFO = ModelInfo(
    source="aufklarer/PersonaPlex-7B-MLX-4bit",
    quantization="4-bit",
    device="gpu",
    voices=VOICE_PRESETS,
    load_s=9.8,
    warm_up_s=14.2,
)
OFFLINE_MESSAGE = (
    "Cannot reach the Hugging Face hub and no copy of aufklarer/PersonaPlex-7B-MLX-4bit is "
    "cached: run with --model PATH to use a downloaded checkpoint, or download it once while "
    "online and then set HF_HUB_OFFLINE=1."
)
PICTURE_STEP = 175  # the user starts a third question while the agent finishes its second reply
REPLIES = (
    "Hi! I'm your assistant. I like helping people and talking about almost anything.",
    "I can't promise that, but I'll check the order and tell you as soon as it ships.",
    "Take a raincoat and waterproof shoes, and maybe an umbrella too.",
)


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono WAV as float32 samples."""
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0


def frame_levels(samples: np.ndarray) -> list[tuple[float, float]]:
    """(rms dBFS, peak dBFS) of each 1920-sample frame, floored at -100."""
    frames = samples[: len(samples) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    peak = np.max(np.abs(frames), axis=1)
    to_db = lambda x: np.maximum(20 * np.log10(np.maximum(x, 1e-10)), -100.0)  # noqa: E731
    return list(zip(to_db(rms).tolist(), to_db(peak).tolist(), strict=True))


def speech_segments(
    levels: list[tuple[float, float]], threshold_db: float = -50.0, hangover: int = 8
) -> list[range]:
    """Frame ranges louder than `threshold_db`; pauses shorter than `hangover` frames are bridged
    (a crude VAD)."""
    loud = [i for i, (rms, _) in enumerate(levels) if rms > threshold_db]
    segments: list[range] = []
    for i in loud:
        if segments and i - segments[-1].stop <= hangover:
            segments[-1] = range(segments[-1].start, i + 1)
        else:
            segments.append(range(i, i + 1))
    return segments


def reply_pieces(text: str) -> list[str]:
    """SentencePiece-like pieces: words with a leading space, long words split in two."""
    pieces = []
    for word in text.split():
        if len(word) > 6:
            pieces += [" " + word[:4], word[4:]]
        else:
            pieces.append(" " + word)
    return pieces


@dataclass
class _Timing:
    rng: np.random.Generator
    spikes: frozenset[int] = frozenset()

    def step(self, index: int) -> StepTiming:
        encode = 3.2 + self.rng.gamma(2.0, 0.15)
        temporal = 24.0 + self.rng.gamma(2.0, 1.5)
        depformer = 14.0 + self.rng.gamma(2.0, 1.0)
        decode = 3.6 + self.rng.gamma(2.0, 0.2)
        extra = 55.0 if index in self.spikes else 0.0
        total = encode + temporal + depformer + decode + 1.5 + extra
        phases = (encode, temporal + extra, depformer, decode)
        return StepTiming(index, round(total, 2), *(round(ms, 2) for ms in phases))


def conversation_events(
    wav: Path = AUDIO / "conversation.wav", seed: int = 7, spikes: tuple[int, ...] = (60, 150)
) -> list[EngineEvent]:
    """A full-duplex session: per step mic/agent levels, a timing, playback stats; user turns
    where the WAV has speech; the agent replies in the pause after each turn."""
    rng = np.random.default_rng(seed)
    mic = frame_levels(read_wav(wav))
    turns = speech_segments(mic)
    agent_text: dict[int, str] = {}
    agent_speaking: set[int] = set()
    for turn, reply in zip(turns, REPLIES, strict=False):
        start = turn.stop + 3
        for k, piece in enumerate(reply_pieces(reply)):
            agent_text[start + 2 * k] = piece
        agent_speaking.update(range(start, start + 2 * len(reply_pieces(reply)) + 4))
    timing = _Timing(rng, frozenset(spikes))
    events: list[EngineEvent] = []
    underruns = 0
    turn_ends = {t.stop - 1: t for t in turns}
    for i, (mic_rms, mic_peak) in enumerate(mic):
        t = timing.step(i)
        events.append(t)
        if i in agent_text:
            events.append(TextOut(i, agent_text[i]))
        talking = i in agent_speaking
        agent_rms = float(-22.0 + rng.normal(0, 3)) if talking else -100.0
        agent_peak = agent_rms + 9.0 if talking else -100.0
        clip = talking and i == min(agent_speaking) + 5
        events.append(
            Levels(mic_rms, mic_peak, agent_rms, min(agent_peak, 0.0), mic_peak > -0.1, clip)
        )
        late = t.total_ms > 80.0
        underruns += late
        buffered = 0 if late else 3 + int(rng.integers(0, 2))
        events.append(PlaybackStats(buffered, 3, not late, underruns))
        if i in turn_ends:
            turn = turn_ends[i]
            events.append(
                UserTurn(turn.start * FRAME_SECONDS, turn.stop * FRAME_SECONDS, len(turn))
            )
    return events


def duplex_events_until(step: int) -> list[EngineEvent]:
    """The start of a duplex session, cut just before step `step` (for pictures)."""
    events = conversation_events()
    cut = next(i for i, e in enumerate(events) if isinstance(e, StepTiming) and e.index == step)
    return [StateChanged("duplex"), *events[:cut]]


def turn_events(
    wav: Path = AUDIO / "greeting.wav", reply: str = REPLIES[0], seed: int = 3
) -> list[EngineEvent]:
    """One turn-based exchange after the user pressed space: the utterance, then the reply."""
    rng = np.random.default_rng(seed)
    mic = frame_levels(read_wav(wav))
    timing = _Timing(rng)
    events: list[EngineEvent] = []
    for rms, peak in mic:
        events.append(Levels(rms, peak, -100.0, -100.0))
    events += [UserTurn(0.0, len(mic) * FRAME_SECONDS, len(mic)), StateChanged("thinking")]
    for i in range(len(mic)):
        events.append(timing.step(i))
    events.append(StateChanged("speaking"))
    pieces = reply_pieces(reply)
    for k in range(2 * len(pieces) + 6):
        i = len(mic) + k
        events.append(timing.step(i))
        if k % 2 == 0 and k // 2 < len(pieces):
            events.append(TextOut(i, pieces[k // 2]))
        rms = float(-21.0 + rng.normal(0, 2.5))
        events.append(Levels(-100.0, -100.0, rms, rms + 8.0))
        events.append(PlaybackStats(3 + k % 2, 3, True, 0))
    return events


def load_events(total: int = 5_800_000_000, info: ModelInfo = MODEL_INFO) -> Iterator[EngineEvent]:
    """First run: download with progress, load, warm-up, prompt, ready."""
    yield StateChanged("loading")
    for part in range(0, 11):
        done = total * part // 10
        eta = (total - done) / 48e6
        yield LoadProgress("download", "temporal.safetensors", done, total, 48e6, eta)
    yield LoadProgress("load", "Loading the weights")
    yield info
    yield StateChanged("warming_up")
    yield LoadProgress("warm_up", "Compiling kernels")
    yield LoadProgress("prompt", "Voice NATF2, prompt assistant")


@dataclass
class FakeConversation:
    """Implements `ConversationAPI`; records every call; plays streams on a thread like PortAudio.

    `pace_s` is the wait between steps of a played stream (0: as fast as possible).
    """

    settings: Settings
    sink: EventSink
    offline: bool = False
    pace_s: float = 0.0
    load_pause_s: float = 0.0
    start_error: Exception | None = None  # raised by start(), as a real loader might
    shutdown_hangs: bool = False  # shutdown() never returns (a stuck audio device or step)
    model_info: ModelInfo = MODEL_INFO  # what loading reports (the checkpoint's voices)
    calls: list[tuple[object, ...]] = field(default_factory=list)
    state: str = "idle"
    sessions: int = 0
    played: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def emit(self, event: EngineEvent) -> None:
        if isinstance(event, StateChanged):
            self.state = event.state
        self.sink(event)

    async def start(self) -> None:
        self.calls.append(("start",))
        if self.start_error is not None:
            raise self.start_error
        if self.offline:
            self.emit(StateChanged("loading"))
            self.emit(LoadProgress("download", "Looking for the model on the Hugging Face hub"))
            self.emit(EngineError(OFFLINE_MESSAGE, kind="ModelNotFoundError"))
            self.emit(StateChanged("error", "no model"))
            return
        for event in load_events(info=self.model_info):
            self.emit(event)
            if self.load_pause_s:
                await asyncio.sleep(self.load_pause_s)
        self.sessions = 1
        self.emit(SessionStarted(1))
        self.emit(StateChanged("ready"))

    def _play(self, events: list[EngineEvent], then: str) -> None:
        self.played.clear()
        self._stop.clear()

        def run() -> None:
            for event in events:
                if self._stop.is_set():
                    break
                self.emit(event)
                if self.pace_s and isinstance(event, StepTiming):
                    self._stop.wait(self.pace_s)
            else:
                self.emit(StateChanged(then))
            self.played.set()

        self._thread = threading.Thread(target=run, name="fake-audio", daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    async def toggle_talk(self) -> None:
        self.calls.append(("toggle_talk",))
        if self.settings.mode == "duplex":
            if self.state == "duplex":
                self._halt()
                self.emit(StateChanged("ready"))
            else:
                self.emit(StateChanged("duplex"))
                self._play(conversation_events(), then="duplex")
        elif self.state == "listening":
            self._play(turn_events(), then="ready")
        elif self.state in ("thinking", "speaking"):
            self._halt()
            self.emit(StateChanged("ready"))
        else:
            self.emit(StateChanged("listening"))

    async def set_mode(self, mode: Literal["turn", "duplex"]) -> None:
        self.calls.append(("set_mode", mode))
        self._halt()
        self.settings = self.settings.replace(mode=mode)
        self.emit(StateChanged("ready"))

    async def reset(self) -> None:
        self.calls.append(("reset",))
        self._halt()
        self.sessions += 1
        self.emit(SessionStarted(self.sessions))
        self.emit(StateChanged("ready"))

    async def apply_settings(self, settings: object) -> bool:
        assert isinstance(settings, Settings)
        self.calls.append(("apply_settings", settings))
        changed = self.settings.changed_fields(settings)
        self.settings = settings
        return bool(SESSION_KEYS & changed.keys())  # as the real controller decides

    async def save_recording(self) -> str:
        self.calls.append(("save_recording",))
        folder = "/tmp/ppx-tui/recordings/session-1"
        self.emit(Notice(f"Saved the recording in {folder}."))
        return folder

    async def shutdown(self) -> None:
        self.calls.append(("shutdown",))
        self._halt()
        if self.shutdown_hangs:
            await asyncio.sleep(3600)

    def names(self) -> list[object]:
        """The names of the calls made so far, in order."""
        return [c[0] for c in self.calls]


class FakeFactory:
    """A `controller_factory` that keeps the fake it made (`.fake`)."""

    def __init__(self, **options: object) -> None:
        self.options = options
        self.fake: FakeConversation | None = None

    def __call__(self, settings: Settings, sink: EventSink) -> FakeConversation:
        self.fake = FakeConversation(settings, sink, **self.options)  # type: ignore[arg-type]
        return self.fake


DEVICES = (
    ["MacBook Pro Microphone", "USB Audio Interface"],
    ["MacBook Pro Speakers", "Headphones"],
)


def list_devices() -> tuple[list[str], list[str]]:
    return DEVICES


def fixed_memory() -> int:
    return 1_234_567_890


def demo_app(
    settings: Settings | None = None, pace_s: float = FRAME_SECONDS, **options: object
) -> tuple[object, FakeFactory]:
    """The real app on the fake controller, paced like the real thing."""
    from personaplex_tui.tui.app import make_app

    factory = FakeFactory(pace_s=pace_s, load_pause_s=0.3 * (pace_s > 0), **options)
    app = make_app(
        settings or Settings(), factory, list_devices=list_devices, rss_probe=fixed_memory
    )
    return app, factory


async def _screenshot(path: Path, size: tuple[int, int]) -> None:
    app, _ = demo_app(Settings(mode="duplex"), pace_s=0.0)
    async with app.run_test(size=size) as pilot:  # type: ignore[attr-defined]
        while app.state != "ready":  # type: ignore[attr-defined]
            await pilot.pause(0.01)
        for event in duplex_events_until(PICTURE_STEP):
            app.bridge(event)  # type: ignore[attr-defined]
        await pilot.pause(0.4)
        app.save_screenshot(filename=path.name, path=str(path.parent))  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="ppx-tui on a fake controller (no model).")
    parser.add_argument("--mode", choices=("turn", "duplex"), default="turn")
    parser.add_argument("--screenshot", type=Path, help="save an SVG screenshot and exit")
    parser.add_argument("--size", default="120x40", help="screenshot size, WxH")
    args = parser.parse_args(argv)
    if args.screenshot:
        width, height = (int(v) for v in args.size.split("x"))
        asyncio.run(_screenshot(args.screenshot, (width, height)))
        return
    app, _ = demo_app(Settings(mode=args.mode))
    app.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
