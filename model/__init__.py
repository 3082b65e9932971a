"""PersonaPlex 7B in MLX: the language model, the Mimi codec and live conversation sessions.

import model
pp = model.load()                      # aufklarer/PersonaPlex-7B-MLX-4bit, or a folder
reply = pp.respond(audio_24k, voice="NATF2", prompt="assistant")
session = pp.session("VARF2", "casual")
frame = session.step(pcm_1920)         # one 80 ms frame in, one out
"""

from model.config import PersonaPlexConfig, config_7b
from model.errors import (
    AudioInputError,
    CheckpointError,
    ModelNotFoundError,
    PersonaPlexError,
    UnknownPromptError,
    UnknownVoiceError,
)
from model.hub import DEFAULT_MODEL
from model.persona import PersonaPlex, load, random_model
from model.prompts import PROMPT_PRESETS
from model.replies import Diagnosis
from model.session import Session, SessionSampling
from model.types import Chunk, Frame, Reply, StepTimings
from model.voices import DEFAULT_VOICE, VOICE_PRESETS

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_VOICE",
    "PROMPT_PRESETS",
    "VOICE_PRESETS",
    "AudioInputError",
    "CheckpointError",
    "Chunk",
    "Diagnosis",
    "Frame",
    "ModelNotFoundError",
    "PersonaPlex",
    "PersonaPlexConfig",
    "PersonaPlexError",
    "Reply",
    "Session",
    "SessionSampling",
    "StepTimings",
    "UnknownPromptError",
    "UnknownVoiceError",
    "config_7b",
    "load",
    "random_model",
]
