"""README.md documents every command and flag of `ppx-tui` (DEVELOPERS.md: keep it true)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from personaplex_tui.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _options(parser: argparse.ArgumentParser, command: str) -> list[tuple[str, str]]:
    """(command, long option) of `parser` and of its subcommands, --help aside."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((name, f"ppx-tui {name}"))
                found += _options(sub, name)
            continue
        found += [
            (command, o) for o in action.option_strings if o.startswith("--") and o != "--help"
        ]
    return found


def test_every_command_and_flag_is_in_the_readme():
    options = _options(build_parser(), "ppx-tui")
    assert len(options) > 60  # the walk found the subcommands' flags too
    missing = [(c, o) for c, o in options if not re.search(re.escape(o) + r"(?![\w-])", README)]
    assert missing == []
