"""System-prompt presets and the resolution of a preset name or free text.

How the prompt is fed: docs/driving-personaplex.md §The prompt phase.
"""

from __future__ import annotations

from model.errors import UnknownPromptError

PROMPT_PRESETS: dict[str, str] = {
    "assistant": "You are a helpful assistant. Answer questions clearly and concisely.",
    "focused": (
        "You are a helpful assistant. Listen carefully to what the user says, then respond "
        "directly to their question or request. Stay on topic. Be concise."
    ),
    "customer-service": (
        "You are a customer service agent. Answer the customer question directly and "
        "helpfully. Do not change the subject."
    ),
    "teacher": (
        "You are a wise and friendly teacher. Answer questions or provide advice in a clear "
        "and engaging way."
    ),
    "casual": "You enjoy having a good conversation.",
}
DEFAULT_PROMPT = "assistant"
CUSTOM_PROMPT = "custom"  # the prompt "name" that stands for the user's own text
SYSTEM_TAG = "<system>"


def resolve_prompt(prompt: str | None = None, text: str = "") -> str:
    """The system-prompt text: a preset's (None: the default one), or `text` when `prompt` is
    CUSTOM_PROMPT."""
    if prompt == CUSTOM_PROMPT:
        if not text.strip():
            raise UnknownPromptError("The system prompt text is empty.")
        try:  # a lone surrogate: the tokenizer failed on it, unreadably
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UnknownPromptError(
                f"The system prompt text is not valid Unicode ({exc.object[exc.start]!r} at "
                f"character {exc.start})."
            ) from None
        return text.strip()
    name = (prompt or DEFAULT_PROMPT).strip().lower()
    if name not in PROMPT_PRESETS:
        choices = ", ".join(PROMPT_PRESETS)
        raise UnknownPromptError(
            f"Unknown system prompt preset '{prompt}'; choose one of: {choices}."
        )
    return PROMPT_PRESETS[name]


def wrap_system_prompt(text: str) -> str:
    """`<system> text <system>`, unless the text is already wrapped."""
    body = text.strip()
    if (
        body.startswith(SYSTEM_TAG)
        and body.endswith(SYSTEM_TAG)
        and len(body) > 2 * len(SYSTEM_TAG)
    ):
        return body
    return f"{SYSTEM_TAG} {body} {SYSTEM_TAG}"
