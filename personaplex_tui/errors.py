"""The app's own base for errors told in one sentence, for code that may not import `model`.

The audio package's errors derive from `AppError`; the rest of the app raises
`model.errors.PersonaPlexError`, and every place that shows a user's mistake catches both.
"""

from __future__ import annotations


class AppError(Exception):
    """Base class: the message is one sentence fit to show a user as is."""
