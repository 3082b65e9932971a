"""How model/cuda/ reads the environment variables that switch its parts off: one way for all."""

from __future__ import annotations

import os


def says(env_var: str, *words: str) -> bool:
    """Whether `$env_var`, trimmed and in lower case, is one of `words` (unset: never)."""
    return os.environ.get(env_var, "").strip().lower() in words
