"""Command-line options for a conversation, named like ControllerConfig's fields."""

from __future__ import annotations

import argparse

from personaplex_tui.conversation.config import MODES


def add_conversation_options(parser: argparse.ArgumentParser) -> None:
    """Add `--mode`, `--voice`, ..., `--input-file`, `--output-file`, `--record-dir`,
    `--timing-log` to `parser`. Options not given are absent from the parsed namespace, so
    `ControllerConfig.from_settings(args, base)` keeps `base`'s values (e.g. saved settings)."""
    group = parser.add_argument_group("conversation")
    add = group.add_argument
    keep = argparse.SUPPRESS
    add("--mode", choices=MODES, default=keep, help="turn-based or full duplex")
    add("--voice", default=keep, help="voice preset, e.g. NATF2")
    add("--prompt", default=keep, help="system-prompt preset, e.g. assistant")
    add("--prompt-text", default=keep, help="a system prompt of your own (wins over --prompt)")
    add("--max-steps", type=int, default=keep, help="turn-based reply length in 80 ms frames")
    add(
        "--echo-suppression",
        action=argparse.BooleanOptionalAction,
        default=keep,
        help="mute the mic to the model while the agent is audible (no headphones)",
    )
    add("--audio-temp", type=float, default=keep)
    add("--audio-top-k", type=int, default=keep)
    add("--text-temp", type=float, default=keep)
    add("--text-top-k", type=int, default=keep)
    add("--seed", type=int, default=keep)
    add("--input-device", default=keep, help="microphone: name part or index")
    add("--output-device", default=keep, help="speaker: name part or index")
    add("--input-file", metavar="WAV", default=keep, help="play this file as the microphone")
    add("--output-file", metavar="WAV", default=keep, help="write the speaker's audio here")
    add("--record-dir", metavar="DIR", default=keep, help="record every session under DIR")
    add("--save-dir", metavar="DIR", default=keep, help="where saved recordings go")
    add(
        "--timing-log",
        metavar="FILE.jsonl",
        default=keep,
        help="append every step's timings to FILE as JSON lines",
    )
