"""A straightforward, slow implementation of the reference step schedule, for tests
(docs/driving-personaplex.md §The reference step).

It keeps the token ring and provided flags on the host exactly as the reference does and calls
the model one column at a time through three callables, so that `model.Session` (batched prefill,
one-frame-earlier scheduling, everything on the device) can be checked token for token.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# forward(column tokens [17] or None, embedding or None) -> (text_logits [V], hidden)
Forward = Callable[[np.ndarray | None, object | None], tuple[np.ndarray, object]]
# depformer(hidden, text_token, forced [16], provided [16]) -> sampled tokens [16]
Depformer = Callable[[object, int, np.ndarray, np.ndarray], np.ndarray]

SILENCE = [948, 243, 1178, 546, 1736, 1030, 1978, 2008]
SINE = [430, 1268, 381, 1611, 1095, 1495, 56, 472]
PAD = 3


class ReferenceSchedule:
    """The reference's `step(user, agent, text)` with greedy text sampling
    (docs/driving-personaplex.md §The reference step)."""

    def __init__(
        self,
        forward: Forward,
        depformer: Depformer,
        delays: tuple[int, ...],
        text_initial: int,
        audio_initial: int,
    ) -> None:
        self.forward, self.depformer = forward, depformer
        self.delays = list(delays)
        self.k = len(delays)
        self.max_delay = max(delays)
        self.ct = self.max_delay + 3
        self.initial = np.array([text_initial] + [audio_initial] * (self.k - 1), np.int64)
        self.cache = np.full((self.k, self.ct), -2, np.int64)
        self.provided = np.zeros((self.k, self.ct), bool)
        self.offset = 0

    def _write(self, k: int, token: int) -> None:
        col = (self.offset + self.delays[k]) % self.ct
        self.cache[k, col] = token
        self.provided[k, col] = True

    def _prepare(self, user, agent, text) -> bool:
        n = (self.k - 1) // 2
        if user is not None:
            for q, tok in enumerate(user):
                self._write(1 + n + q, int(tok))
        if agent is not None:
            for q, tok in enumerate(agent):
                self._write(1 + q, int(tok))
        if text is not None:
            self._write(0, int(text))
        for k, delay in enumerate(self.delays):
            if self.offset <= delay:
                self.cache[k, self.offset % self.ct] = self.initial[k]
                self.provided[k, self.offset % self.ct] = True
        if self.offset == 0:
            self.cache[:, 0] = self.initial
            self.offset += 1
            return False
        return True

    def step(self, user=None, agent=None, text=None, embedding=None) -> np.ndarray | None:
        """One reference step; returns the 17 tokens of one complete frame once available."""
        while not self._prepare(user, agent, text):
            if embedding is None:
                return None
        inp = (self.offset - 1) % self.ct
        tgt = self.offset % self.ct
        column = None if embedding is not None else self.cache[:, inp].copy()
        logits, hidden = self.forward(column, embedding)
        sampled_text = int(np.argmax(logits))
        text_in = int(self.cache[0, tgt]) if self.provided[0, tgt] else sampled_text
        audio = self.depformer(
            hidden, text_in, self.cache[1:, tgt].copy(), self.provided[1:, tgt].copy()
        )
        self.provided[:, inp] = False
        if not self.provided[0, tgt]:
            self.cache[0, tgt] = sampled_text
        for i in range(len(audio)):
            if not self.provided[1 + i, tgt]:
                self.cache[1 + i, tgt] = audio[i]
        out = None
        if self.offset > self.max_delay:
            idx = [(self.offset - self.max_delay + d) % self.ct for d in self.delays]
            out = self.cache[np.arange(self.k), idx].copy()
        self.offset += 1
        return out

    def voice_prompt(self, embeddings, cache: np.ndarray) -> None:
        """Replay saved voice embeddings (text PAD, audio initial), then restore the saved ring."""
        n = (self.k - 1) // 2
        for e in embeddings:
            self.step(
                user=[self.initial[1]] * n, agent=[self.initial[1]] * n, text=PAD, embedding=e
            )
        self.cache[:] = cache

    def prompt(self, system_tokens: list[int], silence_frames: int = 6) -> None:
        """Silence, system prompt, silence: every token forced."""
        for _ in range(silence_frames):
            self.step(user=SINE, agent=SILENCE, text=PAD)
        for tok in system_tokens:
            self.step(user=SINE, agent=SILENCE, text=tok)
        for _ in range(silence_frames):
            self.step(user=SINE, agent=SILENCE, text=PAD)
