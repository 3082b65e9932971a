"""Where the WebRTC audio processing library built here (`apm_build`) lives, and its version."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The entry points' version in personaplex_tui/audio/native/ppx_apm.cc (kVersion): a library
# built from other sources is rebuilt, never loaded.
SHIM_VERSION = 2
ENV_LIBRARY = "PPX_APM_LIBRARY"  # a library file to load instead; "off": use livekit's


def library_path() -> Path:
    """The library's file: inside this Python environment (a venv's own `lib/`), so that it
    goes with the environment; PPX_APM_LIBRARY names another file."""
    given = os.environ.get(ENV_LIBRARY)
    if given and given != "off":
        return Path(given)
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    return Path(sys.prefix) / "lib" / "ppx-tui" / f"libppx_apm-{SHIM_VERSION}{suffix}"


def switched_off() -> bool:
    """PPX_APM_LIBRARY=off: the canceller is livekit's even where the library is built."""
    return os.environ.get(ENV_LIBRARY) == "off"
