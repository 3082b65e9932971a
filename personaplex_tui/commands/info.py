"""`ppx-tui voices`, `ppx-tui prompts` and `ppx-tui devices`: what can be chosen."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from model.checkpoints.voice_presets import DEFAULT_VOICE, VOICE_PRESETS, voice_category
from model.conversation.prompts import PROMPT_PRESETS
from model.errors import CheckpointError
from personaplex_tui.commands.common import model_name, print_out


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("voices", help="list the 18 voice presets, or those a checkpoint has")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--model",
        metavar="REPO_OR_DIR",
        type=model_name,
        default=None,
        help="list only the voices this checkpoint folder or Hugging Face repo has",
    )
    p.set_defaults(handler=run_voices)
    p = sub.add_parser("prompts", help="list the system-prompt presets with their texts")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run_prompts)
    p = sub.add_parser(
        "devices", help="list sound devices (defaults marked) and the name each is chosen by"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run_devices)


def _checkpoint_voices(spec: str) -> tuple[str, ...]:
    """The voices of a checkpoint folder, or of a repo (only its voice files and config.json are
    fetched)."""
    from model.checkpoints.hub import resolve_model
    from model.checkpoints.layout import CONFIG_FILE
    from personaplex_tui.checkpoint_voices import (
        MODEL_FLAG,
        VOICE_FILE_PATTERNS,
        checkpoint_voices,
        local_checkpoint,
    )
    from personaplex_tui.stop_signals import POLICY

    local = local_checkpoint(spec)
    with POLICY.abrupt():  # (the hub's download threads: a Ctrl+C ends them with the process)
        folder = local or resolve_model(
            spec, allow_patterns=(*VOICE_FILE_PATTERNS, CONFIG_FILE), flag=MODEL_FLAG
        )
    voices = checkpoint_voices(folder)
    if not voices:
        _say_what_is_no_checkpoint(spec, folder, local is not None)
        raise CheckpointError(
            f"The checkpoint in {folder} has no voice files (voices/*.safetensors or voices.tgz)."
        )
    return voices


def _say_what_is_no_checkpoint(spec: str, folder: Path, local: bool) -> None:
    """A folder (or a repo) without voice files that is no checkpoint, or lacks its weights, is
    said to be so (CheckpointError), as the chat's loader says it. Of a repo only the voices and
    config.json were fetched: its list of files tells which weights it has (not fetched for
    this); when the hub cannot give the list, nothing is said here."""
    from model.checkpoints.config_io import checkpoint_config

    if local:
        checkpoint_config(folder)
        return
    from model.checkpoints.hub import repo_file_names
    from personaplex_tui.stop_signals import POLICY

    with POLICY.abrupt():  # (a Ctrl+C while the hub is asked ends the process at once)
        names = repo_file_names(spec, revision=folder.name)
    if names is not None:
        checkpoint_config(folder, names.__contains__)


def run_voices(args: argparse.Namespace) -> int:
    voices = _checkpoint_voices(args.model) if args.model else VOICE_PRESETS
    rows = [
        {"name": v, "category": voice_category(v), "default": v == DEFAULT_VOICE} for v in voices
    ]
    if args.json:
        print_out(json.dumps(rows, indent=2))
        return 0
    title = f"Voices of {args.model}" if args.model else "Voices"
    table = Table(title=title, title_justify="left")
    table.add_column("name")
    table.add_column("category")
    table.add_column("default")
    for r in rows:
        table.add_row(r["name"], r["category"], "yes" if r["default"] else "")
    print_out(table)
    return 0


def run_prompts(args: argparse.Namespace) -> int:
    if args.json:
        print_out(json.dumps(PROMPT_PRESETS, indent=2))
        return 0
    table = Table(title="System prompts", title_justify="left", show_lines=True)
    table.add_column("preset")
    table.add_column("text")
    for name, text in PROMPT_PRESETS.items():
        table.add_row(name, text)
    print_out(table)
    return 0


def run_devices(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from personaplex_tui.audio import devices_table, list_devices
    from personaplex_tui.audio.devices import chosen_by

    devices = list_devices()
    if args.json:
        by = {direction: chosen_by(devices, direction) for direction in ("input", "output")}
        rows = [{**asdict(d), "chosen_by": {k: by[k].get(d.index) for k in by}} for d in devices]
        print_out(json.dumps(rows, indent=2))
        return 0
    if not devices:  # an empty table says less than what to do without one
        print_out(NO_DEVICES)
        return 0
    print_out(devices_table(devices))
    return 0


NO_DEVICES = (
    "PortAudio found no sound device (no sound card, or no sound server). Without one, the chat "
    "takes --input-file WAV and --output-file WAV, respond --output WAV, and sound-check runs "
    "offline on two recordings (--far WAV --mic WAV --output WAV)."
)
