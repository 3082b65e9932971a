"""Command-line flags for the chat's settings: the flags, and the settings they give.

Flags override the settings file for one run (`resolve_settings`); see `settings.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model.checkpoints.voice_presets import DEFAULT_VOICE
from model.conversation.prompts import CUSTOM_PROMPT, PROMPT_PRESETS
from personaplex_tui.settings import (
    DTYPES,
    MAX_STEPS_RANGE,
    MODES,
    QUANTIZE,
    Settings,
    SettingsError,
    SettingsStore,
    default_config_path,
)
from personaplex_tui.user_transcript import add_stt_arguments, settings_changes


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the chat flags to `parser`; unset flags stay None so the file's values hold."""
    parser.add_argument(
        "--config", type=_path_flag("--config"), metavar="FILE", help="settings file to use"
    )
    parser.add_argument("--mode", choices=MODES, help="turn-based (default) or full duplex")
    parser.add_argument(
        "--voice", metavar="NAME", help=f"voice preset, e.g. {DEFAULT_VOICE} (see `ppx-tui voices`)"
    )
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument(
        "--system-prompt", metavar="NAME", help=f"prompt preset: {', '.join(PROMPT_PRESETS)}"
    )
    prompt.add_argument("--prompt-text", metavar="TEXT", help="your own system prompt")
    parser.add_argument(
        "--max-steps",
        type=_int_flag("--max-steps"),
        metavar="N",
        help=f"turn-based reply length in 80 ms frames ({MAX_STEPS_RANGE[0]}-{MAX_STEPS_RANGE[1]})",
    )
    parser.add_argument(
        "--echo-suppression",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mute the mic while the agent speaks (the fallback to echo cancellation)",
    )
    parser.add_argument(
        "--echo-cancellation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cancel the agent's echo in the mic (WebRTC AEC3; default: on)",
    )
    add_mic_processing_arguments(parser)
    parser.add_argument("--model", metavar="REPO_OR_DIR", help="Hugging Face repo or folder")
    parser.add_argument(
        "--dtype", choices=DTYPES, help="activation dtype (bfloat16 on a GPU, float32 on the CPU)"
    )
    parser.add_argument(
        "--quantize",
        type=int,
        choices=QUANTIZE,
        help="quantize a float checkpoint (nvidia/personaplex-7b-v1) to 4 or 8 bits on load",
    )
    parser.add_argument(
        "--input-device",
        metavar="X",
        help="microphone: name ('NAME #2': the second of identical cards) or index",
    )
    parser.add_argument(
        "--output-device",
        metavar="Y",
        help="speaker: name ('NAME #2': the second of identical cards) or index",
    )
    parser.add_argument(
        "--input-file",
        type=_path_flag("--input-file"),
        metavar="WAV",
        help="read the mic from a WAV",
    )
    parser.add_argument(
        "--output-file",
        type=_path_flag("--output-file"),
        metavar="WAV",
        help="write the agent to a WAV",
    )
    parser.add_argument(
        "--record", type=_path_flag("--record"), metavar="DIR", help="record sessions into DIR"
    )
    parser.add_argument(
        "--timing-log",
        type=_path_flag("--timing-log"),
        metavar="FILE.jsonl",
        help="write step timings as JSON lines",
    )
    add_stt_arguments(parser)


def add_mic_processing_arguments(parser: argparse.ArgumentParser, unset: bool = True) -> None:
    """Add --noise-suppression and --auto-gain (WebRTC's processing of the mic); unset flags stay
    None (the file's values hold), or with `unset` False are the settings' defaults."""
    for flag, field, what in (
        ("--noise-suppression", "noise_suppression", "WebRTC noise suppression"),
        ("--auto-gain", "auto_gain", "WebRTC automatic gain control"),
    ):
        default = getattr(Settings, field)
        parser.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=None if unset else default,
            help=f"{what} on the mic (default: {'on' if default else 'off'})",
        )


def _path_flag(flag: str) -> Callable[[str], Path]:
    """A path flag; an empty one is refused (Path("") would quietly mean this folder)."""

    def parse(text: str) -> Path:
        if not text:
            raise argparse.ArgumentTypeError(f"{flag} needs a path (got an empty one)")
        return Path(text)

    return parse


def _int_flag(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} needs a whole number (got {text!r})"
            ) from None

    return parse


def settings_from_args(args: argparse.Namespace, base: Settings) -> Settings:
    """`base` with every flag the user gave applied on top; raises `SettingsError`."""
    changes: dict[str, Any] = {}
    simple = ("mode", "voice", "max_steps", "echo_suppression", "model", "dtype", "quantize")
    simple += ("echo_cancellation", "noise_suppression", "auto_gain")
    simple += ("input_device", "output_device", "input_file", "output_file", "timing_log")
    for name in simple:
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    changes |= settings_changes(args)
    if getattr(args, "record", None) is not None:
        changes["record_dir"] = args.record
    if getattr(args, "system_prompt", None) is not None:
        changes["prompt"], changes["prompt_text"] = args.system_prompt, ""
    if getattr(args, "prompt_text", None) is not None:
        changes["prompt"], changes["prompt_text"] = CUSTOM_PROMPT, args.prompt_text
    if isinstance(changes.get("voice"), str):
        changes["voice"] = changes["voice"].upper()
    input_file = changes.get("input_file")
    # ("-", the standard input, is refused by the chat's own check, in its sentence)
    if input_file is not None and str(input_file) != "-" and not Path(input_file).exists():
        raise SettingsError(f"The input file {input_file} does not exist.")
    return base.replace(**changes)


def resolve_settings(args: argparse.Namespace) -> tuple[Settings, SettingsStore]:
    """The settings file (from `--config` or the default place) overridden by the flags."""
    store = SettingsStore(args.config or default_config_path())
    return settings_from_args(args, store.load()), store
