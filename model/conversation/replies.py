"""Turn-based replies, streamed replies, full duplex and diagnostics — all drivers of `Session.step`.

A turn-based reply is the duplex loop with a fixed input: the user's utterance frame by frame,
then digital silence for `max_steps` frames while the model answers (it has no end-of-turn
token; the caller chooses the reply's length).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from model.array_checks import float_audio
from model.conversation.session import Session, StepStats
from model.conversation.types import Chunk, Frame, Reply
from model.errors import AudioInputError

OnFrame = Callable[[Frame], None]
MAX_STEPS_LIMIT = 3000  # one KV context (4 minutes); longer replies are allowed to wrap, not this


def utterance_frames(audio: np.ndarray, frame_size: int, context: int) -> list[np.ndarray]:
    """Split mono 24 kHz audio into frames (the last one zero-padded), validating it."""
    audio = float_audio(audio)
    if audio.ndim != 1:
        raise AudioInputError(
            f"The audio must be mono (one dimension), not shape {list(audio.shape)}."
        )
    if audio.size == 0:
        raise AudioInputError("The audio is empty.")
    n = -(-audio.size // frame_size)
    if n > context:
        raise AudioInputError(
            f"The audio is {audio.size / 24000:.1f} s long, longer than the model's "
            f"{context * frame_size / 24000:.1f} s context; cut it into shorter turns."
        )
    padded = np.zeros(n * frame_size, np.float32)
    padded[: audio.size] = audio
    return [padded[i * frame_size : (i + 1) * frame_size] for i in range(n)]


def _check_steps(max_steps: int) -> int:
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)):
        raise AudioInputError(f"max_steps must be a whole number of frames, not {max_steps!r}.")
    if not 1 <= int(max_steps) <= MAX_STEPS_LIMIT:
        raise AudioInputError(
            f"max_steps must be between 1 and {MAX_STEPS_LIMIT}, not {max_steps}."
        )
    return int(max_steps)


def _reply_frames(
    session: Session, audio: np.ndarray, max_steps: int
) -> Iterator[tuple[bool, Frame]]:
    """(is_reply, frame) for the utterance's frames, then for max_steps frames of silence."""
    ctx = session.model.lm.config.temporal.context
    frames = utterance_frames(audio, session.frame_size, ctx)
    max_steps = _check_steps(max_steps)
    for pcm in frames:
        yield False, session.step(pcm)
    silence = np.zeros(session.frame_size, np.float32)
    for _ in range(max_steps):
        yield True, session.step(silence)


def _transcript(session: Session, frames: list[Frame]) -> str:
    tok = session.model.tokenizer
    ids = [f.text_id for f in frames]
    return tok.decode(ids) if tok else ""


def _reply(
    session: Session, audio: np.ndarray, max_steps: int, on_frame: OnFrame | None = None
) -> Reply:
    heard: list[Frame] = []
    reply: list[Frame] = []
    for is_reply, frame in _reply_frames(session, audio, max_steps):
        (reply if is_reply else heard).append(frame)
        if on_frame is not None:
            on_frame(frame)
    everything = heard + reply
    return Reply(
        audio=np.concatenate([f.pcm for f in reply]),
        text=_transcript(session, everything),
        tokens=[f.text_id for f in everything],
        frames=reply,
    )


def respond(
    session: Session, audio: np.ndarray, max_steps: int = 75, on_frame: OnFrame | None = None
) -> Reply:
    """Feed an utterance, let the model answer for `max_steps` frames; the session continues.

    `on_frame(frame)` sees every frame as it is made (the utterance's, then the reply's).
    """
    return _reply(session, audio, max_steps, on_frame)


def respond_stream(
    session: Session,
    audio: np.ndarray,
    max_steps: int = 75,
    chunk_s: float = 2.0,
    on_frame: OnFrame | None = None,
) -> Iterator[Chunk]:
    """The reply as chunks of `chunk_s` seconds; the last is flagged final and has the transcript."""
    if not isinstance(chunk_s, (int, float, np.number)) or not 0 < chunk_s <= 240:
        raise AudioInputError(
            f"The chunk length must be a number of seconds above 0 and at most 240, not {chunk_s!r}."
        )
    per_chunk = max(1, round(chunk_s * session.sample_rate / session.frame_size))
    everything: list[Frame] = []
    pending: list[Frame] = []
    index = 0
    done = 0
    total = _check_steps(max_steps)
    for is_reply, frame in _reply_frames(session, audio, max_steps):
        everything.append(frame)
        if on_frame is not None:
            on_frame(frame)
        if not is_reply:
            continue
        pending.append(frame)
        done += 1
        final = done == total
        if len(pending) == per_chunk or final:
            yield Chunk(
                audio=np.concatenate([f.pcm for f in pending]),
                text="".join(f.text for f in pending),
                final=final,
                transcript=_transcript(session, everything) if final else "",
                index=index,
            )
            index += 1
            pending = []


def respond_realtime(session: Session, frames: Iterable[np.ndarray]) -> Iterator[Frame]:
    """Full duplex: one agent frame out for each 80 ms user frame in, as they come."""
    for pcm in frames:
        yield session.step(pcm)


@dataclass
class Diagnosis:
    """A reply plus per-step figures for tuning."""

    reply: Reply
    stats: list[StepStats] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    phases_ms: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Medians of the per-step figures."""
        out = {"steps": float(len(self.step_ms))}
        if self.step_ms:
            out["step_ms_p50"] = float(np.median(self.step_ms))
        for name, values in self.phases_ms.items():
            out[f"{name}_ms_p50"] = float(np.median(values))
        if self.stats:
            out["text_entropy_p50"] = float(np.median([s.text_entropy for s in self.stats]))
            out["hidden_norm_p50"] = float(np.median([s.hidden_norm for s in self.stats]))
        return out


def diagnose(session: Session, audio: np.ndarray, max_steps: int = 75) -> Diagnosis:
    """`respond` with statistics: hidden-state norms, text entropy, top tokens, phase timings.

    The session must have been made with `collect_stats=True` (and `measure_phases=True` for
    the per-phase timings); `PersonaPlex.diagnose` does that.
    """
    stats: list[StepStats] = []
    step_ms: list[float] = []
    phases: dict[str, list[float]] = {"encode": [], "temporal": [], "depformer": [], "decode": []}

    def record(frame: Frame) -> None:
        step_ms.append(frame.timings.total_ms)
        if session.last_stats is not None:
            stats.append(session.last_stats)
        for name, values in phases.items():
            values.append(getattr(frame.timings, f"{name}_ms"))

    reply = _reply(session, audio, max_steps, record)
    return Diagnosis(
        reply=reply,
        stats=stats,
        step_ms=step_ms,
        phases_ms=phases if session.measure_phases else {},
    )
