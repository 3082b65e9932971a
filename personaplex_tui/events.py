"""Events the inference engine emits to the UI, and the conversation's interface to the app.

The engine runs the model on its own thread and delivers these events on the asyncio loop
(through `loop.call_soon_threadsafe`), in order. They carry plain Python values only.
The TUI turns them into Textual messages; tests and the CLI consume them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

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
    """Model loading progress; `total_bytes` is 0 when unknown, `total_count` when nothing is
    counted (the warm-up counts the graphs it compiles)."""

    stage: str  # "download", "load", "warm_up", "prompt"
    message: str
    done_bytes: int = 0
    total_bytes: int = 0
    rate_bytes_s: float = 0.0
    eta_s: float | None = None
    done_count: int = 0
    total_count: int = 0


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for the status bar."""

    source: str  # repo id or local folder
    quantization: str  # "4-bit", "8-bit", "bf16", ...
    device: str  # "gpu" / "cpu"
    voices: tuple[str, ...]
    load_s: float = 0.0
    warm_up_s: float = 0.0
    compiles_kernels: bool = False  # first run here: the warm-up JIT-compiles GPU kernels
    user_transcript: str = ""  # the STT model transcribing the user ("" when off)


@dataclass(frozen=True)
class StateChanged:
    """The engine (or a conversation controller) changed state."""

    state: EngineStateName
    detail: str = ""


@dataclass(frozen=True)
class FrameOut:
    """One agent frame was produced: a per-step mark for counters and waits. Its audio already
    went to the player; its text, when not empty, follows as `TextOut`."""

    index: int


@dataclass(frozen=True)
class TextOut:
    """A non-empty inner-monologue piece, for the transcript; `t`: when it was said, in seconds
    on the conversation's timeline (the recording's, as the user's turns), when known."""

    index: int
    text: str
    t: float | None = None


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
    hint: str = ""  # what the chat's keys can do about it, shown after `message` where keys are


@dataclass(frozen=True)
class Levels:
    """Smoothed audio levels in dBFS (about -100 for digital silence), for the meters."""

    mic_rms_db: float
    mic_peak_db: float
    agent_rms_db: float
    agent_peak_db: float
    mic_clipping: bool = False
    agent_clipping: bool = False


@dataclass(frozen=True)
class PlaybackStats:
    """The player's state: pre-buffer fill (frames queued) and fault counters."""

    buffered_frames: int
    prebuffer_frames: int  # 3 = 240 ms
    playing: bool
    underruns: int = 0
    overruns: int = 0
    dropped_frames: int = 0


@dataclass(frozen=True)
class EchoStats:
    """How the mic is kept free of the agent's voice: `mode` "cancel" (the echo canceller, with
    its measured echo delay and echo reduction), "mute" (mute while the agent speaks) or "off"."""

    mode: Literal["cancel", "mute", "off"]
    delay_ms: float | None = None  # the echo's delay after the agent audio left the app
    erle_db: float | None = None  # echo return loss enhancement: how much echo was removed
    processing_ms: float = 0.0  # the canceller's mean cost per 80 ms frame


@dataclass(frozen=True)
class UserTurn:
    """The user said something (turn-based: one VAD utterance), times in seconds since start."""

    start_s: float
    end_s: float
    frames: int


@dataclass(frozen=True)
class UserTextOut:
    """A piece of the user's transcript, live (about 0.5 s behind the voice)."""

    index: int  # the engine's step
    text: str
    t_s: float  # when it was said, on the recording's timeline


@dataclass(frozen=True)
class UserSaid:
    """A line of the user's transcript is final (a turn ended)."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class TurnLatency:
    """Turn-based: from the end of the user's speech to the first reply frame."""

    end_of_speech_to_reply_s: float
    decided_by: str  # "end-of-turn head", "silence" (the VAD's) or "push-to-talk"
    decision_s: float = 0.0  # of which: audio heard after the speech until the turn ended


@dataclass(frozen=True)
class Notice:
    """A one-line message for the user that is not an error (saved recording, device change)."""

    message: str
    severity: Literal["information", "warning", "error"] = "information"
    hint: str = ""  # what the chat's keys can do about it, shown after `message` where keys are
    in_transcript: bool = False  # also a line of the transcript panel (a pause of the process)


@dataclass(frozen=True)
class SessionStarted:
    """A conversation session began, with a new recording and transcript: the events after this
    one belong to it (those of the previous session all came before)."""

    number: int  # 1 for the first session, 2 after the first reset, ...


@dataclass(frozen=True)
class MemoryUsage:
    """Memory the engine holds on the accelerator (MLX active / peak bytes), sent now and then."""

    device_bytes: int
    peak_device_bytes: int = 0


def with_hint(message: str, hint: str) -> str:
    """The sentence followed by its key hint, as the chat shows it (where there are keys)."""
    return f"{message} {hint}" if hint else message


EngineEvent = (
    LoadProgress
    | ModelInfo
    | StateChanged
    | FrameOut
    | TextOut
    | StepTiming
    | EngineError
    | Levels
    | PlaybackStats
    | EchoStats
    | UserTurn
    | UserTextOut
    | UserSaid
    | TurnLatency
    | Notice
    | SessionStarted
    | MemoryUsage
)
EventSink = Callable[[EngineEvent], None]


class ConversationAPI(Protocol):
    """What the TUI drives (implemented by `personaplex_tui.conversation`).

    Every method returns promptly; progress and results arrive as events on the sink.
    """

    # Sentences about kept recordings that were cut short (a full disk), for the terminal once
    # the screen is gone
    file_problems: list[str]

    async def start(self) -> None:
        """Load the model (with progress), warm up, prompt a session, start listening."""
        ...

    async def toggle_talk(self) -> None:
        """Space: turn-based = start/stop capturing an utterance (or interrupt a reply);
        duplex = start/stop the live conversation."""
        ...

    async def set_mode(self, mode: Literal["turn", "duplex"]) -> None: ...

    async def reset(self) -> None:
        """Start a new session (applies pending voice/prompt/sampling settings)."""
        ...

    async def apply_settings(self, settings: object) -> bool:
        """Take new settings; returns True when they need a reset to take effect."""
        ...

    async def save_recording(self) -> str:
        """Write the mic and agent tracks and the transcript; returns the folder."""
        ...

    async def shutdown(self) -> None:
        """Stop audio and the engine, flush recordings; safe to call twice."""
        ...
