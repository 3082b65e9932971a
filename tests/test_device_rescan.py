"""PortAudio lists the sound devices once, at its start: a device plugged in since (during the
model load, after the chat looked up the devices its flags name) is listed once PortAudio is
started again (`devices.rescan`), which happens only while none of its streams is open, and
through the first start's time limit and silencing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from personaplex_tui import stuck_exit
from personaplex_tui.audio import AudioDeviceError, devices, make_mic
from tests.test_portaudio_start import _silencings, _starts

ROOT = Path(__file__).resolve().parents[1]

# The chat's steps on real PortAudio (the tests' PulseAudio server, through ALSA): the early
# check of the devices named, a device plugged in during the model load, then the settings
# screen's list and the conversation's streams. A device is plugged in as a PCM of the user's
# ALSA configuration, which PortAudio's ALSA host lists (the server's sinks are not devices of
# its own: they are all behind 'pulse').
PLUGGED_DURING_THE_LOAD = r"""
import argparse, json, os
from pathlib import Path
from personaplex_tui.commands.chat import check_devices, device_names
from personaplex_tui.conversation import AudioFactory, AudioRig, ControllerConfig
from personaplex_tui.settings import Settings

def plug(name):
    with open(Path(os.environ["HOME"]) / ".asoundrc", "a") as f:
        f.write("pcm.%s {\n type pulse\n}\n" % name)

# the headset of the settings file is unplugged; the flag's device is there
flags = argparse.Namespace(input_device=None, output_device="pulse")
stored = Settings(input_device="ppx_headset", output_device="pulse")
out = {"warned": check_devices(flags, stored, Path("settings.toml"))}  # PortAudio starts
plug("ppx_headset")  # while the model loads
rig = AudioRig(AudioFactory())
config = ControllerConfig(mode="duplex", input_device="ppx_headset", output_device="ppx_headset")
try:
    mic, speaker = rig.acquire(config)  # the conversation opens its devices, once it has loaded
except Exception as e:
    out["error"] = str(e)
    print(json.dumps(out))
    raise SystemExit(0)
out["opened"] = [mic.device_name, speaker.device_name]
out["heard"] = mic.read_frame(timeout=5) is not None
plug("ppx_dock")  # while the streams are open: PortAudio is not started again
out["during"] = device_names()[0]  # the settings screen
out["still_heard"] = mic.read_frame(timeout=5) is not None and mic.active and speaker.active
rig.release()
out["after"] = device_names()  # the settings screen, once the conversation stopped
print(json.dumps(out))
"""


def test_a_device_plugged_in_during_the_load_is_listed_and_opened(pulse_null_sink, tmp_path):
    """The check of `--output-device` before the load started PortAudio: a device plugged in
    during the load (the settings file's, said to be missing before it) could not be opened by
    the conversation (`No input device matches`), nor chosen in the settings screen, until
    ppx-tui was started again."""
    done = subprocess.run(
        [sys.executable, "-c", PLUGGED_DURING_THE_LOAD], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
        env={**pulse_null_sink, "PYTHONPATH": str(ROOT), "PPX_TUI_LOG": str(tmp_path / "log")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["warned"] == [
        "settings.toml: No input device matches 'ppx_headset' (run `ppx-tui devices` to list "
        "them); plug it in, or choose another input device in the settings (press s) while the "
        "model loads."
    ]
    assert out.get("error") is None and out["opened"] == ["ppx_headset", "ppx_headset"], out
    assert out["heard"] and out["still_heard"], out  # the open streams were left alone
    assert "ppx_dock" not in out["during"] and "ppx_headset" in out["during"], out
    assert all("ppx_dock" in listed for listed in out["after"]), out


class FakeStream:
    """A stand-in for a PortAudio stream of `FakePortAudio`."""

    def __init__(self, portaudio: FakePortAudio, **kwargs: object) -> None:
        if portaudio.refuse:
            raise RuntimeError("Device unavailable [PaErrorCode -9985]")
        self.portaudio, self.active = portaudio, False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.portaudio.closed += 1


class FakePortAudio:
    """A stand-in for a started `sounddevice`: it lists the devices in `plugged` as they were at
    its last start; `_initialize` points fd 2 at /dev/null as sounddevice's does, and waits for
    `gate` when one is set."""

    PortAudioError = RuntimeError

    def __init__(self) -> None:
        self.plugged = ["pulse"]
        self.listed = list(self.plugged)
        self.restarts = 0
        self.closed = 0
        self.refuse = False
        self.gate: threading.Event | None = None
        self.fail: str | None = None
        self.default = types.SimpleNamespace(device=(0, 0))

    def _terminate(self) -> None:
        self.listed = []

    def _initialize(self) -> None:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        try:
            if self.gate is not None:
                self.gate.wait(30)
            if self.fail is not None:
                raise self.PortAudioError(self.fail)
            self.listed = list(self.plugged)
            self.restarts += 1
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    def query_devices(self) -> list[dict[str, object]]:
        return [
            {"name": n, "hostapi": 0, "max_input_channels": 1, "max_output_channels": 1,
             "default_samplerate": 24000.0}
            for n in self.listed
        ]  # fmt: skip

    def query_hostapis(self) -> list[dict[str, object]]:
        return [{"name": "ALSA"}]

    def check_input_settings(self, **kwargs: object) -> None:
        pass

    def InputStream(self, **kwargs: object) -> FakeStream:  # noqa: N802 - sounddevice's name
        return FakeStream(self, **kwargs)


@pytest.fixture
def fake_portaudio(monkeypatch, tmp_path) -> FakePortAudio:
    """PortAudio started, as the fake above; no hard exit asked yet."""
    fake = FakePortAudio()
    monkeypatch.setattr(devices, "_started", devices._Start(module=fake))  # type: ignore[arg-type]
    monkeypatch.setattr(stuck_exit, "_asked", False)
    monkeypatch.setenv("PPX_TUI_LOG", str(tmp_path / "ppx-tui.log"))
    return fake


def names() -> list[str]:
    return [d.name for d in devices.list_devices()]


def test_portaudio_is_started_again_only_while_none_of_its_streams_is_open(fake_portaudio):
    """Stopping PortAudio closes every stream it has open: a conversation's mic went dead."""
    fake = fake_portaudio
    mic = make_mic("pulse")
    mic.start()
    fake.plugged.append("USB Headset")
    assert devices.rescan() is False and fake.restarts == 0 and names() == ["pulse"]
    mic.close()
    assert devices.rescan() is True and fake.restarts == 1 and names() == fake.plugged
    fake.refuse = True  # a stream that could not be opened holds nothing
    with pytest.raises(AudioDeviceError, match="could not be opened"):
        make_mic("USB Headset").start()
    fake.plugged.append("Dock")
    assert devices.rescan() is True and names() == ["pulse", "USB Headset", "Dock"]
    assert devices._started.users == 0


def test_a_call_into_portaudio_waits_for_a_restart_under_way(fake_portaudio):
    """Listing the devices while PortAudio is stopped for its restart read what was freed."""
    fake = fake_portaudio
    fake.gate = threading.Event()
    fake.plugged.append("USB Headset")
    restarted: list[bool] = []
    restart = threading.Thread(target=lambda: restarted.append(devices.rescan()))
    restart.start()
    listed: list[list[str]] = []
    try:
        deadline = time.monotonic() + 10
        while fake.listed and time.monotonic() < deadline:  # (until `_terminate` ran)
            time.sleep(0.01)
        assert not fake.listed and restart.is_alive()  # the restart is under way
        lister = threading.Thread(target=lambda: listed.append(names()))
        lister.start()
        lister.join(0.3)
        assert lister.is_alive() and not listed  # it waits for the restart
    finally:
        fake.gate.set()
        restart.join(10)
    lister.join(10)
    assert restarted == [True] and listed == [["pulse", "USB Headset"]]


def test_a_restart_that_hangs_is_left_behind_and_said_as_a_start_is(fake_portaudio, monkeypatch):
    """The restart is a Pa_Initialize too: a hung sound server holds it for good."""
    fake = fake_portaudio
    fake.gate = threading.Event()
    monkeypatch.setattr(devices, "START_TIMEOUT_S", 0.3)
    starts = _starts(monkeypatch)
    silenced = _silencings(monkeypatch)
    stderr_before = os.fstat(2)
    began = time.monotonic()
    try:
        assert devices.rescan() is False
        assert 0.3 <= time.monotonic() - began < 3 and stuck_exit._asked
        after = os.fstat(2)  # the terminal, not sounddevice's /dev/null
        assert (after.st_dev, after.st_ino) == (stderr_before.st_dev, stderr_before.st_ino)
        null = os.stat(os.devnull)  # ALSA and JACK silenced before the terminal came back
        assert [(s.st_dev, s.st_ino) for s in silenced] == [(null.st_dev, null.st_ino)]
        for call in (devices.list_devices, lambda: make_mic("pulse")):
            with pytest.raises(AudioDeviceError) as info:
                call()
            assert str(info.value) == devices.START_HUNG
        assert devices.rescan() is False and starts == ["portaudio-rescan"]  # kept: no second
    finally:
        fake.gate.set()
        for thread in threading.enumerate():
            if thread.name == "ppx-portaudio-rescan":
                thread.join(10)


def test_a_restart_that_fails_is_one_sentence_kept(fake_portaudio):
    fake_portaudio.fail = (
        "Error initializing PortAudio: Unanticipated host error [PaErrorCode -9999]"
    )
    assert devices.rescan() is False
    with pytest.raises(AudioDeviceError) as info:
        devices.list_devices()
    assert str(info.value) == (
        "PortAudio could not be started again to list the sound devices (Error initializing "
        "PortAudio: Unanticipated host error [PaErrorCode -9999])."
    )


def test_no_restart_before_portaudio_started(monkeypatch):
    """Its start lists the devices there then; a rescan does not start it (nor import it)."""
    monkeypatch.setattr(devices, "_started", devices._Start())
    assert devices.rescan() is False and devices._started.module is None
    assert devices._started.failure is None
