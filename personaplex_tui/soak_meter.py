"""What a soak run drives and watches: a model adapter whose sessions sample memory as they step.

`SoakModel` makes any loaded `model.PersonaPlex` usable by the engine (a random-weights model
gets a random voice prompt and system prompt); each of its sessions reports to a `MemoryMeter`,
which samples MLX's active and cache memory and the process's resident memory on the engine
thread at chosen frames. Headless: no textual, no sounddevice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model import PersonaPlex
from model.checkpoints.voices import VoicePrompt
from model.conversation.session_settings import SessionSettings
from personaplex_tui.memory import process_rss_bytes

MB = 1024 * 1024


@dataclass(frozen=True)
class MemorySample:
    """Memory after a frame of the live session (MiB), and the seconds since its first step."""

    frame: int
    elapsed_s: float
    mlx_active_mb: float
    mlx_cache_mb: float
    rss_mb: float
    label: str = ""  # "start", "context full", "settled", "end" or "" (periodic)


class MemoryMeter:
    """Samples memory after the frames a soak asks for, from `arm()` on (the live run).

    `every` frames a sample is taken, plus the first frame ("start"), the first frame at which
    the temporal ring KV cache is full ("context full"), `settle` ("settled") and `last`
    ("end"). `progress(sample)` is called with each sample (on the engine thread).
    """

    def __init__(
        self,
        every: int,
        settle: int,
        last: int,
        progress: Callable[[MemorySample], None] = lambda sample: None,
    ) -> None:
        self.every = every
        self.settle = settle
        self.last = last
        self.progress = progress
        self.samples: list[MemorySample] = []
        self.frames = 0
        self.context_full_frame: int | None = None
        self.positions = 0  # temporal positions of the live session (prefill included)
        self.context: int | None = None  # the temporal context of the live session's model
        self.armed = False
        self.elapsed_s = 0.0  # from the first counted step to the latest (a stopped run's too)
        self._start = 0.0
        self._lock = threading.Lock()

    def arm(self) -> None:
        """The live conversation starts: count and sample its steps from now on."""
        with self._lock:
            self.samples = []
            self.frames = 0
            self.context_full_frame = None
            self.armed = True

    def new_session(self) -> None:
        """A session was started: stop counting until `arm` (the warm-up is not measured)."""
        with self._lock:
            self.armed = False

    def stepped(self, position: int | None, context: int | None) -> None:
        """One frame of the newest session went by (`position`: temporal positions so far)."""
        with self._lock:
            if not self.armed:
                return
            self.frames += 1
            n = self.frames
            if n == 1:
                self._start = time.perf_counter()
            self.elapsed_s = time.perf_counter() - self._start
            labels = []
            if n == 1:
                labels.append("start")
            self.context = context
            if position is not None:
                self.positions = position
                full = context is not None and position >= context
                if full and self.context_full_frame is None:
                    self.context_full_frame = n
                    labels.append("context full")
            if n == self.settle:
                labels.append("settled")
            if n == self.last:
                labels.append("end")
            if not labels and n % self.every:
                return
            sample = MemorySample(
                frame=n,
                elapsed_s=round(time.perf_counter() - self._start, 3),
                mlx_active_mb=round(mx.get_active_memory() / MB, 3),
                mlx_cache_mb=round(mx.get_cache_memory() / MB, 3),
                rss_mb=round(process_rss_bytes() / MB, 3),
                label=", ".join(labels),
            )
            self.samples.append(sample)
        self.progress(sample)


class MeteredSession:
    """A session that tells the meter about every step it takes."""

    def __init__(self, inner: Any, meter: MemoryMeter) -> None:
        self.inner = inner
        self.meter = meter
        self.steps = 0
        lm = getattr(getattr(inner, "model", None), "lm", None)
        self._context = lm.config.temporal.context if lm is not None else None

    def step(self, pcm: np.ndarray) -> Any:
        frame = self.inner.step(pcm)
        self.steps += 1
        self.meter.stepped(getattr(self.inner, "position", None), self._context)
        return frame

    def reset(self) -> None:
        self.inner.reset()


def random_voice(model: PersonaPlex, frames: int, seed: int) -> VoicePrompt:
    """A voice prompt of `frames` random embeddings and a random token ring, shaped for `model`
    (the soak's and the benchmark's; 0 frames is the ring alone, negative is refused)."""
    if frames < 0:
        raise ValueError(f"a voice prompt cannot have {frames} frames")
    cfg = model.lm.config
    rng = np.random.default_rng(seed)
    cache = rng.integers(0, cfg.card, (cfg.n_streams, cfg.max_delay + 3))
    cache[0] = rng.integers(0, cfg.text_card, cfg.max_delay + 3)
    emb = mx.random.normal((frames, cfg.temporal.d_model), key=mx.random.key(seed)) * 0.05
    return VoicePrompt("random", emb.astype(model.lm.dtype), cache)


class SoakModel:
    """Shaped like what the engine needs (`session(SessionSettings)`), over a loaded model.

    With `voice` and `system_tokens` given (a random-weights model, which has no voice files
    nor tokenizer), they replace the voice and prompt names; otherwise the names are used.
    """

    def __init__(
        self,
        model: PersonaPlex,
        meter: MemoryMeter,
        *,
        voice: VoicePrompt | None = None,
        system_tokens: list[int] | None = None,
    ) -> None:
        self.model = model
        self.meter = meter
        self.voice = voice
        self.system_tokens = system_tokens
        self.live: MeteredSession | None = None  # the newest session (earlier ones are freed)

    def session(self, settings: SessionSettings) -> MeteredSession:
        inner = self.model.session(settings, voice=self.voice, system_tokens=self.system_tokens)
        self.meter.new_session()
        self.live = MeteredSession(inner, self.meter)
        return self.live
