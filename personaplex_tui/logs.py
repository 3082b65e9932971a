"""Logging to a file in the user's log folder, never onto the terminal the TUI draws on."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from personaplex_tui import APP_NAME  # (not settings: sound device code logs too, no model)

LOG_ENV = "PPX_TUI_LOG"
QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "urllib3", "filelock")
_FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"


def default_log_path() -> Path:
    """`$PPX_TUI_LOG`, else `ppx-tui.log` in the user's log folder."""
    override = os.environ.get(LOG_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return platformdirs.user_log_path(APP_NAME) / "ppx-tui.log"


def setup_logging(path: Path | None = None, level: int = logging.INFO) -> Path:
    """Send all logging (and Python warnings) to a rotating file; returns its path.

    Handlers that write to the terminal are removed from the root logger, so nothing lands on
    the screen Textual draws; a file that cannot be opened falls back to discarding records.
    """
    path = path or default_log_path()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            root.removeHandler(handler)
    handler: logging.Handler
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.set_name(APP_NAME)
    for old in [h for h in root.handlers if h.get_name() == APP_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in QUIET_LOGGERS:  # a line per HTTP request would bury what matters
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
    return path
