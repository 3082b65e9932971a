"""What the conversation controllers need to know: mode, the session's settings, devices, files."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from model.conversation.session_settings import SessionSettings
from personaplex_tui.settings import MODES, Mode, Settings, SettingsError

__all__ = ["AUDIO_FIELDS", "MODES", "ControllerConfig", "Mode", "SettingsError"]

# Fields that choose the microphone and the speaker.
AUDIO_FIELDS = frozenset({"input_device", "output_device", "input_file", "output_file"})
# Fields that change the mic's processing (a running conversation restarts on them).
PROCESSING_FIELDS = frozenset({"echo_cancellation", "noise_suppression", "auto_gain"})


@dataclass(frozen=True)
class ControllerConfig:
    """Everything the conversation controllers read; the app's `Settings`, or any object with
    these attribute names, can be turned into one with `ControllerConfig.from_settings`."""

    mode: Mode = "turn"
    session: SessionSettings = SessionSettings()  # takes effect with a new session
    max_steps: int = 75  # turn-based reply length in frames (75 = 6 s)
    echo_suppression: bool = False
    # The app's default is on (settings.py); off here so that a bare config processes nothing.
    echo_cancellation: bool = False
    noise_suppression: bool = True
    auto_gain: bool = False
    input_device: str | int | None = None  # None = the system default
    output_device: str | int | None = None
    input_file: str | Path | None = None  # a WAV played as the microphone
    output_file: str | Path | None = None  # a WAV the speaker's audio is written to
    record_dir: str | Path | None = None  # record every session continuously under this folder
    save_dir: str | Path | None = (
        None  # where `save_recording` copies to (default ~/ppx-tui/recordings)
    )
    timing_log: str | Path | None = None  # append every step's timings here as JSON lines

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SettingsError(f"The mode must be 'turn' or 'duplex', not '{self.mode}'.")
        if int(self.max_steps) < 1:
            raise SettingsError(
                f"The reply length must be at least one frame, not {self.max_steps}."
            )

    @classmethod
    def from_settings(
        cls, settings: object, base: ControllerConfig | None = None
    ) -> ControllerConfig:
        """A config from the app's `Settings` (every field it has), or from any object: the
        fields it has as attributes; the rest from `base`."""
        base = base if base is not None else cls()
        if isinstance(settings, ControllerConfig):
            return settings
        if isinstance(settings, Settings):
            return replace(base, **_from_app_settings(settings))
        values = {
            f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)
        }
        return replace(base, **values)

    def changed(self, other: ControllerConfig) -> frozenset[str]:
        """The names of the fields whose values differ in `other`."""
        return frozenset(
            f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)
        )

    def save_root(self) -> Path:
        """Where saved recordings go: `save_dir`, else `record_dir`, else ~/ppx-tui/recordings."""
        for folder in (self.save_dir, self.record_dir):
            if folder:
                return Path(folder).expanduser()
        return Path.home() / "ppx-tui" / "recordings"


def _from_app_settings(s: Settings) -> dict[str, Any]:
    """ControllerConfig's fields from the app's settings (those it has)."""
    return {
        "mode": s.mode,
        "session": s.session,
        "max_steps": s.max_steps,
        "echo_suppression": s.echo_suppression,
        "echo_cancellation": s.echo_cancellation,
        "noise_suppression": s.noise_suppression,
        "auto_gain": s.auto_gain,
        "input_device": s.input_device,
        "output_device": s.output_device,
        "input_file": s.input_file,
        "output_file": s.output_file,
        "record_dir": s.record_dir,
        "timing_log": s.timing_log,
    }
