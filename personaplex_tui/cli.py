"""The `ppx-tui` command line: the chat TUI by default, plus subcommands.

Nothing here imports textual or sounddevice at module level: `ppx-tui bench` and
`ppx-tui respond` must run on headless machines that have neither.
"""

from __future__ import annotations

import argparse
import logging
import sys

from model.errors import PersonaPlexError
from personaplex_tui import __version__
from personaplex_tui.commands import bench, info, respond, soak
from personaplex_tui.kernel_cache import persistent_kernel_cache


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppx-tui",
        description="Talk with NVIDIA PersonaPlex 7B in your terminal, locally, on MLX.",
    )
    parser.add_argument("--version", action="version", version=f"ppx-tui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    respond.add_parser(sub)
    bench.add_parser(sub)
    info.add_parsers(sub)
    soak.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    persistent_kernel_cache()
    try:
        return int(handler(args) or 0)
    except PersonaPlexError as exc:
        print(f"ppx-tui: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppx-tui: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        logging.shutdown()
