"""The `ppx-tui` command line: the chat TUI by default, plus subcommands."""

from __future__ import annotations

import argparse
import sys

from personaplex_tui import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppx-tui", description="Talk with NVIDIA PersonaPlex 7B in your terminal."
    )
    parser.add_argument("--version", action="version", version=f"ppx-tui {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    return 0
