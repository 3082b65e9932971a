"""Flags shared by the subcommands that load a model, and their validation."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from model.checks import MAX_SEED
from model.config import SamplingConfig
from model.errors import PersonaPlexError
from personaplex_tui.settings import DTYPES, QUANTIZE
from personaplex_tui.user_transcript import repo_or_folder as model_name


class UsageError(PersonaPlexError):
    """A flag value that makes no sense (one sentence)."""


class OutputError(PersonaPlexError):
    """The standard output could not be written (a full disk, a closed device)."""


def add_model_arguments(
    p: argparse.ArgumentParser, default: str = "aufklarer/PersonaPlex-7B-MLX-4bit"
) -> None:
    """--model, --dtype and --quantize; `default` says what runs without --model."""
    p.add_argument(
        "--model",
        metavar="REPO_OR_DIR",
        type=model_name,
        default=None,
        help=f"Hugging Face repo id or local checkpoint folder (default: {default})",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="activation dtype (default: bfloat16 on a GPU, float32 on the CPU)",
    )
    p.add_argument(
        "--quantize",
        type=int,
        choices=QUANTIZE,
        default=None,
        help="quantize a float checkpoint (nvidia/personaplex-7b-v1) to 4 or 8 bits on load",
    )


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same reply)")
    p.add_argument("--greedy", action="store_true", help="argmax sampling (temperatures 0)")
    d = SamplingConfig()
    p.add_argument(
        "--audio-temp",
        dest="audio_temperature",
        metavar="AUDIO_TEMP",
        type=float,
        default=None,
        help=f"audio temperature ({d.audio_temperature})",
    )
    p.add_argument("--audio-top-k", type=int, default=None, help=f"audio top-k ({d.audio_top_k})")
    p.add_argument(
        "--text-temp",
        dest="text_temperature",
        metavar="TEXT_TEMP",
        type=float,
        default=None,
        help=f"text temperature ({d.text_temperature})",
    )
    p.add_argument("--text-top-k", type=int, default=None, help=f"text top-k ({d.text_top_k})")


def check_seed(seed: int | None) -> None:
    """A seed is a whole number from 0 to 2**63 - 1 (MLX's random keys take no negatives)."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED}, not {seed}.")


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The seed and the sampling flags given, validated, as `SessionSettings.replace` takes
    them (by field name)."""
    check_seed(args.seed)
    opts: dict[str, Any] = {"seed": args.seed}
    for name, flag in (("audio_temperature", "--audio-temp"), ("text_temperature", "--text-temp")):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 10.0:
            raise UsageError(f"{flag} must be between 0 and 10, not {value}.")
    for name, flag in (("audio_top_k", "--audio-top-k"), ("text_top_k", "--text-top-k")):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, not {value}.")
    for name in ("audio_temperature", "audio_top_k", "text_temperature", "text_top_k"):
        if getattr(args, name) is not None:
            opts[name] = getattr(args, name)
    if args.greedy:
        given = [
            flag
            for name, flag in (
                ("audio_temperature", "--audio-temp"),
                ("text_temperature", "--text-temp"),
            )
            if getattr(args, name) not in (None, 0.0)
        ]
        if given:
            raise UsageError(
                f"--greedy sets the temperatures to 0; drop {' and '.join(given)} or --greedy."
            )
        opts["audio_temperature"] = opts["text_temperature"] = 0.0
    return opts


def mx_dtype(name: str | None) -> Any:
    if name is None:
        return None
    import mlx.core as mx

    return getattr(mx, name)


def status(message: str) -> None:
    """A progress line on stderr (stdout stays clean for --json and --transcript)."""
    print(message, file=sys.stderr, flush=True)


def print_out(item: Any, end: str = "\n") -> None:
    """Print text (then `end`) or a rich renderable on stdout, now. A write that fails
    (`> /dev/full`) is one sentence (OutputError); a closed pipe stays a BrokenPipeError (the
    command line exits 0, quietly). A table is rendered first, then written here: rich's own
    write turned a closed pipe into exit 1 (`ppx-tui prompts | head -1`), unlike --json's 0."""
    try:
        if isinstance(item, str):
            sys.stdout.write(item + end)
        else:
            from rich.console import Console

            console = Console()
            with console.capture() as captured:
                console.print(item)
            sys.stdout.write(captured.get())
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        _discard_stdout()
        raise OutputError(f"Could not write to the standard output: {e.strerror or e}.") from None


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered fails no more at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
