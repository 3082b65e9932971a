"""A checkpoint's voices, read from its folder before any weight loads: what the app offers, and
the one sentence for a voice the checkpoint lacks."""

from __future__ import annotations

import os
from pathlib import Path

from model.checkpoints.voice_presets import canonical_voice
from model.errors import UnknownVoiceError

# The files that hold a checkpoint's voices (both layouts): enough to list them.
VOICE_FILE_PATTERNS = ("voices/*.safetensors", "voices.tgz")
MODEL_FLAG = "--model"  # the option naming the checkpoint, for the loader's messages


def local_checkpoint(spec: str | os.PathLike[str] | None) -> Path | None:
    """The folder `spec` names when it is one on disk now; None for a repo id (its voices are
    known once it is fetched)."""
    if spec is None:
        return None
    folder = Path(spec).expanduser()
    return folder.resolve() if folder.is_dir() else None


def checkpoint_voices(folder: Path) -> tuple[str, ...]:
    """The voices a checkpoint folder has (presets first, in their order); no weight is read."""
    from model.checkpoints.voices import available_voices

    return available_voices(folder)


def require_voice(folder: Path, voice: str) -> str:
    """The canonical name of `voice` in the checkpoint at `folder`, or `UnknownVoiceError` with
    one sentence naming the voices it has."""
    voices = checkpoint_voices(folder)
    if not voices:
        from model.checkpoints.config_io import checkpoint_config

        # a folder that is no checkpoint, or lacks its weights, says so first (CheckpointError)
        checkpoint_config(folder)
        raise UnknownVoiceError(
            f"The checkpoint in {folder} has no voice files (voices/*.safetensors or voices.tgz), "
            f"so voice '{voice}' cannot be used."
        )
    try:
        return canonical_voice(voice, voices)
    except UnknownVoiceError:
        raise UnknownVoiceError(
            f"Unknown voice '{voice}'; choose one of: {', '.join(voices)} "
            f"(the voices of the checkpoint in {folder})."
        ) from None


def check_voice(spec: str | os.PathLike[str] | None, voice: str) -> None:
    """Before anything loads: a folder on disk must have `voice`; for a repo id (`None`: the
    default one) it must be a preset name, and `fetch_with_voice` checks its files."""
    folder = local_checkpoint(spec)
    if folder is not None:
        require_voice(folder, voice)
    else:
        canonical_voice(voice)


def fetch_with_voice(spec: str | os.PathLike[str] | None, voice: str) -> Path:
    """The checkpoint's folder (a repo id is fetched), once it is known to have `voice`; no
    weight is read."""
    from model.checkpoints.hub import resolve_model

    folder = resolve_model(spec, flag=MODEL_FLAG)
    require_voice(folder, voice)
    return folder
