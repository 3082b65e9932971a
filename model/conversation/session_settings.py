"""What a conversation starts from: voice, system prompt, sampling and seed, defined once.

The settings file, the flags, the engine and `PersonaPlex.session` pass one `SessionSettings`
along unchanged; any change to it needs a new session (the prompt phase depends on all of it).
No MLX: the app's settings import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from model.checkpoints.voice_presets import DEFAULT_VOICE
from model.checks import seed_value
from model.config import SamplingConfig
from model.conversation.prompts import DEFAULT_PROMPT, resolve_prompt
from model.errors import SettingValueError


@dataclass(frozen=True)
class SessionSettings:
    """A session's voice, system prompt, sampling and seed."""

    voice: str | None = DEFAULT_VOICE  # a voice preset's name; None: no voice prompt
    prompt: str = DEFAULT_PROMPT  # a key of PROMPT_PRESETS, or "custom" (CUSTOM_PROMPT)
    prompt_text: str = ""  # the custom system prompt (read only when prompt is "custom")
    sampling: SamplingConfig = SamplingConfig()
    seed: int | None = None  # None: a random one per session

    def __post_init__(self) -> None:
        """Each value of the right kind (one sentence otherwise): settings given by position or
        from outside are checked here, where they enter, not deep inside a session."""
        if self.voice is not None and not isinstance(self.voice, str):
            raise SettingValueError(
                f"The voice must be a voice preset's name or None, not {self.voice!r}."
            )
        for name in ("prompt", "prompt_text"):
            if not isinstance(getattr(self, name), str):
                raise SettingValueError(
                    f"The setting {name} must be text, not {getattr(self, name)!r}."
                )
        if not isinstance(self.sampling, SamplingConfig):
            raise SettingValueError(
                f"The sampling must be a SamplingConfig, not {type(self.sampling).__name__}."
            )
        if self.seed is not None:
            object.__setattr__(self, "seed", seed_value(self.seed))

    @property
    def system_prompt(self) -> str:
        """The system prompt's text; raises UnknownPromptError for an unknown or empty one."""
        return resolve_prompt(self.prompt, self.prompt_text)

    def flat(self) -> dict[str, Any]:
        """Every setting under its own name (the sampling's too), as the settings file has them."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sampling"}
        return values | dataclasses.asdict(self.sampling)

    def replace(self, **changes: Any) -> SessionSettings:
        """A copy with `changes` applied; the sampling's fields may be named directly."""
        unknown = sorted(set(changes) - SESSION_KEYS - {"sampling"})
        if unknown:
            raise SettingValueError(
                f"There is no setting {unknown[0]!r}; the settings are "
                f"{', '.join(sorted(SESSION_KEYS))} and sampling."
            )
        sampling = {k: changes.pop(k) for k in list(changes) if k in SAMPLING_KEYS}
        if sampling:
            changes["sampling"] = dataclasses.replace(
                changes.get("sampling", self.sampling), **sampling
            )
        return dataclasses.replace(self, **changes)


SAMPLING_KEYS: frozenset[str] = frozenset(f.name for f in fields(SamplingConfig))
# The names of `flat()`: the settings that take effect only with a new session.
SESSION_KEYS: frozenset[str] = frozenset(SessionSettings().flat())
