"""PersonaPlex 7B in MLX: the language model, the Mimi codec and live conversation sessions.

import model
pp = model.load()                      # aufklarer/PersonaPlex-7B-MLX-4bit, or a folder
reply = pp.respond(audio_24k, voice="NATF2", prompt="assistant")
session = pp.session(model.SessionSettings("VARF2", "casual", seed=1))
frame = session.step(pcm_1920)         # one 80 ms frame in, one out

Packages, each using only those below it (pyproject's import contracts): `conversation`
(sessions, replies, the facade), `checkpoints` and `mimi`, `lm` (the language model), `cuda`
(optional kernels, reached only through `model.cuda`); shared modules: `config`, `sampling`,
`quantized`, `derived`, `backend`, `config_check`, `errors`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the modules that define them; imported on first use, so that importing a
# light module such as `model.errors` does not load MLX.
_EXPORTS: dict[str, str] = {
    "PersonaPlexConfig": "model.config",
    "SamplingConfig": "model.config",
    "config_7b": "model.config",
    "AudioInputError": "model.errors",
    "CheckpointError": "model.errors",
    "ModelNotFoundError": "model.errors",
    "PersonaPlexError": "model.errors",
    "UnknownPromptError": "model.errors",
    "UnknownVoiceError": "model.errors",
    "DEFAULT_MODEL": "model.checkpoints.hub",
    "PersonaPlex": "model.conversation.persona",
    "load": "model.conversation.persona",
    "random_model": "model.conversation.persona",
    "PROMPT_PRESETS": "model.conversation.prompts",
    "Diagnosis": "model.conversation.replies",
    "Session": "model.conversation.session",
    "SessionSettings": "model.conversation.session_settings",
    "Chunk": "model.conversation.types",
    "Frame": "model.conversation.types",
    "Reply": "model.conversation.types",
    "StepTimings": "model.conversation.types",
    "DEFAULT_VOICE": "model.checkpoints.voice_presets",
    "VOICE_PRESETS": "model.checkpoints.voice_presets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
