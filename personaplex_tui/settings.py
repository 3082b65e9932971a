"""User settings: one validated dataclass, persisted as TOML in the user's config folder.

Command-line flags override the file for one run (`settings_flags.py`);
changes made in the app are written back with `SettingsStore.update`, field by field, so a flag
given for one run is never saved by accident.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import tomlkit
from tomlkit.exceptions import TOMLKitError

from model.checkpoints.voice_presets import VOICE_PRESETS
from model.checks import seed_value
from model.config import SamplingConfig
from model.conversation.prompts import CUSTOM_PROMPT, PROMPT_PRESETS
from model.conversation.session_settings import SESSION_KEYS, SessionSettings
from model.errors import PersonaPlexError
from personaplex_tui import APP_NAME
from personaplex_tui.user_transcript import settings_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_ENV = "PPX_TUI_CONFIG"

Mode = Literal["turn", "duplex"]
MODES: tuple[str, ...] = ("turn", "duplex")
MODE_LABELS: dict[str, str] = {"turn": "turn-based", "duplex": "duplex"}

MAX_STEPS_RANGE = (50, 500)  # a turn of the chat: 4-40 s (`respond` takes up to a context)
TEMPERATURE_RANGE = (0.0, 2.0)
AUDIO_TOP_K_RANGE = (1, 2048)
TEXT_TOP_K_RANGE = (1, 32000)
PROMPT_TEXT_MAX_CHARS = 2000

# Settings kept in the TOML file; the others (files to read and write) are per run.
DTYPES = ("float32", "float16", "bfloat16")
QUANTIZE = (4, 8)

PERSISTED: tuple[str, ...] = (
    "voice",
    "prompt",
    "prompt_text",
    "mode",
    "max_steps",
    "echo_suppression",
    "echo_cancellation",
    "noise_suppression",
    "auto_gain",
    "audio_temperature",
    "audio_top_k",
    "text_temperature",
    "text_top_k",
    "input_device",
    "output_device",
    "model",
    "dtype",
    "quantize",
    "user_transcript",
    "stt_model",
    "stt_quantize",
)


class SettingsError(PersonaPlexError):
    """A setting has a bad value; the message says which and what is allowed."""


@dataclass(frozen=True)
class Settings:
    """Everything the user can choose; validated on construction (raises `SettingsError`).

    The session's voice, prompt and sampling are one `SessionSettings`, passed on unchanged;
    the file and the flags name its fields directly (`flat`, `replace`)."""

    session: SessionSettings = SessionSettings()
    mode: Mode = "turn"
    max_steps: int = 75  # turn-based reply length in frames (80 ms each)
    echo_suppression: bool = False
    # WebRTC's audio processing on the mic (audio/aec.py): the echo canceller, on so that duplex
    # works on a laptop's speakers; noise suppression, on as in the reference clients (it also
    # removes the canceller's residue in pauses); automatic gain, off: it raises room noise
    # and echo residue between words, and the model hears a well-set mic as it is.
    echo_cancellation: bool = True
    noise_suppression: bool = True
    auto_gain: bool = False
    input_device: str | None = None  # None: the system default
    output_device: str | None = None
    model: str | None = None  # Hugging Face repo id or local folder; None: the default model
    dtype: str | None = None  # activation dtype; None: bfloat16 on a GPU, float32 on the CPU
    quantize: int | None = None  # quantize a float checkpoint to 4 or 8 bits on load
    user_transcript: bool = True  # transcribe the user live (personaplex_tui.user_transcript)
    stt_model: str | None = None  # its STT model; None: kyutai/stt-1b-en_fr
    stt_quantize: int | None = None  # STT bits: 4, 8, or 16 (floats); None: 8 on CUDA, else 16
    # Per run only (flags), never written to the file.
    input_file: Path | None = None
    output_file: Path | None = None
    record_dir: Path | None = None
    timing_log: Path | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise SettingsError(problems[0])

    @property
    def prompt_label(self) -> str:
        """Short name for the status bar: the preset's name or the custom text's start."""
        if self.session.prompt != CUSTOM_PROMPT:
            return self.session.prompt
        text = self.session.prompt_text.strip()
        return f"“{text[:24]}…”" if len(text) > 24 else f"“{text}”"

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied, validated; the session's fields may be named directly
        (`voice=`, `audio_temperature=`, ...)."""
        session = {k: changes.pop(k) for k in list(changes) if k in SESSION_KEYS}
        if isinstance(session.get("prompt_text"), str):
            session["prompt_text"] = one_line(session["prompt_text"])
        problems = _value_problems(session)  # before SamplingConfig checks them in its words
        if problems:
            raise SettingsError(problems[0])
        if session:
            changes["session"] = changes.get("session", self.session).replace(**session)
        return dataclasses.replace(self, **changes)

    def flat(self) -> dict[str, Any]:
        """Every setting under the name the file and `replace` give it."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "session"}
        return self.session.flat() | values

    def persisted(self) -> dict[str, Any]:
        """The fields kept in the settings file (None values left out)."""
        values = self.flat()
        return {k: values[k] for k in PERSISTED if values[k] is not None}

    def changed_fields(self, other: Settings) -> dict[str, Any]:
        """Settings (by `flat` name) whose value in `other` differs: {name: other's value}."""
        mine, theirs = self.flat(), other.flat()
        return {k: v for k, v in theirs.items() if mine[k] != v}


def _in_range(name: str, value: float, bounds: tuple[float, float]) -> str | None:
    low, high = bounds
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a number between {low} and {high} (got {value})."
    if not low <= value <= high:
        return f"{name} must be between {low} and {high} (got {value})."
    return None


# The numbers a user sets, each with its label, range and kind (the app's ranges are narrower
# than the library's SamplingConfig checks, and said in the app's words)
_NUMBERS = {
    "max_steps": ("Max steps", MAX_STEPS_RANGE, int),
    "audio_temperature": ("Audio temperature", TEMPERATURE_RANGE, float),
    "audio_top_k": ("Audio top-k", AUDIO_TOP_K_RANGE, int),
    "text_temperature": ("Text temperature", TEMPERATURE_RANGE, float),
    "text_top_k": ("Text top-k", TEXT_TOP_K_RANGE, int),
}


def one_line(text: str) -> str:
    """A custom system prompt as the app keeps it: one paragraph, its line breaks and tabs
    (from a flag, the settings file or a paste) each one space, so that the status bar and the
    settings' one-line box show it as it is."""
    return re.sub(r"[ \t]*[\r\n\t]+[ \t]*", " ", text)


_TEXTS = {"voice": "The voice", "prompt": "The system prompt", "prompt_text": "The prompt text"}


def _value_problems(values: dict[str, Any]) -> list[str]:
    """A sentence for each of `values` (by `_NUMBERS` or `_TEXTS` name, or the seed) of the wrong
    kind or out of range."""
    problems = []
    for name, value in values.items():
        if name in _TEXTS and not isinstance(value, str):
            problems.append(f"{_TEXTS[name]} must be text (got {value!r}).")
        if name == "seed" and value is not None:
            try:
                seed_value(value)  # the library's own check and sentence (model/checks.py)
            except PersonaPlexError as error:
                problems.append(str(error))
        if name not in _NUMBERS:
            continue
        label, bounds, kind = _NUMBERS[name]
        ok_type = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
        if isinstance(value, bool) or not ok_type:
            wanted = "a number" if kind is float else "a whole number"
            problems.append(f"{label} must be {wanted} (got {value!r}).")
            continue
        problem = _in_range(label, value, bounds)
        if problem:
            problems.append(problem)
    return problems


def _problems(s: Settings) -> list[str]:
    """Every problem with `s`, each one sentence (empty when valid)."""
    problems: list[str] = []
    session, sampling = s.session, s.session.sampling
    if session.voice not in VOICE_PRESETS:
        names = ", ".join(VOICE_PRESETS)
        problems.append(f"Unknown voice '{session.voice}'; choose one of {names}.")
    prompt, text = session.prompt, session.prompt_text
    if prompt != CUSTOM_PROMPT and prompt not in PROMPT_PRESETS:
        names = ", ".join(PROMPT_PRESETS)
        problems.append(
            f"Unknown system prompt '{prompt}'; choose one of {names}, or give your own text."
        )
    if prompt == CUSTOM_PROMPT and not text.strip():
        problems.append("The custom system prompt is empty; type a prompt or pick a preset.")
    if len(text) > PROMPT_TEXT_MAX_CHARS:
        problems.append(
            f"The system prompt is too long ({len(text)} characters; "
            f"at most {PROMPT_TEXT_MAX_CHARS})."
        )
    if s.mode not in MODES:
        problems.append(f"Unknown mode '{s.mode}'; choose 'turn' or 'duplex'.")
    problems += _value_problems({"max_steps": s.max_steps, **dataclasses.asdict(sampling)})
    if not isinstance(s.echo_suppression, bool):
        problems.append(f"Echo suppression must be true or false (got {s.echo_suppression!r}).")
    for label, flag in (
        ("Echo cancellation", s.echo_cancellation),
        ("Noise suppression", s.noise_suppression),
        ("Automatic gain", s.auto_gain),
    ):
        if not isinstance(flag, bool):
            problems.append(f"{label} must be true or false (got {flag!r}).")
    for label, value in (
        ("Input device", s.input_device),
        ("Output device", s.output_device),
        ("Model", s.model),
    ):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{label} must be a non-empty name (got {value!r}).")
    if s.dtype is not None and s.dtype not in DTYPES:
        problems.append(f"Unknown dtype '{s.dtype}'; choose one of {', '.join(DTYPES)}.")
    if s.quantize is not None and (isinstance(s.quantize, bool) or s.quantize not in QUANTIZE):
        problems.append(f"Quantize must be 4 or 8 bits (got {s.quantize!r}).")
    stt = settings_problem(s.user_transcript, s.stt_model, s.stt_quantize)
    if stt:
        problems.append(stt)
    return problems


# --- the settings file -----------------------------------------------------------------------


def default_config_path() -> Path:
    """`$PPX_TUI_CONFIG`, else `settings.toml` in the user's config folder."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return platformdirs.user_config_path(APP_NAME) / "settings.toml"


HEADER = "ppx-tui settings (written by the app; command-line flags override them)"


def to_toml(settings: Settings, existing: str = "", only: Iterable[str] | None = None) -> str:
    """The settings file's text: `existing` (the file as it is) with the persisted fields set,
    keeping the user's comments, unknown keys and tables; a field now None is removed. `only`:
    set just those fields and the ones the file has (the others keep following the defaults)."""
    try:
        doc = tomlkit.parse(existing) if existing.strip() else None
    except TOMLKitError:
        doc = None  # a broken file is replaced rather than kept forever
    if doc is None:
        doc = tomlkit.document()
        doc.add(tomlkit.comment(HEADER))
    values = settings.persisted()
    chosen = None if only is None else set(only)
    for key in PERSISTED:
        if chosen is not None and key not in chosen and key not in doc:
            continue  # never set in the file: a later version's default still applies
        if key not in values:
            if key in doc:
                del doc[key]
        elif key not in doc or doc[key] != values[key]:
            doc[key] = values[key]  # an unchanged line keeps its comment and layout
    return tomlkit.dumps(doc)


def unknown_keys_warning(path: Path, data: dict[str, Any]) -> str | None:
    """One line about the keys (and tables) of the file that no setting reads, if any."""
    unknown = [k for k in data if k not in PERSISTED]
    if not unknown:
        return None
    import difflib

    named = []
    for key in unknown:
        near = difflib.get_close_matches(key, PERSISTED, n=1)
        named.append(f"{key} (did you mean {near[0]}?)" if near else key)
    return (
        f"{path} has settings this version does not know: {', '.join(named)}; "
        "they are kept in the file but ignored."
    )


# Every setting's type by its flat name (the file's key).
_KINDS = {f.name: f.type for c in (Settings, SessionSettings, SamplingConfig) for f in fields(c)}


def _coerce(name: str, value: Any, where: Path) -> Any:
    """A TOML value checked against the field's type, with a message naming the file."""
    kind = str(_KINDS[name])
    bad = None
    if kind == "bool" and not isinstance(value, bool):
        bad = "true or false"
    elif kind.startswith("int") and (isinstance(value, bool) or not isinstance(value, int)):
        bad = "a whole number"
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad = "a number"
        else:
            value = float(value)
    elif not kind.startswith(("bool", "int", "float")) and not isinstance(value, str):
        bad = "text in quotes"
    if bad:
        raise SettingsError(f"In {where}, {name} must be {bad} (got {value!r}).")
    return value


def load_settings(path: Path, warn: Callable[[str], None] | None = None) -> Settings:
    """Settings from the TOML file at `path`; the defaults when it does not exist. Keys no
    setting reads are ignored, and said in one line through `warn`."""
    if not path.exists():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SettingsError(f"The settings file {path} is not valid TOML ({err}).") from None
    except OSError as err:
        raise SettingsError(f"Cannot read the settings file {path} ({err.strerror}).") from None
    message = unknown_keys_warning(path, data)
    if message and warn is not None:
        warn(message)
    values = {k: _coerce(k, v, path) for k, v in data.items() if k in PERSISTED}
    if isinstance(values.get("voice"), str):
        values["voice"] = values["voice"].strip().upper()  # as --voice takes it: natf2 is NATF2
    try:
        return Settings().replace(**values)
    except SettingsError as err:
        raise SettingsError(f"In {path}: {err}") from None


def save_settings(settings: Settings, path: Path, only: Iterable[str] | None = None) -> None:
    """Write the persisted fields (`only`: those, and the file's own; see `to_toml`) into
    `path`, keeping everything else the file holds (atomically: a temporary file, then a rename,
    onto the file a symlink points at, with its permissions). Raises SettingsError naming
    `path`."""
    try:
        existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        existing = ""
    if path.is_file() and not path.stat().st_mode & 0o222:  # made read-only: respected
        raise SettingsError(
            f"The settings file {path} is read-only, so it was not changed; "
            "the change holds for this run only."
        )
    target = path.resolve() if path.is_symlink() else path  # (dotfiles are often links)
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(to_toml(settings, existing, only), encoding="utf-8")
        if target.is_file():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        tmp.replace(target)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = err.strerror or str(err)
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
        raise SettingsError(
            f"The settings file {path} could not be saved ({reason}); "
            "the change holds for this run only."
        ) from None


class SettingsStore:
    """The settings file; `update` writes only the fields the user changed in the app.

    `warnings` holds what the first load had to say (unknown keys), once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warnings: list[str] = []
        self._loaded = False

    def load(self) -> Settings:
        first, self._loaded = not self._loaded, True
        return load_settings(self.path, self.warnings.append if first else None)

    def update(self, **changes: Any) -> Settings:
        """Apply `changes` (persisted fields only) to the file's settings and save them."""
        kept = {k: v for k, v in changes.items() if k in PERSISTED}
        try:
            current = self.load()
        except SettingsError:
            current = Settings()  # a broken file is replaced rather than kept forever
        updated = current.replace(**kept)
        save_settings(updated, self.path, only=kept)
        return updated
