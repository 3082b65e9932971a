"""Where the WebRTC audio processing library built here (`apm_build`) lives, and its version."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

# The entry points' version in personaplex_tui/audio/native/ppx_apm.cc (kVersion): a library
# built from other sources is rebuilt, never loaded.
SHIM_VERSION = 2
ENV_LIBRARY = "PPX_APM_LIBRARY"  # a library file to load instead; "off": use livekit's
# What the library is made from, besides the downloaded sources (pinned in apm_build): a change
# to either file gives the library another name, so an edited shim or build is never stale.
RECIPE = (
    Path(__file__).parent / "native" / "ppx_apm.cc",
    Path(__file__).parent / "apm_build.py",
)


@functools.cache
def recipe_digest() -> str:
    """12 hex digits of the SHA-256 of RECIPE's files ("unknown" where one cannot be read)."""
    digest = hashlib.sha256()
    try:
        for path in RECIPE:
            digest.update(path.read_bytes())
    except OSError:
        return "unknown"
    return digest.hexdigest()[:12]


def library_path() -> Path:
    """The library's file: inside this Python environment (a venv's own `lib/`), so that it
    goes with the environment, named by SHIM_VERSION and `recipe_digest`; PPX_APM_LIBRARY names
    another file (made absolute: a bare name would be looked for on the system's library path)."""
    given = os.environ.get(ENV_LIBRARY)
    if given and given != "off":
        return Path(given).expanduser().resolve()
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    name = f"libppx_apm-{SHIM_VERSION}-{recipe_digest()}{suffix}"
    return Path(sys.prefix) / "lib" / "ppx-tui" / name


def switched_off() -> bool:
    """PPX_APM_LIBRARY=off: the canceller is livekit's even where the library is built."""
    return os.environ.get(ENV_LIBRARY) == "off"
