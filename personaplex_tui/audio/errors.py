"""Errors of audio files and sound devices, each carrying one sentence for the user."""

from __future__ import annotations

from model.errors import AudioInputError, PersonaPlexError


class AudioFileError(AudioInputError):
    """An audio file is missing, empty, corrupt, truncated or not audio at all."""


class AudioDeviceError(PersonaPlexError):
    """A sound device is missing, busy, or PortAudio itself is unavailable."""


class VadUnavailableError(PersonaPlexError):
    """The voice activity detector's model or runtime could not be loaded."""


class CancellerUnavailableError(PersonaPlexError):
    """The echo canceller's library is missing or cannot be loaded on this platform."""
