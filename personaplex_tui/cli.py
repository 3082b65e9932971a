"""The `ppx-tui` command line: the chat TUI by default, plus subcommands.

Nothing here imports textual or sounddevice at module level: `ppx-tui bench` and
`ppx-tui respond` must run on headless machines that have neither.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import IO

from model.errors import PersonaPlexError
from personaplex_tui import __version__
from personaplex_tui.commands import bench, chat, info, respond, soak, sound_check, transcribe
from personaplex_tui.commands.common import OutputError, UsageError, print_out
from personaplex_tui.cuda_launches import launch_directly
from personaplex_tui.errors import AppError
from personaplex_tui.kernel_cache import persistent_kernel_cache, precompiled_kernel_cache
from personaplex_tui.stop_signals import (
    POLICY,
    Stopped,
    exit_code_for,
    stop_behind,
    stopped_sentence,
)

EPILOG = """\
examples:
  ppx-tui                                   talk turn by turn (space to talk)
  ppx-tui --mode duplex --voice VARF2       full duplex, like a phone call
  ppx-tui --input-file q.wav --output-file a.wav --mode duplex   no sound card needed
  ppx-tui respond --input q.wav --output a.wav                    one reply, no TUI
  ppx-tui voices | prompts | devices | bench
"""


class _Parser(argparse.ArgumentParser):
    """Flag mistakes in one line (not the whole usage), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = re.sub(r"^argument (\S+): (?=\1 )", "", message)
        self.exit(2, f"{self.prog}: {message}. See `{self.prog} --help`.\n")

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        """--help and --version on stdout: a write that fails (`> /dev/full`) is one sentence,
        exit 2 (argparse drops the error: exit 0, nothing printed); a closed pipe is quiet."""
        if not message or file is not sys.stdout:
            super()._print_message(message, file)
            return
        try:
            print_out(message, end="")
        except BrokenPipeError:
            pass
        except OutputError as exc:
            self.exit(2, f"ppx-tui: {exc}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ppx-tui",
        description="Talk with NVIDIA PersonaPlex 7B in your terminal, locally, on MLX. "
        "With no command, the chat opens.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # `respond --input` is not an abbreviation of `--input-file`
    )
    parser.add_argument("--version", action="version", version=f"ppx-tui {__version__}")
    chat.add_arguments(parser.add_argument_group("chat options"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    respond.add_parser(sub)
    bench.add_parser(sub)
    info.add_parsers(sub)
    soak.add_parser(sub)
    transcribe.add_parser(sub)
    sound_check.add_parser(sub)
    for command in sub.choices.values():  # `respond --mode duplex` is not `--model duplex`
        command.allow_abbrev = False
    return parser


def _check_no_chat_options(argv: list[str], command: str) -> None:
    """Chat options before a subcommand would be ignored (or overridden): refuse them."""
    before = argv[: argv.index(command)] if command in argv else []
    given = [a.split("=")[0] for a in before if a.startswith("--")]
    if given:
        raise UsageError(
            f"{given[0]} is an option of the chat; put the options of `{command}` after it."
        )


def _check_stt_flags(args: argparse.Namespace) -> None:
    """The STT's model and bits with --no-user-transcript would be ignored: refuse them."""
    if getattr(args, "user_transcript", None) is not False:
        return
    for flag, value in (("--stt-model", "stt_model"), ("--stt-quantize", "stt_quantize")):
        if getattr(args, value, None) is not None:
            raise UsageError(
                f"{flag} sets the user transcript's model, which --no-user-transcript turns "
                "off; drop one of them."
            )


def _check_developer_variables() -> None:
    """A malformed PPX_STREAM (the temporal kernel's weight-stream plan) or PPX_RING_MASK (how
    a step hides unwritten ring slots), both for measurements, is refused before anything
    loads: the kernel would otherwise quietly turn itself off, the step fail once loaded."""
    from model.cuda import wanted_stream
    from model.lm.ring_mask import default_mode

    try:
        wanted_stream(4)
        default_mode()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _our_module(name: str | None) -> bool:
    return (name or "").split(".")[0] in ("personaplex_tui", "model")


def missing_module_sentence(name: str | None) -> str:
    """One sentence for a Python package this installation lacks (a broken or partial install)."""
    top = (name or "a module").split(".")[0]
    return (
        f"The Python module '{top}' that ppx-tui needs is not installed; reinstall ppx-tui with "
        f"its dependencies (pip install --force-reinstall ppx-tui) or install '{top}'."
    )


def _stopped(signum: int) -> int:
    """Say that a stop signal ended the command; its exit code (128 + the signal's number)."""
    print(f"ppx-tui: {stopped_sentence(signum)}", file=sys.stderr)
    return exit_code_for(signum)


def main(argv: list[str] | None = None) -> int:
    """Run one command; the process's signal policy is installed here (`stop_signals`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    POLICY.install()
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
    except Stopped as stop:
        return _stopped(stop.signum)
    if extra:  # named where they were given: a subcommand's help, not the chat's
        command = getattr(args, "command", None)
        prog = f"ppx-tui {command}" if command else "ppx-tui"
        print(
            f"{prog}: unrecognized arguments: {' '.join(extra)}. See `{prog} --help`.",
            file=sys.stderr,
        )
        return 2
    handler = getattr(args, "handler", None)
    try:
        persistent_kernel_cache()
        precompiled_kernel_cache()
        launch_directly()
        _check_stt_flags(args)
        _check_developer_variables()
        if handler is None:
            code = chat.run(args)
        else:
            _check_no_chat_options(argv, args.command)
            code = int(handler(args) or 0)
        if code == 0 and POLICY.received is not None:  # it came as the work was finishing
            raise Stopped(POLICY.received)
        return code
    except (PersonaPlexError, AppError) as exc:
        if isinstance(exc, OutputError) and POLICY.received is not None:
            return _stopped(POLICY.received)  # the terminal closed (SIGHUP): stdout went with it
        print(f"ppx-tui: {exc}", file=sys.stderr)
        return 2
    except Stopped as stop:
        return _stopped(stop.signum)
    except ModuleNotFoundError as exc:
        if _our_module(exc.name):
            raise  # a bug of ours, not an installation's
        print(f"ppx-tui: {missing_module_sentence(exc.name)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # raised by something other than our policy
        print("ppx-tui: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0 if POLICY.received is None else _stopped(POLICY.received)
    except Exception as exc:
        stop = stop_behind(exc)  # a stop signal's `Stopped`, wrapped by Python on its way
        if stop is None:
            raise
        return _stopped(stop.signum)
    finally:
        POLICY.quiet()  # a signal while the process winds down must not print a traceback
        logging.shutdown()
