"""ppx-tui: talk with NVIDIA PersonaPlex 7B in the terminal, locally, on MLX."""

__version__ = "0.1.0"
APP_NAME = "ppx-tui"  # its folders' name (settings, log, cache)
