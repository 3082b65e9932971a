"""Errors a user can cause, each carrying one clear sentence for the message."""

from __future__ import annotations


class PersonaPlexError(Exception):
    """Base class: the message is one sentence fit to show a user as is."""


class CheckpointError(PersonaPlexError):
    """A checkpoint is missing, incomplete, corrupt or of the wrong shape."""


class ModelNotFoundError(CheckpointError):
    """The model could not be found locally nor downloaded."""


class AudioInputError(PersonaPlexError):
    """Audio given to the model is unusable (empty, wrong shape, too long)."""


class UnknownVoiceError(PersonaPlexError):
    """A voice preset name that the checkpoint does not have."""


class UnknownPromptError(PersonaPlexError):
    """A system-prompt preset name that does not exist."""


class SessionThreadError(PersonaPlexError):
    """A session used from another thread than the one that made it (MLX's streams are per thread)."""


class SettingValueError(PersonaPlexError, ValueError):
    """A session setting out of its range (sampling, seed, depformer steps, prompt tokens)."""
