"""The prompt phase worked out on the host: which token column each prefill position reads.

The phase: docs/driving-personaplex.md §The prompt phase.

Every token of the prompt phase is forced (voice, silence, system prompt, silence), so the model's
samples never enter the token ring and the whole phase can be computed before the model runs.
`plan_prompt` replays the reference's ring bookkeeping (delays, provided flags, initial tokens,
the offset-0 no-op, the voice `cache` restore) and returns the input columns of every forward, so
that the session runs the phase as one batched causal forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.config import LMConfig
from model.errors import UnknownPromptError

# Mimi codes of a silent agent frame and of the user's 440 Hz sine
# (docs/driving-personaplex.md §Special tokens).
AGENT_SILENCE: tuple[int, ...] = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)
USER_SINE: tuple[int, ...] = (430, 1268, 381, 1611, 1095, 1495, 56, 472)
SILENCE_FRAMES = 6  # int(0.5 s * 12.5 Hz) before and after the system prompt
# The longest prompt phase taken, in positions: the batched prefill's mask is T x T (12,000:
# 144 M entries; four of the 7B's contexts)
MAX_PROMPT_POSITIONS = 12_000


def check_prompt(cfg: LMConfig, tokens: Any, voice_frames: int) -> list[int]:
    """The system prompt's token ids as a list, once each is a whole number in [0, text_card)
    (an id out of range would index past the text embedding) and the prompt phase (voice,
    silence, prompt, silence) is at most MAX_PROMPT_POSITIONS long; else UnknownPromptError,
    one sentence."""
    try:
        ids = [int(t) for t in tokens]
    except (TypeError, ValueError):
        raise UnknownPromptError("The system prompt's tokens must be whole numbers.") from None
    if any(isinstance(t, float) and not float(t).is_integer() for t in tokens):
        raise UnknownPromptError("The system prompt's tokens must be whole numbers.")
    bad = [t for t in ids if not 0 <= t < cfg.text_card]
    if bad:
        raise UnknownPromptError(
            f"The system prompt's tokens must be in [0, {cfg.text_card}) (the text vocabulary), "
            f"not {bad[0]}."
        )
    # A prompt phase longer than the context runs as the reference's does (the ring wraps, the
    # voice's first frames leave the window; the app refuses that before loading), but the
    # batched prefill's mask grows with its square: past MAX_PROMPT_POSITIONS it is refused.
    phase = voice_frames + len(ids) + 2 * SILENCE_FRAMES
    if phase > MAX_PROMPT_POSITIONS:
        raise UnknownPromptError(
            f"The system prompt is {len(ids)} tokens long; with the voice prompt the prompt "
            f"phase would be {phase} positions, more than the {MAX_PROMPT_POSITIONS} taken."
        )
    return ids


@dataclass
class PromptPlan:
    """The prefill: voice embeddings at positions 0..T-1, then one token column per position.

    `columns[i]` is the input of position `voice_frames + i`; the last column is the first
    conversation column's predecessor (ring column O-1), run ahead of time so that each
    conversation step can output the frame of the user audio it receives.
    `next_forced` / `next_provided` are the audio tokens already known for column O (the
    acoustic codebooks of the last prompt frame).
    """

    voice_frames: int
    columns: np.ndarray  # int64 [n, n_streams]
    next_forced: np.ndarray  # int64 [n_audio]
    next_provided: np.ndarray  # bool [n_audio]

    @property
    def positions(self) -> int:
        """Forwards of the prefill (= the first conversation column's index O)."""
        return self.voice_frames + len(self.columns)


class _Ring:
    """The reference's token ring with provided flags (max_delay + 3 columns)."""

    def __init__(self, cfg: LMConfig) -> None:
        self.delays = cfg.delays
        self.ct = cfg.max_delay + 3
        self.initial = np.array(
            [cfg.text_initial] + [cfg.audio_initial] * cfg.n_audio, dtype=np.int64
        )
        self.tokens = np.full((cfg.n_streams, self.ct), -1, dtype=np.int64)
        self.provided = np.zeros((cfg.n_streams, self.ct), dtype=bool)
        self.offset = 0
        self.n_q = cfg.n_q_agent

    def prepare(self, text: int, agent: tuple[int, ...], user: tuple[int, ...]) -> bool:
        """Write one step's forced tokens; False for the offset-0 no-op."""
        given = [text, *agent, *user]
        for k, token in enumerate(given):
            col = (self.offset + self.delays[k]) % self.ct
            self.tokens[k, col] = token
            self.provided[k, col] = True
        for k, delay in enumerate(self.delays):
            if self.offset <= delay:
                self.tokens[k, self.offset % self.ct] = self.initial[k]
                self.provided[k, self.offset % self.ct] = True
        if self.offset == 0:
            self.tokens[:, 0] = self.initial
            self.offset = 1
            return False
        return True

    def finish(self) -> np.ndarray:
        """The step's input column; the target column must be fully forced. Advances."""
        inp, tgt = (self.offset - 1) % self.ct, self.offset % self.ct
        if not self.provided[:, tgt].all():
            raise AssertionError("a prompt step left a token to be sampled")
        column = self.tokens[:, inp].copy()
        self.provided[:, inp] = False
        self.offset += 1
        return column

    def step(self, text: int, agent: tuple[int, ...], user: tuple[int, ...]) -> np.ndarray | None:
        if not self.prepare(text, agent, user):
            return None
        return self.finish()


def plan_prompt(
    cfg: LMConfig,
    system_tokens: list[int],
    *,
    voice_frames: int = 0,
    voice_cache: np.ndarray | None = None,
    silence_frames: int = SILENCE_FRAMES,
) -> PromptPlan:
    """Work out the prefill columns for a voice prompt of `voice_frames` and a system prompt."""
    ring = _Ring(cfg)
    pad = cfg.text_pad_id
    initial = (cfg.audio_initial,) * cfg.n_q_agent
    if voice_frames:
        if voice_cache is None:
            raise ValueError("a voice prompt needs its saved token ring")
        for _ in range(voice_frames):
            while not ring.prepare(pad, initial, initial):
                pass
            ring.finish()  # the forward reads the saved embedding, not this column
        ring.tokens[:] = voice_cache
    columns: list[np.ndarray] = []
    texts = [pad] * silence_frames + list(system_tokens) + [pad] * silence_frames
    for text in texts:
        column = ring.step(text, AGENT_SILENCE, USER_SINE)
        if column is not None:
            columns.append(column)
    if ring.offset == 0:
        raise ValueError("the prompt phase is empty: no voice and no prompt steps")
    # Run the first conversation column's input ahead: column O-1 is complete already.
    last = (ring.offset - 1) % ring.ct
    columns.append(ring.tokens[:, last].copy())
    target = ring.offset % ring.ct
    return PromptPlan(
        voice_frames=voice_frames,
        columns=np.stack(columns),
        next_forced=ring.tokens[1:, target].copy(),
        next_provided=ring.provided[1:, target].copy(),
    )
