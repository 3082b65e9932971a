"""Events the inference engine emits to the UI, and the engine's public interface.

The engine runs the model on its own thread and delivers these events on the asyncio loop
(through `loop.call_soon_threadsafe`), in order. They carry plain Python and numpy values only.
The TUI turns them into Textual messages; tests and the CLI consume them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

EngineStateName = Literal[
    "idle",  # nothing loaded
    "loading",  # reading or downloading the model
    "warming_up",  # compiling kernels / first steps
    "ready",  # loaded, session prompted, waiting
    "listening",  # turn-based: capturing the user's utterance
    "thinking",  # turn-based: utterance captured, first reply frame not out yet
    "speaking",  # turn-based: reply frames streaming
    "duplex",  # full duplex running
    "error",  # the last operation failed; the engine is still usable
]


@dataclass(frozen=True)
class LoadProgress:
    """Model loading progress; `total_bytes` is 0 when unknown."""

    stage: str  # "download", "load", "warm_up", "prompt"
    message: str
    done_bytes: int = 0
    total_bytes: int = 0
    rate_bytes_s: float = 0.0
    eta_s: float | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for the status bar."""

    source: str  # repo id or local folder
    quantization: str  # "4-bit", "8-bit", "bf16", ...
    device: str  # "gpu" / "cpu"
    voices: tuple[str, ...]
    load_s: float = 0.0
    warm_up_s: float = 0.0


@dataclass(frozen=True)
class StateChanged:
    """The engine (or a conversation controller) changed state."""

    state: EngineStateName
    detail: str = ""


@dataclass(frozen=True)
class FrameOut:
    """One agent frame was produced (its audio already went to the player)."""

    index: int
    pcm: np.ndarray = field(repr=False)  # float32 [1920]
    text: str  # the decoded piece, "" for PAD/EPAD


@dataclass(frozen=True)
class TextOut:
    """A non-empty inner-monologue piece, for the transcript."""

    index: int
    text: str


@dataclass(frozen=True)
class StepTiming:
    """Timings of one step, in milliseconds (phases 0.0 when not measured)."""

    index: int
    total_ms: float
    encode_ms: float = 0.0
    temporal_ms: float = 0.0
    depformer_ms: float = 0.0
    decode_ms: float = 0.0


@dataclass(frozen=True)
class EngineError:
    """An operation failed; one sentence for the user. The engine stays usable."""

    message: str
    kind: str = ""  # exception class name, for logs


EngineEvent = LoadProgress | ModelInfo | StateChanged | FrameOut | TextOut | StepTiming | EngineError
EventSink = Callable[[EngineEvent], None]


class EngineAPI(Protocol):
    """What the app needs from the engine (implemented by `personaplex_tui.engine.Engine`)."""

    async def load(self) -> ModelInfo: ...

    async def warm_up(self) -> float: ...

    async def new_session(self) -> None: ...

    async def reset(self) -> None: ...

    async def stop(self) -> None: ...

    async def close(self) -> None: ...
