"""`load()` and `PersonaPlex`: a checkpoint's LM, Mimi, tokenizer and voices, ready for sessions."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from model.checkpoints.hub import DEFAULT_MODEL, resolve_model
from model.checkpoints.layout import ORIGINAL_FILE
from model.checkpoints.load import load_lm
from model.checkpoints.random_weights import random_lm
from model.checkpoints.voices import (
    DEFAULT_VOICE,
    VOICE_PRESETS,
    VoicePrompt,
    available_voices,
    canonical_voice,
    load_voice,
)
from model.checks import seed_value
from model.config import PersonaPlexConfig, QuantizationConfig
from model.conversation import replies
from model.conversation.prompts import DEFAULT_PROMPT, resolve_prompt
from model.conversation.session import Session
from model.conversation.session_settings import SAMPLING_KEYS, SessionSettings
from model.conversation.step_graphs import StepGraphs
from model.conversation.tokenizer import TextTokenizer
from model.conversation.types import Chunk, Frame, Reply
from model.errors import CheckpointError, SettingValueError, UnknownVoiceError
from model.lm.model import LM
from model.mimi import MimiCodec

TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
MIMI_FILES = ("mimi.safetensors", "tokenizer-e351c8d8-checkpoint125.safetensors")


def default_dtype() -> mx.Dtype:
    """bfloat16 on a GPU, float32 on the CPU (where MLX's bfloat16 is emulated and slow)."""
    return mx.bfloat16 if mx.default_device() == mx.gpu else mx.float32


@dataclass
class LoadTimes:
    """Seconds spent in each part of `load()`."""

    resolve_s: float = 0.0
    lm_s: float = 0.0
    mimi_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.resolve_s + self.lm_s + self.mimi_s


class PersonaPlex:
    """A loaded PersonaPlex: start `session()`s, or use the reply helpers (`respond`, ...)."""

    def __init__(
        self,
        lm: LM,
        mimi: MimiCodec,
        config: PersonaPlexConfig,
        *,
        tokenizer: TextTokenizer | None = None,
        folder: Path | None = None,
        source: str = "",
        load_times: LoadTimes | None = None,
    ) -> None:
        self.lm = lm
        self.mimi = mimi
        self.config = config
        self.tokenizer = tokenizer
        self.folder = folder
        self.source = source or (str(folder) if folder else "random weights")
        self.load_times = load_times or LoadTimes()
        self._voice_cache: dict[str, VoicePrompt] = {}
        self._step_graphs: dict[bool, StepGraphs] = {}
        self.listener: Any = None  # a `model.stt.listener.Listener`: see `listen`

    def listen(self, stt: Any, source: str = "") -> None:
        """Transcribe the user in every new session with `stt` (a loaded `SttModel`; None: stop).
        CheckpointError (one sentence) when its Mimi is not this model's."""
        if stt is not None and not callable(getattr(stt, "listener", None)):
            raise CheckpointError(
                f"listen() takes a loaded STT model (model.stt.load_stt), not {type(stt).__name__}."
            )
        self.listener = None if stt is None else stt.listener(self.mimi, source)

    # -- what it has --------------------------------------------------------------------------

    @property
    def quantization(self) -> str:
        """'4-bit', '8-bit' or the float dtype of the weights."""
        q = self.config.quantization
        if q is not None:
            return f"{q.bits}-bit"
        return str(self.lm.dtype).split(".")[-1]

    @property
    def voices(self) -> tuple[str, ...]:
        """Voice presets this checkpoint has."""
        return available_voices(self.folder) if self.folder else ()

    def voice(self, name: str) -> VoicePrompt:
        """A voice preset's prompt (read once, then cached)."""
        if self.folder is None:
            raise UnknownVoiceError(f"This model has no voice files, so voice '{name}' is unknown.")
        key = canonical_voice(name, self.voices or VOICE_PRESETS)
        if key not in self._voice_cache:
            cfg = self.lm.config
            self._voice_cache[key] = load_voice(
                self.folder,
                key,
                d_model=cfg.temporal.d_model,
                n_streams=cfg.n_streams,
                ring_columns=cfg.max_delay + 3,
                dtype=self.lm.dtype,
                text_card=cfg.text_card,
                card=cfg.card,
            )
        return self._voice_cache[key]

    def system_tokens(self, prompt: str | None = None, prompt_text: str = "") -> list[int]:
        """Token ids of a system prompt (a preset's name, or "custom" and its text), wrapped in
        <system> tags."""
        text = resolve_prompt(prompt, prompt_text)
        if self.tokenizer is None:
            raise CheckpointError("This model has no tokenizer, so it cannot take a system prompt.")
        return self.tokenizer.encode_system_prompt(text)

    def piece(self, token: int) -> str:
        """Decoded text of an inner-monologue token ("" for PAD/EPAD)."""
        return self.tokenizer.piece(token) if self.tokenizer else ""

    # -- sessions -----------------------------------------------------------------------------

    def step_graphs(self, compile: bool = True) -> StepGraphs:
        """The step graphs every session of this model shares (compiled, or eager functions)."""
        if compile not in self._step_graphs:
            self._step_graphs[compile] = StepGraphs(self.lm, self.mimi, compile=compile)
        return self._step_graphs[compile]

    def session(
        self,
        settings: SessionSettings | None = None,
        *,
        voice: VoicePrompt | None = None,
        system_tokens: list[int] | None = None,
        **options: Any,
    ) -> Session:
        """A new conversation with `settings` (prompt phase already run); without them, the
        default voice and prompt with the checkpoint's sampling. A prepared `voice` or
        `system_tokens` replaces the settings' voice or prompt (a random model has no voice files
        nor tokenizer). `options` go to `Session`."""
        s = settings if settings is not None else self.default_settings()
        if not isinstance(s, SessionSettings):
            raise SettingValueError(f"settings must be a SessionSettings, not {type(s).__name__}.")
        if voice is not None and not isinstance(voice, VoicePrompt):
            raise SettingValueError(
                f"voice= takes a prepared VoicePrompt (model.voice(name)), not {type(voice).__name__}; "
                "name a preset in the settings instead."
            )
        if voice is None and s.voice is not None:
            voice = self.voice(s.voice)
        if system_tokens is None:
            system_tokens = self.system_tokens(s.prompt, s.prompt_text)
        return Session(
            self,
            voice=voice,
            system_tokens=system_tokens,
            sampling=s.sampling,
            seed=s.seed,
            **options,
        )

    def default_settings(self, **changes: Any) -> SessionSettings:
        """The default voice and prompt with this checkpoint's sampling, `changes` applied."""
        return SessionSettings(sampling=self.config.sampling).replace(**changes)

    # -- reply helpers (each on a fresh session; see model.replies) -----------------------------

    def _session(self, voice: str, prompt: str, options: dict[str, Any]) -> Session:
        """A session for a reply helper: `options` may hold `seed`, `sampling` (default: the
        checkpoint's) or its fields by name (`text_temperature=0.5`), the rest go to `Session`."""
        keys = ("seed", "sampling", *SAMPLING_KEYS)
        settings = self.default_settings(
            voice=voice, prompt=prompt, **{k: options.pop(k) for k in keys if k in options}
        )
        return self.session(settings, **options)

    def respond(
        self,
        audio: np.ndarray,
        voice: str = DEFAULT_VOICE,
        prompt: str = DEFAULT_PROMPT,
        max_steps: int = 75,
        **options: Any,
    ) -> Reply:
        """A turn-based reply to `audio` (24 kHz mono float32): the utterance, then silence."""
        return replies.respond(self._session(voice, prompt, options), audio, max_steps)

    def respond_stream(
        self,
        audio: np.ndarray,
        voice: str = DEFAULT_VOICE,
        prompt: str = DEFAULT_PROMPT,
        max_steps: int = 75,
        chunk_s: float = 2.0,
        **options: Any,
    ) -> Iterator[Chunk]:
        """`respond` as chunks of `chunk_s` seconds (the last one final, with the transcript)."""
        session = self._session(voice, prompt, options)
        return replies.respond_stream(session, audio, max_steps, chunk_s)

    def respond_realtime(
        self,
        frames: Iterable[np.ndarray],
        voice: str = DEFAULT_VOICE,
        prompt: str = DEFAULT_PROMPT,
        **options: Any,
    ) -> Iterator[Frame]:
        """Full duplex: an iterator of agent frames, one per 1920-sample user frame."""
        return replies.respond_realtime(self._session(voice, prompt, options), frames)

    def diagnose(
        self,
        audio: np.ndarray,
        voice: str = DEFAULT_VOICE,
        prompt: str = DEFAULT_PROMPT,
        max_steps: int = 75,
        **options: Any,
    ) -> replies.Diagnosis:
        """A reply with per-step statistics and phase timings, for tuning."""
        options.setdefault("collect_stats", True)
        options.setdefault("measure_phases", True)
        return replies.diagnose(self._session(voice, prompt, options), audio, max_steps)


def _find(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder} has no {what} file ({' or '.join(names)}).")


ACTIVATION_DTYPES = ("float32", "float16", "bfloat16")


def activation_dtype(dtype: Any) -> mx.Dtype:
    """`dtype` (an MLX float dtype or its name; None: `default_dtype()`) as an MLX dtype, or
    CheckpointError in one sentence (an int dtype loaded, then failed at the first step)."""
    if dtype is None:
        return default_dtype()
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("mlx.core.")
    if name not in ACTIVATION_DTYPES:
        raise CheckpointError(
            f"The activation dtype must be one of {', '.join(ACTIVATION_DTYPES)}, not {dtype!r}."
        )
    return getattr(mx, name)


def load(
    model: str | os.PathLike[str] | None = None,
    *,
    dtype: mx.Dtype | None = None,
    quantize: int | None = None,
    tqdm_class: Any = None,
    compile: bool = True,
) -> PersonaPlex:
    """Load PersonaPlex from a folder or a Hugging Face repo id (default: the 4-bit MLX model).

    dtype: activation dtype (default bfloat16 on a GPU, float32 on the CPU); quantize: 4 or 8 to
    quantize a float checkpoint on load. Errors are one sentence (CheckpointError and kin).
    """
    dtype = activation_dtype(dtype)
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise CheckpointError(f"model must be a folder or a repo id (text), not {model!r}.")
    if model is not None and not str(model).strip():
        raise CheckpointError("model is empty; give a folder or a repo id (None: the default).")
    times = LoadTimes()
    t0 = time.perf_counter()
    folder = resolve_model(model, tqdm_class=tqdm_class)
    times.resolve_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm, config = load_lm(folder, dtype=dtype, quantize=quantize)
    times.lm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mimi = MimiCodec.from_file(_find(folder, MIMI_FILES, "Mimi"), config.mimi, compile=compile)
    times.mimi_s = time.perf_counter() - t0
    tok_path = folder / TOKENIZER_FILE
    tokenizer = TextTokenizer(tok_path) if tok_path.is_file() else None
    if tokenizer is None and not (folder / ORIGINAL_FILE).is_file():
        raise CheckpointError(f"{folder} has no {TOKENIZER_FILE}; the checkpoint is incomplete.")
    source = str(model) if model is not None else DEFAULT_MODEL
    return PersonaPlex(
        lm, mimi, config, tokenizer=tokenizer, folder=folder, source=source, load_times=times
    )


def random_model(
    config: PersonaPlexConfig,
    *,
    bits: int | None = None,
    dtype: mx.Dtype | None = None,
    seed: int = 0,
    tokenizer: TextTokenizer | None = None,
) -> PersonaPlex:
    """A model with random weights of `config`'s shape, built in memory (benchmarks, tests)."""
    seed = seed_value(seed)
    dtype = dtype or default_dtype()
    quant = QuantizationConfig(bits=bits) if bits else None
    config = replace(config, quantization=quant)
    t0 = time.perf_counter()
    lm = random_lm(config, dtype=dtype, seed=seed)
    lm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mimi = MimiCodec.random(config.mimi, seed=seed)
    times = LoadTimes(lm_s=lm_s, mimi_s=time.perf_counter() - t0)
    return PersonaPlex(
        lm, mimi, config, tokenizer=tokenizer, source="random weights", load_times=times
    )
