"""README.md documents every command and flag of `ppx-tui`, each in its command's own section (and
each flag has a line of --help), every key of the chat and of the settings file, and where the
settings file and the log are by default."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from personaplex_tui.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

# The README section that documents each command's flags (a heading's text, searched for).
SECTIONS = {
    "ppx-tui": "Chat options",
    "respond": "`ppx-tui respond`",
    "transcribe": "`ppx-tui transcribe`",
    "sound-check": "`ppx-tui sound-check`",
    "bench": "`ppx-tui bench`",
    "soak": "`ppx-tui soak`",
    "voices": "`ppx-tui voices`",
    "prompts": "`ppx-tui voices` / `prompts`",
    "devices": "`ppx-tui voices` / `prompts` / `devices`",
}


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


def _commands() -> dict[str, argparse.ArgumentParser]:
    """The chat's parser under "ppx-tui", and each subcommand's under its name."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"ppx-tui": parser, **subs.choices}


def section(readme: str, title: str) -> str:
    """The text of the README section whose heading holds `title`, up to the next heading of
    its level or above."""
    heading = re.search(rf"^(#+) .*{re.escape(title)}.*$", readme, flags=re.M)
    assert heading is not None, f"the README has no section {title!r}"
    level = len(heading.group(1))
    rest = readme[heading.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def _named(option: str, text: str) -> bool:
    return re.search(re.escape(option) + r"(?![\w-])", text) is not None


def undocumented(readme: str) -> list[str]:
    """Each command's flags that its README section does not name, and flags with a fixed
    set of values that it names without them (`--bits 4|8|16`)."""
    missing = []
    for command, parser in _commands().items():
        text = section(readme, SECTIONS[command])
        for action in parser._actions:
            for option in (o for o in action.option_strings if o.startswith("--")):
                if option == "--help":
                    continue
                if not _named(option, text):
                    missing.append(f"{command} {option}")
                elif action.choices and not isinstance(action, argparse._SubParsersAction):
                    values = r"\\?\|".join(re.escape(str(c)) for c in action.choices)
                    if not re.search(re.escape(option) + r"[ =]" + values + r"(?![\w|])", text):
                        missing.append(f"{command} {option}: its values")
    return missing


def test_every_command_and_flag_is_in_the_readme():
    options = _options(build_parser(), "ppx-tui")
    assert len(options) > 60  # the walk found the subcommands' flags too
    missing = [(c, o) for c, o in options if not re.search(re.escape(o) + r"(?![\w-])", README)]
    assert missing == []


def test_each_commands_flags_and_their_values_are_in_its_own_section():
    assert set(SECTIONS) == set(_commands())  # a new command gets its section here
    assert undocumented(README) == []


def test_a_flag_or_its_values_missing_from_its_section_is_found():
    soak = section(README, SECTIONS["soak"])
    without = README.replace(soak, soak.replace("--every", "--each"))
    assert "soak --every" in undocumented(without)
    chat = section(README, SECTIONS["ppx-tui"])
    without = README.replace(chat, chat.replace("--quantize 4|8", "--quantize N"))
    without = without.replace("--quantize 4\\|8", "--quantize N")
    assert "ppx-tui --quantize: its values" in undocumented(without)


def test_every_key_of_the_chat_is_in_the_readmes_key_table():
    from personaplex_tui.tui.keys import CTRL_C, KEY_ACTIONS, KEY_LABELS

    keys = [KEY_LABELS.get(k.key, k.key) for k in KEY_ACTIONS] + [CTRL_C.key, "ctrl+p"]
    rows = set(re.findall(r"^\| `([^`]+)` \|", section(README, "Talking with it"), flags=re.M))
    assert [key for key in keys if key not in rows] == []


def unnamed_screen_keys(readme: str) -> list[str]:
    """The keys of the settings and help screens that the README's chat section does not name
    (in backquotes, as the footer and the help screen label them)."""
    from personaplex_tui.tui.keys import KEY_LABELS
    from personaplex_tui.tui.screens.help_screen import HelpScreen
    from personaplex_tui.tui.screens.settings_screen import SettingsScreen

    text = section(readme, "Talking with it")
    missing = []
    for screen in (SettingsScreen, HelpScreen):
        for binding in screen.BINDINGS:
            label = KEY_LABELS.get(binding.key, binding.key)
            if f"`{label}`" not in text:
                missing.append(f"{screen.__name__} {label}")
    return missing


def test_the_settings_and_help_screens_keys_are_in_the_readme():
    assert unnamed_screen_keys(README) == []
    chat = section(README, "Talking with it")
    without = README.replace(chat, chat.replace("`ctrl+s`", "ctrl+s"))
    assert unnamed_screen_keys(without) == ["SettingsScreen ctrl+s"]


def unnamed_settings_keys(readme: str) -> list[str]:
    """The settings file's keys that the README's chat options do not name (in backquotes)."""
    from personaplex_tui.settings import PERSISTED

    text = section(readme, SECTIONS["ppx-tui"])
    return [key for key in PERSISTED if f"`{key}`" not in text]


def test_every_key_of_the_settings_file_is_in_the_readme():
    assert unnamed_settings_keys(README) == []
    chat = section(README, SECTIONS["ppx-tui"])
    without = README.replace(chat, chat.replace("`text_top_k`", "text top-k"))
    assert unnamed_settings_keys(without) == ["text_top_k"]


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
OTHER_PROGRAMS = {"--no-deps"}  # pip's, in the notes on installing a peer


def _code(readme: str) -> list[str]:
    """The README's code: its inline spans, and each line of its code blocks with the indented
    lines that continue it (a command's synopsis)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", readme, flags=re.M | re.S)
    prose = re.sub(r"^```.*?^```", "", readme, flags=re.M | re.S)
    code = re.findall(r"`([^`]+)`", prose)
    for block in blocks:
        lines: list[str] = []
        for line in block.splitlines():
            if line[:1].isspace() and lines:
                lines[-1] += line
            else:
                lines.append(line)
        code += lines
    return code


def unknown_flags(readme: str) -> list[str]:
    """Flags the README names that do not exist: in a `ppx-tui CMD ...` line, those CMD lacks;
    in a benchmark's command line, those its script (and the benchmarks it imports) lacks;
    elsewhere, those no command and no benchmark has."""
    commands = _commands()
    options = {n: {o for a in p._actions for o in a.option_strings} for n, p in commands.items()}
    every_option = set().union(*options.values())
    scripts = {p.stem: p.read_text() for p in BENCHMARKS.glob("*.py")}
    found = []
    for code in _code(readme):
        script = re.search(r"benchmarks[./](\w+)", code)
        command = re.match(r"\s*(?:[A-Z_]+=\S*\s+)*ppx-tui(?:\s+([a-z][a-z-]*))?", code)
        for flag in FLAG.findall(code):
            if script:
                source = scripts.get(script.group(1), "")
                source += "".join(scripts[m] for m in re.findall(r"from benchmarks\.(\w+)", source))
                where, known = f"benchmarks/{script.group(1)}.py", f'"{flag}"' in source
            elif command:
                name = command.group(1) if command.group(1) in commands else "ppx-tui"
                where = "ppx-tui" if name == "ppx-tui" else f"ppx-tui {name}"
                known = flag in options[name]
            else:
                mentioned = f'"{flag}"' in "".join(scripts.values())
                where, known = "README", flag in every_option or flag in OTHER_PROGRAMS or mentioned
            if not known:
                found.append(f"{where} {flag}")
    return found


def test_every_flag_the_readme_names_exists():
    assert unknown_flags(README) == []
    respond = section(README, SECTIONS["respond"])
    wrong = respond.replace("[--chunk-seconds 2]", "[--chunk-seconds 2] [--every 5]")
    assert unknown_flags(README.replace(respond, wrong)) == ["ppx-tui respond --every"]
    wrong = README.replace("echo_cancel --no-table --frames", "echo_cancel --no-tables --frames")
    assert "benchmarks/echo_cancel.py --no-tables" in unknown_flags(wrong)
    wrong = README.replace("`--stream` writes/plays", "`--streaming` writes/plays")
    assert unknown_flags(wrong) == ["README --streaming"]


def test_every_flag_has_a_line_of_help():
    silent = [
        f"{name} {action.option_strings[-1]}"
        for name, parser in _commands().items()
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert silent == []


def test_the_settings_file_and_log_are_where_the_readme_says(monkeypatch, tmp_path):
    """README names the default settings file and log on Linux (and under $XDG_CONFIG_HOME,
    $XDG_STATE_HOME) and on macOS; it said only "your config folder", "your log folder"."""
    from platformdirs import PlatformDirs
    from platformdirs.macos import MacOS
    from platformdirs.unix import Unix

    from personaplex_tui import APP_NAME
    from personaplex_tui.logs import default_log_path
    from personaplex_tui.settings import default_config_path

    for name in ("PPX_TUI_CONFIG", "PPX_TUI_LOG", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    here = PlatformDirs(APP_NAME)  # (the app's: this system's kind)
    assert default_config_path() == here.user_config_path / "settings.toml"
    assert default_log_path() == here.user_log_path / "ppx-tui.log"
    for system in (Unix(APP_NAME), MacOS(APP_NAME)):
        for path in (
            system.user_config_path / "settings.toml",
            system.user_log_path / "ppx-tui.log",
        ):
            assert f"`~/{path.relative_to(tmp_path)}`" in README, path
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    linux = Unix(APP_NAME)
    assert linux.user_config_path == tmp_path / "config" / APP_NAME
    assert linux.user_log_path == tmp_path / "state" / APP_NAME / "log"
    assert "settings.toml` on Linux (under `$XDG_CONFIG_HOME` when set)" in README
    assert "ppx-tui.log` on Linux (under\n`$XDG_STATE_HOME` when set)" in README
