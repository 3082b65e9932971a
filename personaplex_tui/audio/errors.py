"""Errors of audio files and sound devices, each carrying one sentence for the user."""

from __future__ import annotations

from personaplex_tui.errors import AppError


class AudioFileError(AppError):
    """An audio file is missing, empty, corrupt, truncated or not audio at all."""


class AudioDeviceError(AppError):
    """A sound device is missing, busy, or PortAudio itself is unavailable."""


class NoDeviceError(AudioDeviceError):
    """PortAudio lists no device of the direction asked for (no sound card, no sound server)."""


class VadUnavailableError(AppError):
    """The voice activity detector's model or runtime could not be loaded."""


class CancellerUnavailableError(AppError):
    """The echo canceller's library is missing or cannot be loaded on this platform."""
