"""The 18 voice preset names and their categories (no MLX: safe to import anywhere)."""

from __future__ import annotations

from model.errors import UnknownVoiceError

VOICE_CATEGORIES: dict[str, str] = {
    "NATF": "natural female",
    "NATM": "natural male",
    "VARF": "varied female",
    "VARM": "varied male",
}
VOICE_PRESETS: tuple[str, ...] = (
    *(f"NATF{i}" for i in range(4)),
    *(f"NATM{i}" for i in range(4)),
    *(f"VARF{i}" for i in range(5)),
    *(f"VARM{i}" for i in range(5)),
)
DEFAULT_VOICE = "NATF2"


def voice_category(name: str) -> str:
    """'natural female', 'varied male', ... for a preset name."""
    return VOICE_CATEGORIES.get(name[:4].upper(), "custom")


def canonical_voice(name: str, available: tuple[str, ...] = VOICE_PRESETS) -> str:
    """The preset's canonical spelling, or UnknownVoiceError naming the choices."""
    if not isinstance(name, str):
        raise UnknownVoiceError(f"A voice is named by text (e.g. {available[0]}), not {name!r}.")
    wanted = name.strip().upper()
    for voice in available:
        if voice.upper() == wanted:
            return voice
    raise UnknownVoiceError(f"Unknown voice '{name}'; choose one of: {', '.join(available)}.")
