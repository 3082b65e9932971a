"""ALSA's and JACK's error lines kept off the terminal once PortAudio's start is left behind.

A start left behind (`devices._start_portaudio`: a hung sound server, or Ctrl+C during the
start) may still be listing ALSA's devices when fd 2 is given back to the terminal for the
command's sentence; ALSA ("ALSA lib ... Unknown PCM ...") and JACK, which ALSA's jack plugin and
PortAudio's JACK host API use ("Cannot connect to server socket ..."), then printed their lines
after it. Their error handlers are made to print nothing, for the rest of the process (no
device is used after that start), before fd 2 is given back.

Only libraries already loaded are touched: sounddevice points fd 2 at /dev/null after loading
PortAudio, which links both, so a start that fd 2 is taken back from has them loaded; elsewhere
there is nothing to do (macOS has no ALSA; a start left behind before it loaded PortAudio moves
fd 2 to /dev/null itself afterwards, for all of Pa_Initialize). Not covered:
PortAudio's own "Expression ... failed" lines (its print function is not exported) and
PulseAudio's client library (it logs only through its private libpulsecommon; ALSA's pulse
plugin reports through ALSA's handler); with ALSA and JACK quiet, a whole Pa_Initialize printed
nothing, against a stopped PulseAudio server that then went on or was killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

# ALSA's handler is variadic: (file, line, function, err, fmt, ...). A function of the fixed
# arguments alone may stand in for it on x86-64 and arm64 Linux (variadic arguments travel as
# the others do, and a callee that reads none ignores the rest); ALSA exists on Linux only.
_ALSA_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
)
_JACK_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # void (*)(const char *msg)


def _ignore(*_args: object) -> None:
    """Says nothing."""


# Kept for the life of the process: the libraries call them after this module's work is done.
_alsa_silent = _ALSA_HANDLER(_ignore)
_jack_silent = _JACK_HANDLER(_ignore)


def silence_sound_libraries() -> list[str]:
    """Make ALSA's and JACK's error printing (and JACK's info printing) say nothing from now on,
    where they are loaded in this process; the functions called, each after its library's name."""
    silenced = []
    alsa = _loaded("libasound.so.2")
    if alsa is not None:
        with contextlib.suppress(AttributeError):
            function = alsa.snd_lib_error_set_handler
            function.argtypes, function.restype = [_ALSA_HANDLER], ctypes.c_int
            function(_alsa_silent)
            silenced.append("libasound.so.2 snd_lib_error_set_handler")
    jack = _loaded("libjack.so.0")
    if jack is not None:
        for setter in ("jack_set_error_function", "jack_set_info_function"):
            with contextlib.suppress(AttributeError):  # (a library without it)
                function = getattr(jack, setter)
                function.argtypes, function.restype = [_JACK_HANDLER], None
                function(_jack_silent)
                silenced.append(f"libjack.so.0 {setter}")
    return silenced


def _loaded(name: str) -> ctypes.CDLL | None:
    """The library `name` if this process has loaded it (it is not loaded here), else None."""
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:  # Windows
        return None
    try:
        return ctypes.CDLL(name, mode=no_load | os.RTLD_LAZY)
    except OSError:  # not loaded, or not on this system
        return None
