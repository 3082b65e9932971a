"""Plain results that cross the `model` boundary: numpy arrays, ints and strings, never MLX arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PHASES: tuple[str, ...] = ("encode", "temporal", "depformer", "decode")


@dataclass
class StepTimings:
    """Wall-clock milliseconds of one step; phases are 0.0 unless the session measured them."""

    total_ms: float = 0.0
    encode_ms: float = 0.0
    temporal_ms: float = 0.0
    depformer_ms: float = 0.0
    decode_ms: float = 0.0
    stt_ms: float = 0.0  # the user's transcript (measured with the phases, when it is on)

    def as_dict(self) -> dict[str, float]:
        """The times in ms by phase name ("total", "encode", ...), for logs and JSON."""
        return {
            "total": self.total_ms,
            "encode": self.encode_ms,
            "temporal": self.temporal_ms,
            "depformer": self.depformer_ms,
            "decode": self.decode_ms,
        }


@dataclass
class Frame:
    """One 80 ms step of a conversation: the agent's audio and tokens for one frame."""

    index: int  # frames since the prompt phase ended (0-based)
    pcm: np.ndarray  # float32 [1920], 24 kHz mono, the agent's voice
    text_id: int  # inner-monologue token (PAD 3 / EPAD 0 included)
    text: str  # decoded piece ("" for PAD/EPAD), "▁" already turned into a space
    agent_codes: np.ndarray  # int32 [8]
    user_codes: np.ndarray  # int32 [8], the codes the model heard
    timings: StepTimings = field(default_factory=StepTimings)
    # The user's transcript (`model.stt.listener`; None / "" / () when it is off): the STT's
    # token of this frame, about 0.5 s behind the voice, its text and the end-of-turn heads'
    # probabilities that no one speaks over their horizons.
    user_text_id: int | None = None
    user_text: str = ""
    end_of_turn: tuple[float, ...] = ()


@dataclass
class Reply:
    """A turn-based reply: the agent's audio after the utterance and the transcript."""

    audio: np.ndarray  # float32, 24 kHz mono
    text: str  # the whole inner monologue of the exchange
    tokens: list[int]  # text token ids, one per frame (PAD included)
    frames: list[Frame] = field(default_factory=list)


@dataclass
class Chunk:
    """A piece of a streamed reply; the final chunk carries the whole transcript."""

    audio: np.ndarray
    text: str  # text of this chunk's frames
    final: bool = False
    transcript: str = ""  # the whole transcript, set on the final chunk
    index: int = 0
