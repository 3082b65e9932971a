"""PortAudio's and ALSA's own lines kept off the terminal of a command that opens sound devices."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from personaplex_tui.logs import default_log_path
from personaplex_tui.stderr_capture import stderr_to_file


@contextlib.contextmanager
def device_noise_to_log() -> Iterator[None]:
    """Inside: what C libraries write to fd 2 ("Expression ... failed", "ALSA lib ...
    underrun", when a sound server dies) goes to ppx-tui's log file, as the chat's does; the
    command's own messages (Python's stderr) stay on the terminal."""
    path = default_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # stderr_to_file then leaves fd 2 as it is
    with stderr_to_file(path):
        yield
