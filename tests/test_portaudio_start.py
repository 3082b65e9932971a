"""PortAudio's start (importing sounddevice) when the sound server hangs: one sentence, not a hang."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from personaplex_tui import stuck_exit
from personaplex_tui.audio import AudioDeviceError, devices, start_noise
from tests.pulse_server import server_pid
from tests.tui_pty import PtyProcess, after_screen, user_env

ROOT = Path(__file__).resolve().parents[1]
HANGS = f"ppx-tui: {devices.START_HUNG}\n"
SPEECH = ROOT / "tests" / "data" / "audio" / "shipping.wav"
PULSE_KEYS = ("PULSE_SERVER", "HOME", "XDG_RUNTIME_DIR")  # the private server, for the chat

# fd 2 on /dev/null while the stand-ins below "start", as sounddevice's `_initialize` does
FD2_TO_NULL = """
saved = os.dup(2)
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 2)
os.close(null)
"""

# A stand-in for `sounddevice` whose import hangs as Pa_Initialize does with a stopped server
# until the test lets it go.
SLOW_IMPORT = (
    """
import os
import ppx_portaudio_gate as gate
"""
    + FD2_TO_NULL
    + """
try:
    gate.release.wait(30)
finally:
    os.dup2(saved, 2)
    os.close(saved)
"""
)

# One whose start, once let go after it was left behind, goes on as a real one listing devices
# would: ALSA and JACK (loaded before, as PortAudio's library loads them) print their errors.
PRINTS_LATE = (
    """
import ctypes
import os
import ppx_portaudio_gate as gate

alsa = ctypes.CDLL("libasound.so.2")
jack = ctypes.CDLL("libjack.so.0")
jack.jack_client_open.restype = ctypes.c_void_p
"""
    + FD2_TO_NULL
    + """
try:
    gate.release.wait(30)
    pcm = ctypes.c_void_p()
    gate.results.append(alsa.snd_pcm_open(ctypes.byref(pcm), b"ppx-no-such-pcm", 0, 0))
    status = ctypes.c_int()
    no_start_server = 1
    gate.results.append(jack.jack_client_open(b"ppx", no_start_server, ctypes.byref(status)))
finally:
    gate.printed.set()
    os.dup2(saved, 2)
    os.close(saved)
"""
)
# A command's part: the start is left behind, its sentence is said, then the start goes on.
LEFT_BEHIND = """
import sys, threading, types

gate = types.SimpleNamespace(release=threading.Event(), printed=threading.Event(), results=[])
sys.modules["ppx_portaudio_gate"] = gate
from personaplex_tui.audio import AudioDeviceError, devices

devices.START_TIMEOUT_S = 0.3
try:
    devices.portaudio()
except AudioDeviceError as e:
    print(f"ppx-tui: {e}", file=sys.stderr, flush=True)
gate.release.set()
assert gate.printed.wait(30)
no_pcm, no_jack = gate.results
print(no_pcm < 0, no_jack is None)
"""


@pytest.fixture
def fake_sounddevice(tmp_path, monkeypatch):
    """Yields a function writing `sounddevice.py` (its source) where the import finds it first;
    PortAudio's start is fresh (nothing kept) and no hard exit asked yet. The stand-in imported
    is forgotten afterwards (where no real one was imported before, it stayed in sys.modules,
    and a later test of real PortAudio in the same process got it)."""
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(devices, "_started", devices._Start())
    monkeypatch.setattr(stuck_exit, "_asked", False)
    monkeypatch.setenv("PPX_TUI_LOG", str(tmp_path / "ppx-tui.log"))
    yield lambda source: (tmp_path / "sounddevice.py").write_text(source)
    sys.modules.pop("sounddevice", None)  # (then monkeypatch puts back a real one it took out)


def _starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads `run_in_time` starts from now on."""
    names: list[str] = []
    real = stuck_exit.run_in_time

    def counted(work, timeout_s, name):
        names.append(name)
        return real(work, timeout_s, name)

    monkeypatch.setattr(stuck_exit, "run_in_time", counted)
    return names


def _silencings(monkeypatch: pytest.MonkeyPatch) -> list[os.stat_result]:
    """What fd 2 was each time the sound libraries were silenced from now on (not done here:
    the test process keeps its own)."""
    seen: list[os.stat_result] = []
    monkeypatch.setattr(start_noise, "silence_sound_libraries", lambda: seen.append(os.fstat(2)))
    return seen


def test_a_start_that_hangs_is_left_behind_after_its_timeout(fake_sounddevice, monkeypatch):
    fake_sounddevice(SLOW_IMPORT)
    silenced = _silencings(monkeypatch)
    gate = types.SimpleNamespace(release=threading.Event())
    monkeypatch.setitem(sys.modules, "ppx_portaudio_gate", gate)
    monkeypatch.setattr(devices, "START_TIMEOUT_S", 0.3)
    starts = _starts(monkeypatch)
    stderr_before = os.fstat(2)
    began = time.monotonic()
    try:
        with pytest.raises(AudioDeviceError) as info:
            devices.portaudio()
        assert 0.3 <= time.monotonic() - began < 3
        assert str(info.value) == devices.START_HUNG and stuck_exit._asked
        after = os.fstat(2)  # the sentence reaches the terminal, not sounddevice's /dev/null
        assert (after.st_dev, after.st_ino) == (stderr_before.st_dev, stderr_before.st_ino)
        null = os.stat(os.devnull)  # ALSA and JACK were silenced before the terminal came back
        assert [(s.st_dev, s.st_ino) for s in silenced] == [(null.st_dev, null.st_ino)]
        began = time.monotonic()
        with pytest.raises(AudioDeviceError, match="did not answer within"):
            devices.list_devices()  # kept: at once, no second thread
        assert time.monotonic() - began < 0.1 and starts == ["portaudio-start"]
    finally:
        gate.release.set()
        for thread in threading.enumerate():
            if thread.name == "ppx-portaudio-start":
                thread.join(10)


def test_a_start_that_ends_is_kept(fake_sounddevice, monkeypatch):
    fake_sounddevice("NAME = 'fake PortAudio'\n")
    starts = _starts(monkeypatch)
    silenced = _silencings(monkeypatch)
    assert devices.portaudio().NAME == "fake PortAudio"
    assert devices.portaudio().NAME == "fake PortAudio"
    assert starts == ["portaudio-start"] and not stuck_exit._asked and not silenced


def test_a_start_left_behind_prints_nothing_after_the_sentence(tmp_path):
    """The start left behind may still be listing devices (Ctrl+C right after it began, a
    loaded machine) once fd 2 is the terminal again: ALSA's and JACK's errors printed there,
    after the sentence."""
    (tmp_path / "sounddevice.py").write_text(PRINTS_LATE)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "PPX_TUI_LOG": str(tmp_path / "ppx-tui.log"),
        "JACK_DEFAULT_SERVER": "ppx-no-such-jack-server",  # (not a JACK server running here)
    }
    done = subprocess.run(
        [sys.executable, "-c", LEFT_BEHIND], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True True\n"  # it went on: no such PCM, no JACK server
    assert done.stderr == HANGS


def test_portaudio_missing_is_one_sentence_and_kept(fake_sounddevice, monkeypatch):
    fake_sounddevice("raise OSError('PortAudio library not found')\n")
    starts = _starts(monkeypatch)
    for _ in range(2):
        with pytest.raises(AudioDeviceError) as info:
            devices.portaudio()
        assert str(info.value) == devices.NO_PORTAUDIO
    assert starts == ["portaudio-start"] and not stuck_exit._asked


def _in_pa_initialize(pid: int) -> bool:
    """sounddevice points fd 2 at /dev/null while Pa_Initialize runs."""
    try:
        return os.readlink(f"/proc/{pid}/fd/2") == os.devnull
    except OSError:
        return False


@pytest.mark.parametrize(
    ("command", "interrupt", "code", "said"),
    [
        (["devices"], False, 2, HANGS),
        (["devices", "--json"], True, 130, "ppx-tui: interrupted.\n"),
        (["sound-check", "--input-device", "pulse", "--output-device", "pulse"], False, 2, HANGS),
        (["respond", "--input", str(SPEECH), "--model", str(ROOT / "no-model")], False, 2,
         "ppx-tui: Cannot play the reply (the sound system did not answer within 5 s, so "
         "PortAudio could not start); give --output FILE.wav to write it to a file instead.\n"),
    ],
    ids=["devices", "devices-interrupted", "sound-check", "respond"],
)  # fmt: skip
def test_a_sound_server_hung_before_the_command_ends_it_in_seconds(
    pulse_null_sink, tmp_path, command, interrupt, code, said
):
    """SIGSTOP on the server before the command starts: importing sounddevice hung in
    Pa_Initialize (inside ALSA's PulseAudio plugin) for good, with no message, and Ctrl+C (its
    handler never ran in the main thread) did not end it either."""
    pid = server_pid(pulse_null_sink)
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "personaplex_tui", *command],
            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**pulse_null_sink, "PYTHONPATH": str(ROOT), "PPX_TUI_LOG": str(tmp_path / "log")},
        )  # fmt: skip
        try:
            if interrupt:  # while PortAudio's start hangs
                deadline = time.monotonic() + 20
                while not _in_pa_initialize(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert _in_pa_initialize(proc.pid), "PortAudio's start was never seen"
                began = time.monotonic()
                proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert proc.returncode == code, err
    assert out == "" and err == said, err
    assert took < (2 if interrupt else devices.START_TIMEOUT_S + 10), took
    assert "thread ppx-portaudio-start" in (tmp_path / "log").read_text()


@contextlib.contextmanager
def chat_on_hung_server(
    pulse: dict[str, str], tmp_path: Path, args: list[str], **pty: object
) -> Iterator[PtyProcess]:
    """The chat on a terminal, started with the private PulseAudio server stopped (SIGSTOP: it
    hangs, not dies); afterwards the server goes on, then the terminal is closed."""
    env = {**user_env(tmp_path), **{k: pulse[k] for k in PULSE_KEYS}}
    pid = server_pid(pulse)
    os.kill(pid, signal.SIGSTOP)
    tui = None
    try:
        tui = PtyProcess(args, env=env, **pty)
        yield tui
    finally:
        os.kill(pid, signal.SIGCONT)
        if tui is not None:
            tui.close()


def test_a_chat_started_on_a_hung_sound_server_says_so_and_quits(
    pulse_null_sink, small_checkpoint, tmp_path
):
    """The chat opens its devices on a daemon thread: it waited for them for good, silent,
    and a stuck-exit dump of the chat's log named no PortAudio start."""
    args = ["--model", str(small_checkpoint), "--mode", "duplex", "--no-user-transcript"]
    with chat_on_hung_server(pulse_null_sink, tmp_path, args, size=(160, 40)) as tui:
        tui.wait_for(lambda: "The sound system did not answer" in tui.output, 60, "told")
        os.write(tui.master, b"q")
        code = tui.wait(timeout=15)
        output = tui.output
    assert code == 0 and "Traceback" not in output, output[-2000:]
    log = (tmp_path / "ppx-tui.log").read_text()
    assert devices.START_HUNG in log and "thread ppx-portaudio-start" in log


def test_a_chat_naming_a_device_on_a_hung_sound_server_ends_before_its_screen(
    pulse_null_sink, small_checkpoint, tmp_path
):
    """The devices the flags name are looked up before the model loads, through PortAudio's
    start and its time limit: on a hung server, its sentence and exit code 2 within seconds,
    without the screen (it used to open, load the model, then say it in a banner)."""
    args = ["--model", str(small_checkpoint), "--input-device", "pulse", "--no-user-transcript"]
    began = time.monotonic()
    with chat_on_hung_server(pulse_null_sink, tmp_path, args) as tui:
        code = tui.wait(timeout=devices.START_TIMEOUT_S + 20)
        took = time.monotonic() - began
        output = tui.output
    assert code == 2 and "\x1b[?1049h" not in output, output[-2000:]
    assert after_screen(output) == [HANGS.strip()]
    assert took < devices.START_TIMEOUT_S + 10, took
    assert "thread ppx-portaudio-start" in (tmp_path / "ppx-tui.log").read_text()
