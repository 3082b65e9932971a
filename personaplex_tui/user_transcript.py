"""The user's transcript, app side: its flags and settings (`stt_loader` loads the model).

On by default (`--no-user-transcript` turns it off, and then nothing is loaded). The STT model
is Kyutai's stt-1b-en_fr unless `--stt-model` names another repo or folder. Any problem loading
it (not downloaded and the hub unreachable, a broken or mismatched checkpoint) is one sentence
for the user and the conversation goes on without the user's transcript.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

DEFAULT_STT_MODEL = "kyutai/stt-1b-en_fr"  # model.stt.DEFAULT_STT_MODEL, without importing MLX
STT_QUANTIZE = (4, 8, 16)  # 16: keep the checkpoint's floats (bfloat16)
CUDA_STT_BITS = 8  # the default on NVIDIA GPUs, where a quantized STT runs as one CUDA kernel
STT_QUANTIZE_HELP = (
    "quantize the speech-to-text model's transformer to 4 or 8 bits on load, or 16 to keep its "
    f"bfloat16 weights (default: {CUDA_STT_BITS} on NVIDIA GPUs, where the quantized STT runs "
    "as one CUDA kernel; 16 elsewhere)"
)
NO_TRANSCRIPT = "No transcript of your voice"
# After the chat's notice: how to stop looking for a model that is not there at every start.
NO_TRANSCRIPT_HINT = (
    "To stop looking for it, switch Your transcript off in the settings (s), or start with "
    "--no-user-transcript."
)
STT_FLAG = "--stt-model"  # the option naming the STT model, for the loader's messages


@dataclass(frozen=True)
class SttChoice:
    """Whether to transcribe the user, and with which STT model."""

    enabled: bool = True
    model: str | None = None  # repo id or folder; None: DEFAULT_STT_MODEL
    quantize: int | None = None  # 4, 8 or 16 bits; None: `stt_bits`'s default

    @property
    def source(self) -> str:
        return self.model or DEFAULT_STT_MODEL


def repo_or_folder(value: str) -> str:
    """argparse's type of --model and --stt-model: a name, never empty (an empty one was the
    current folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("give a Hugging Face repo id or a folder, not ''")
    return value


def add_stt_arguments(parser: argparse.ArgumentParser, *, with_defaults: bool = False) -> None:
    """`--no-user-transcript`, `--stt-model`, `--stt-quantize`. Unset flags stay None (the
    settings file's values hold) unless `with_defaults` (commands without a settings file)."""
    parser.add_argument(
        "--user-transcript",
        action=argparse.BooleanOptionalAction,
        default=True if with_defaults else None,
        help="transcribe your voice live with Kyutai STT (on by default; "
        "--no-user-transcript loads nothing)",
    )
    parser.add_argument(
        STT_FLAG,
        metavar="REPO_OR_DIR",
        type=repo_or_folder,
        default=None,
        help=f"speech-to-text model, Hugging Face repo or folder (default: {DEFAULT_STT_MODEL})",
    )
    parser.add_argument(
        "--stt-quantize",
        type=int,
        choices=STT_QUANTIZE,
        default=None,
        help=STT_QUANTIZE_HELP,
    )


def stt_bits(quantize: int | None, cuda: bool) -> int | None:
    """The bits to quantize the STT to on load (None: keep its floats) for the flag's or the
    setting's value `quantize` (None: unset) on a machine whose MLX runs on CUDA or not."""
    if quantize is None:
        return CUDA_STT_BITS if cuda else None
    return None if quantize == 16 else quantize


def choice_from_args(args: argparse.Namespace) -> SttChoice:
    """The choice the flags make (for commands without settings)."""
    enabled = getattr(args, "user_transcript", True)
    return SttChoice(
        enabled=True if enabled is None else bool(enabled),
        model=getattr(args, "stt_model", None),
        quantize=getattr(args, "stt_quantize", None),
    )


def stt_choice(settings: Any) -> SttChoice:
    """The choice a `Settings` makes."""
    return SttChoice(settings.user_transcript, settings.stt_model, settings.stt_quantize)


def settings_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields the STT flags set."""
    changes: dict[str, Any] = {}
    if getattr(args, "user_transcript", None) is not None:
        changes["user_transcript"] = bool(args.user_transcript)
    if getattr(args, "stt_model", None) is not None:
        changes["stt_model"] = args.stt_model
    if getattr(args, "stt_quantize", None) is not None:
        changes["stt_quantize"] = args.stt_quantize
    return changes


def settings_problem(enabled: Any, model: Any, quantize: Any) -> str | None:
    """What is wrong with the STT settings, in one sentence, or None."""
    if not isinstance(enabled, bool):
        return f"User transcript must be true or false (got {enabled!r})."
    if model is not None and (not isinstance(model, str) or not model.strip()):
        return f"STT model must be a non-empty name (got {model!r})."
    if quantize is not None and (isinstance(quantize, bool) or quantize not in STT_QUANTIZE):
        return f"STT quantize must be 4, 8 or 16 bits (got {quantize!r})."
    return None
