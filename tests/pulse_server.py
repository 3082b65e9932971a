"""A private PulseAudio daemon for the real-device tests: started from a script of modules, it
yields the environment a client needs to reach it and is stopped and removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ALSA_PLUGIN_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu/alsa-lib"),
    Path("/usr/lib/aarch64-linux-gnu/alsa-lib"),
    Path("/usr/lib/alsa-lib"),
)
_PIDS: dict[str, int] = {}  # each running daemon's process id, by its client's PULSE_SERVER


def server_pid(env: dict[str, str]) -> int:
    """The process id of the daemon `private_pulse` yielded `env` for (to stop it with SIGSTOP)."""
    return _PIDS[env["PULSE_SERVER"]]


@contextmanager
def private_pulse(modules: str, *, prefix: str = "ppx-pa-") -> Iterator[dict[str, str]]:
    """Runs a PulseAudio daemon whose script is the native socket plus `modules` (lines of
    PulseAudio script); yields the client environment (`PULSE_SERVER` names the socket)."""
    daemon = shutil.which("pulseaudio")
    assert daemon, "pulseaudio is not installed: run `./dev system-deps` (apt: pulseaudio)"
    assert any((d / "libasound_module_pcm_pulse.so").exists() for d in ALSA_PLUGIN_DIRS), (
        "ALSA's pulse plugin is missing: run `./dev system-deps` (apt: libasound2-plugins)"
    )
    home = Path(tempfile.mkdtemp(prefix=prefix))
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    socket = runtime / "native"
    script = home / "server.pa"
    script.write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}\n{modules}"
    )
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("PULSE_SERVER", None)
    proc = subprocess.Popen(
        [daemon, "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1",
         "--use-pid-file=no", "--log-target=stderr", "--disallow-module-loading"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not socket.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not socket.exists():
            proc.kill()
            raise AssertionError(f"PulseAudio did not start: {proc.communicate()[1][-2000:]}")
        _PIDS[f"unix:{socket}"] = proc.pid
        yield {**env, "PULSE_SERVER": f"unix:{socket}"}
    finally:
        _PIDS.pop(f"unix:{socket}", None)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(home, ignore_errors=True)


NULL_SINK = (
    "load-module module-null-sink sink_name=ppx_null rate=48000 channels=2\n"
    "set-default-sink ppx_null\n"
    "set-default-source ppx_null.monitor\n"
)
"""The default sink is a null sink and its monitor is the microphone."""

ROOM = (
    "load-module module-null-sink sink_name=ppx_speaker rate=48000 channels=2\n"
    "load-module module-null-sink sink_name=ppx_room rate=48000 channels=2\n"
    "load-module module-loopback source=ppx_speaker.monitor sink=ppx_room latency_msec=60 adjust_time=0\n"
    "set-default-sink ppx_speaker\n"
    "set-default-source ppx_room.monitor\n"
)
"""The default sink is a null sink; a loopback carries its monitor into a second null sink whose
monitor is the default source (the microphone): a real, buffered echo path."""
