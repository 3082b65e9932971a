"""The user's transcript inside a PersonaPlex conversation: the STT run on the codes of the same
Mimi encode, in the same step and the same evaluation.

PersonaPlex's Mimi encodes each user frame once, with a 32-codebook quantizer: PersonaPlex's own
projections and first codebooks, then the STT Mimi's further codebooks. A residual quantizer's
first codes do not depend on later ones (tests/test_mimi_32_codebooks.py), so the first 8 go to
PersonaPlex unchanged, by construction, and all 32 to the STT. The STT reads what it was trained
on only if its Mimi is PersonaPlex's (as published, the very same checkpoint): `Listener.attach`
compares them weight by weight (up to bfloat16 rounding, should one copy be stored so) and
refuses another one in one sentence. Lazy arrays only; the session evaluates them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from model.array_checks import float_audio
from model.config import MimiConfig
from model.conversation.tokenizer import TextTokenizer
from model.errors import AudioInputError, CheckpointError
from model.lm.kv_cache import Window
from model.mimi.quantizer import SplitResidualQuantizer
from model.stt.config import SttConfig
from model.stt.model import SttLM
from model.stt.stream import SttStep, SttStream

if TYPE_CHECKING:
    from model.mimi import MimiCodec

_ENCODER_PARTS = ("encoder", "encoder_transformer", "downsample")
_PROJECTIONS = (
    "semantic_input_proj",
    "acoustic_input_proj",
    "semantic_output_proj",
    "acoustic_output_proj",
)


@dataclass
class Listener:
    """The STT parts a PersonaPlex model keeps to transcribe its user (one per model).

    The STT's own Mimi is not kept: PersonaPlex's encoder runs, with `quantizer` (all the STT's
    codebooks) in place of its own."""

    config: SttConfig
    lm: SttLM
    quantizer: SplitResidualQuantizer
    tokenizer: TextTokenizer | None  # None: random weights, no text (benchmarks)
    source: str
    compile: bool = True
    graphs: dict[Window, Callable] = field(default_factory=dict)  # shared by every stream
    # True: streams run a window eagerly until its graph is warmed (`StepGraphs.eager_until_warm`)
    eager_until_warm: bool = False

    @classmethod
    def attach(cls, mimi: MimiCodec, stt: Any, *, source: str = "") -> Listener:
        """The listener of a PersonaPlex whose codec is `mimi`, for `stt` (a loaded
        `model.stt.loader.SttModel`, which makes listeners: typed loosely to avoid a cycle);
        CheckpointError (one sentence)
        when the STT's Mimi is not the same network with the same first codebooks."""
        ours, theirs = mimi.model, stt.mimi.model
        n = ours.cfg.num_codebooks
        if theirs.cfg.num_codebooks < max(n, stt.config.n_q):
            raise CheckpointError(
                f"The STT model's Mimi codes {theirs.cfg.num_codebooks} codebooks, fewer than the {max(n, stt.config.n_q)} needed."
            )
        if not _same_encoder(ours, theirs, n):
            raise CheckpointError(
                f"The STT model {source or stt.folder} uses another Mimi than PersonaPlex's, so one encode cannot serve both."
            )
        return cls(
            config=stt.config,
            lm=stt.lm,
            quantizer=_extended(ours.quantizer, theirs.quantizer, n, stt.mimi.cfg),
            tokenizer=stt.tokenizer,
            source=source or str(stt.folder),
        )

    def stream(self) -> ListenerStream:
        """A fresh transcription stream for one conversation."""
        return ListenerStream(self)

    def hearing(self, persona: Any) -> Hearing:
        """The STT alone on `persona`'s encoder, outside its sessions (see `Hearing`)."""
        return Hearing(self, persona.step_graphs(), persona.mimi)

    def piece(self, token: int) -> str:
        """The text of one STT token ("" for padding), "▁" as a space."""
        return self.tokenizer.piece(token) if self.tokenizer is not None else ""


class ListenerStream:
    """One conversation's transcription state: `step(codes)` is lazy, evaluate its outputs with
    `state_arrays()` in the step's one evaluation."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._stream = SttStream(
            listener.lm,
            compile=listener.compile,
            graphs=listener.graphs,
            eager_until_warm=lambda: listener.eager_until_warm,
        )

    @property
    def frames(self) -> int:
        return self._stream.frames

    def reset(self) -> None:
        """Start over: the STT's ring and text state as in a new stream."""
        self._stream.reset()

    def step(self, codes: mx.array) -> SttStep:
        """All the STT's codebooks of this frame (the first n_q of the encode's)."""
        return self._stream.step(codes[: self.listener.config.n_q])

    def state_arrays(self) -> list[mx.array]:
        """The arrays a step changes (to evaluate with the step's outputs)."""
        return self._stream.state_arrays()

    def warm_up(self) -> None:
        """Compile the graph of every attention window the stream will reach, now."""
        self._stream.warm_up()

    def windows_to_warm(self) -> list[Window]:
        """The attention windows whose graph `warm_up` would still compile, in order."""
        return self._stream.windows_to_warm()

    def warm_window(self, window: Window) -> None:
        """Compile and run once the graph of one of `windows_to_warm`."""
        self._stream.warm_window(window)


def _extended(
    ours: SplitResidualQuantizer, theirs: SplitResidualQuantizer, n: int, cfg: MimiConfig
) -> SplitResidualQuantizer:
    """A quantizer of all `theirs`' codebooks (`cfg`: their Mimi's) whose projections and first
    n codebooks are ours."""
    q = SplitResidualQuantizer(cfg)
    for name in _PROJECTIONS:
        setattr(q, name, getattr(ours, name))
    rest = theirs.codebooks[n:].astype(ours.codebooks.dtype)
    q.codebooks = mx.concatenate([ours.codebooks[:n], rest])
    q.prepare()
    q.prepare_kernel()  # on CUDA: its encode as one kernel, checked now (before any step)
    return q


def _close(a: mx.array, b: mx.array) -> bool:
    """Equal up to bfloat16 rounding (relative to the tensor's scale)."""
    if a.shape != b.shape:
        return False
    a, b = a.astype(mx.float32), b.astype(mx.float32)
    scale = mx.max(mx.abs(b)).item()
    return mx.max(mx.abs(a - b)).item() <= 1e-2 * scale + 1e-6


def _same_encoder(ours, theirs, n: int) -> bool:
    """Whether two Mimi models encode alike up to codebook n (the same encoder weights,
    projections and first n codebooks, up to bfloat16 rounding)."""
    for part in _ENCODER_PARTS:
        a = tree_flatten(getattr(ours, part).parameters())
        b = dict(tree_flatten(getattr(theirs, part).parameters()))
        if len(a) != len(b):
            return False
        for name, value in a:
            other = b.get(name)
            if other is None or not _close(value, other):
                return False
    qa, qb = ours.quantizer, theirs.quantizer
    if not all(_close(getattr(qa, name), getattr(qb, name)) for name in _PROJECTIONS):
        return False
    return _close(qa.codebooks[:n], qb.codebooks[:n])


@dataclass(frozen=True)
class HeardFrame:
    """What the STT made of one frame heard outside a session (host values, `Frame`'s names)."""

    user_text_id: int
    user_text: str
    end_of_turn: tuple[float, ...]


class Hearing:
    """The STT alone on the user's frames, outside any session (turn-based listening, to end
    the turn on the end-of-turn head): PersonaPlex's encoder with the listener's quantizer (the
    model's compiled encode graph), then the STT step, one evaluation per frame."""

    def __init__(self, listener: Listener, graphs: Any, mimi: MimiCodec) -> None:
        self.listener = listener
        self._graphs = graphs  # the PersonaPlex model's `StepGraphs`
        self._mimi = mimi.model
        self._stream = listener.stream()
        self.reset()

    def reset(self) -> None:
        """A new stream: Mimi's and the STT's state start over."""
        self._state = self._mimi.init_encode_state()
        self._frames = 0
        self._stream.reset()

    def warm_up(self) -> None:
        """Compile the graphs now (the encode graphs are the session's)."""
        self._stream.warm_up()

    def hear(self, pcm: np.ndarray) -> HeardFrame:
        """One 80 ms frame (1920 float samples) in; its text token and end-of-turn heads out."""
        pcm = float_audio(pcm, "The audio the STT hears")
        if pcm.shape != (self._mimi.cfg.frame_size,):
            raise AudioInputError(
                f"The STT hears frames of {self._mimi.cfg.frame_size} samples, not {list(pcm.shape)}."
            )
        full = self._mimi.full_after(self._frames)
        encode = self._graphs.encode_all(full, self.listener.quantizer)
        codes, self._state = encode(mx.array(pcm), self._state)
        step = self._stream.step(codes)
        mx.eval(step.text_token, step.end_of_turn, self._state, self._stream.state_arrays())
        self._frames += 1
        token = int(step.text_token.item())
        probs = tuple(float(p) for p in np.array(step.end_of_turn))
        return HeardFrame(token, self.listener.piece(token), probs)
