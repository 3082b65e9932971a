"""The thread-safe event sink the controller calls: engine events in, Textual messages out.

Safe to call from any thread and never blocks: each event becomes a message posted to the app.
High-rate data (levels, playback, echo, step timings, load progress, memory) is coalesced: the bridge
keeps the newest values (and every step timing, up to a bound) and posts one `LiveDataArrived`
until the app drains it, so a busy engine cannot flood the UI's queue.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from textual.message_pump import MessagePump

from personaplex_tui.events import (
    EchoStats,
    EngineEvent,
    FrameOut,
    Levels,
    LoadProgress,
    MemoryUsage,
    PlaybackStats,
    StepTiming,
)
from personaplex_tui.tui.messages import EngineEventMessage, LiveDataArrived

_LATEST_FIELD: dict[type, str] = {
    Levels: "levels",
    PlaybackStats: "playback",
    LoadProgress: "progress",
    MemoryUsage: "memory",
    EchoStats: "echo",
}


@dataclass
class LiveData:
    """What arrived since the last drain: the newest of each kind, and all step timings."""

    levels: Levels | None = None
    playback: PlaybackStats | None = None
    progress: LoadProgress | None = None
    memory: MemoryUsage | None = None
    echo: EchoStats | None = None
    timings: list[StepTiming] = field(default_factory=list)


class EventBridge:
    """Callable as an `EventSink`; `drain()` is called by the app on `LiveDataArrived`."""

    def __init__(self, target: MessagePump, max_pending_timings: int = 2000) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._latest = LiveData()
        self._timings: deque[StepTiming] = deque(maxlen=max_pending_timings)
        self._live_posted = False
        self._closed = False

    def __call__(self, event: EngineEvent) -> None:
        if self._closed or isinstance(event, FrameOut):
            return  # a per-step mark for counters; its text comes as TextOut
        name = _LATEST_FIELD.get(type(event))
        if name is None and not isinstance(event, StepTiming):
            self._post(EngineEventMessage(event))
            return
        with self._lock:
            if name is None:
                self._timings.append(event)  # type: ignore[arg-type]
            else:
                setattr(self._latest, name, event)
            post = not self._live_posted
            self._live_posted = True
        if post and not self._post(LiveDataArrived()):
            with self._lock:
                self._live_posted = False

    def drain(self) -> LiveData:
        """Take what arrived since the last drain."""
        with self._lock:
            data, self._latest = self._latest, LiveData()
            data.timings = list(self._timings)
            self._timings.clear()
            self._live_posted = False
        return data

    def close(self) -> None:
        """Ignore events from now on (the app is shutting down)."""
        self._closed = True

    def _post(self, message: EngineEventMessage | LiveDataArrived) -> bool:
        try:
            return self._target.post_message(message)
        except RuntimeError:  # the event loop closed under us while the app shut down
            self._closed = True
            return False
