"""The settings screen: voice, prompt, mode, reply length, the mic's echo and noise processing,
sampling, devices, model and the user's transcript.

Dismissed with the new `Settings` (validated) on save, or None on cancel; what needs a new
session is applied by the app on the next reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static, Switch

from model.conversation.prompts import PROMPT_PRESETS
from personaplex_tui.settings import (
    CUSTOM_PROMPT,
    MAX_STEPS_RANGE,
    MODE_LABELS,
    Settings,
    SettingsError,
    one_line,
)

DEFAULT_DEVICE = ""  # the Select value that stands for "the system default"


class PromptInput(Input):
    """The custom prompt's box: a pasted text of several lines is taken whole, its line breaks
    as spaces (Textual's Input keeps only the first line of a paste, silently)."""

    def _on_paste(self, event: events.Paste) -> None:
        if event.text:
            text = one_line(event.text)
            if self.selection.is_empty:
                self.insert_text_at_cursor(text)
            else:
                self.replace(text, *self.selection)
        event.prevent_default()  # not Input's own handler too (its first line again)
        event.stop()


def _row(label: str, *controls: Widget, hint: str = "") -> Horizontal:
    parts: list[Widget] = [Label(label, classes="field-label"), *controls]
    if hint:
        parts.append(Label(hint, classes="field-hint"))
    return Horizontal(*parts, classes="field")


def _device_options(choices: Sequence[str], current: str | None) -> list[tuple[str, str]]:
    """The Select's (label, value) pairs: each device as the settings store it (a name, or
    'name #1', 'name #2' for identical cards), and the stored one where it is not among them: a
    plain name that identical cards now share (an older file's) says so, else not found."""
    options = [("system default", DEFAULT_DEVICE)] + [
        (f"device {c}" if c.isdigit() else c, c) for c in choices
    ]
    if current and current not in choices:
        place = f"{current} #"
        twins = sum(c.startswith(place) and c[len(place) :].isdigit() for c in choices)
        why = f"{twins} devices bear this name: pick one" if twins > 1 else "not found"
        options.append((f"{current} ({why})", current))
    return options


def _echo_hint(on: bool) -> str:
    return "on: the mic is muted while the agent speaks" if on else "off (best with headphones)"


def _cancel_hint(on: bool) -> str:
    return f"{'on: speakers are fine' if on else 'off: use headphones'} · {RESTARTS_AUDIO}"


# The mic's processing switches (issue 17): a running conversation's audio restarts on them.
PROCESSING_SWITCHES = (
    ("Echo cancellation", "echo-cancellation", "echo_cancellation"),
    ("Noise suppression", "noise-suppression", "noise_suppression"),
    ("Auto gain", "auto-gain", "auto_gain"),
)
RESTARTS_AUDIO = "restarts the audio"


def _number(text: str, label: str, kind: type) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        wanted = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{label} must be {wanted} (got {text.strip()!r}).") from None


class SettingsScreen(ModalScreen[Settings | None]):
    """A form over a `Settings`; nothing changes until Save."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(
        self,
        settings: Settings,
        voices: Sequence[str],
        input_devices: Sequence[str] = (),
        output_devices: Sequence[str] = (),
        *,
        devices_note: str = "",
        cursor_blink: bool = True,
    ) -> None:
        super().__init__(id="settings")
        self.settings = settings
        voice = settings.session.voice
        self._voices = list(voices) if voice in voices else [voice, *voices]
        self._inputs = list(input_devices)
        self._outputs = list(output_devices)
        self._devices_note = devices_note
        self._blink = cursor_blink
        self._custom_text = settings.session.prompt_text

    def _input(self, value: str, id: str, **kwargs: Any) -> Input:
        box = (PromptInput if id == "prompt-text" else Input)(value, id=id, compact=True, **kwargs)
        box.cursor_blink = self._blink
        return box

    def compose(self) -> ComposeResult:
        s, session, sampling = self.settings, self.settings.session, self.settings.session.sampling
        prompt_options = [(name, name) for name in PROMPT_PRESETS] + [("custom", CUSTOM_PROMPT)]
        with Vertical(id="settings-dialog") as dialog:
            dialog.border_title = "settings"
            dialog.border_subtitle = "ctrl+s save · esc cancel"
            with VerticalScroll(id="settings-form"):
                yield _row("Voice", self._select(self._voices, session.voice, "voice"))
                yield _row(
                    "System prompt", self._select_pairs(prompt_options, session.prompt, "prompt")
                )
                yield _row(
                    "", self._input(session.system_prompt, "prompt-text", placeholder="your prompt")
                )
                modes = [(label, mode) for mode, label in MODE_LABELS.items()]
                yield _row("Mode", self._select_pairs(modes, s.mode, "mode"))
                low, high = MAX_STEPS_RANGE
                yield _row(
                    "Max steps",
                    self._input(str(s.max_steps), "max-steps", type="integer"),
                    hint=f"{low}-{high} × 80 ms, turn-based",
                )
                yield _row(
                    "Echo suppression",
                    Switch(s.echo_suppression, id="echo"),
                    hint=_echo_hint(s.echo_suppression),
                )
                for label, id, name in PROCESSING_SWITCHES:
                    on = bool(getattr(s, name))
                    hint = _cancel_hint(on) if name == "echo_cancellation" else RESTARTS_AUDIO
                    yield _row(label, Switch(on, id=id, classes="toggle"), hint=hint)
                yield _row(
                    "Audio temp · top-k",
                    self._input(
                        str(sampling.audio_temperature), "audio-temperature", type="number"
                    ),
                    self._input(str(sampling.audio_top_k), "audio-top-k", type="integer"),
                )
                yield _row(
                    "Text temp · top-k",
                    self._input(str(sampling.text_temperature), "text-temperature", type="number"),
                    self._input(str(sampling.text_top_k), "text-top-k", type="integer"),
                )
                inputs = _device_options(self._inputs, s.input_device)
                outputs = _device_options(self._outputs, s.output_device)
                yield _row(
                    "Input device",
                    self._select_pairs(inputs, s.input_device or DEFAULT_DEVICE, "input-device"),
                )
                yield _row(
                    "Output device",
                    self._select_pairs(outputs, s.output_device or DEFAULT_DEVICE, "output-device"),
                )
                yield _row(
                    "Model",
                    self._input(s.model or "", "model", placeholder="default (Hugging Face)"),
                    hint="on restart",
                )
                yield _row(
                    "Your transcript",
                    Switch(s.user_transcript, id="user-transcript", classes="toggle"),
                    hint="your words live (STT) · on restart",
                )
            note = "Voice, prompt and sampling apply on the next reset."
            if self._devices_note:
                note += f" {self._devices_note}"
            with Vertical(id="settings-footer"):
                yield Static(note, id="settings-note")
                yield Static("", id="settings-error")
                with Horizontal(id="settings-buttons"):
                    yield Button("Save", id="save", variant="primary", compact=True)
                    yield Button("Cancel", id="cancel", compact=True)

    def _select(self, values: Sequence[str], value: str, id: str) -> Select[str]:
        return self._select_pairs([(v, v) for v in values], value, id)

    def _select_pairs(self, options: list[tuple[str, str]], value: str, id: str) -> Select[str]:
        return Select(options, value=value, allow_blank=False, compact=True, id=id)

    def on_mount(self) -> None:
        self._sync_prompt_text(self.settings.session.prompt)
        self.query_one("#voice", Select).focus()

    def _sync_prompt_text(self, prompt: str) -> None:
        box = self.query_one("#prompt-text", Input)
        if prompt == CUSTOM_PROMPT:
            box.disabled = False
            box.value = self._custom_text or box.value
        else:
            box.disabled = True
            box.value = PROMPT_PRESETS[prompt]

    @on(Switch.Changed, "#echo")
    def _echo_changed(self, event: Switch.Changed) -> None:
        hint = event.switch.parent.query_one(".field-hint", Label)  # type: ignore[union-attr]
        hint.update(_echo_hint(event.value))

    @on(Switch.Changed, "#echo-cancellation")
    def _cancel_changed(self, event: Switch.Changed) -> None:
        hint = event.switch.parent.query_one(".field-hint", Label)  # type: ignore[union-attr]
        hint.update(_cancel_hint(event.value))

    @on(Select.Changed, "#prompt")
    def _prompt_changed(self, event: Select.Changed) -> None:
        box = self.query_one("#prompt-text", Input)
        if not box.disabled:
            self._custom_text = box.value
        self._sync_prompt_text(str(event.value))

    def collect(self) -> Settings:
        """The form's values as validated `Settings`; raises `SettingsError`."""

        def value(id: str) -> str:
            return str(self.query_one(f"#{id}", Input).value)

        def choice(id: str) -> str:
            return str(self.query_one(f"#{id}", Select).value)

        def switch(id: str) -> bool:
            return bool(self.query_one(f"#{id}", Switch).value)

        prompt = choice("prompt")
        return self.settings.replace(
            voice=choice("voice"),
            prompt=prompt,
            prompt_text=value("prompt-text") if prompt == CUSTOM_PROMPT else "",
            mode=choice("mode"),
            max_steps=_number(value("max-steps"), "Max steps", int),
            echo_suppression=self.query_one("#echo", Switch).value,
            audio_temperature=_number(value("audio-temperature"), "Audio temperature", float),
            audio_top_k=_number(value("audio-top-k"), "Audio top-k", int),
            text_temperature=_number(value("text-temperature"), "Text temperature", float),
            text_top_k=_number(value("text-top-k"), "Text top-k", int),
            input_device=choice("input-device") or None,
            output_device=choice("output-device") or None,
            model=value("model").strip() or None,
            **{name: switch(id) for _, id, name in PROCESSING_SWITCHES},
            user_transcript=switch("user-transcript"),
        )

    def action_save(self) -> None:
        try:
            new = self.collect()
        except SettingsError as err:
            self.query_one("#settings-error", Static).update(str(err))
            return
        self.dismiss(new)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()
