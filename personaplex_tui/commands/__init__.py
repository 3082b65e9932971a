"""Subcommands of `ppx-tui` besides the chat TUI: respond, bench, voices, prompts, devices."""
