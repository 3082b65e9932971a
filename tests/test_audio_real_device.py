"""The real PortAudio path end to end, on a virtual sound card.

A private PulseAudio daemon with a null sink is started; PortAudio reaches it through ALSA's
`pulse` device. Speech is played into the sink through `SpeakerStream` (opened at 48 kHz, so
the resampling path runs too) while `MicStream` records the sink's monitor. The recording
must hold the speech. Needs the `pulseaudio` and `libasound2-plugins` packages (`./dev
system-deps` installs them). The check runs in a subprocess because PortAudio lists its
devices once, when `sounddevice` is first imported.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "data" / "audio" / "shipping.wav"

CHECK = r"""
import json, sys
import numpy as np
from personaplex_tui.audio import SpeakerStream, find_device, list_devices, make_mic, read_audio

devices = list_devices()
speech = read_audio(sys.argv[1]).pcm
mic = make_mic("pulse")
out = find_device("pulse", "output", devices)
spk = SpeakerStream(48000, device=out.index, device_name=out.name)
mic.start()
frames = [mic.read_frame(timeout=2.0) for _ in range(5)]  # the capture runs before playback
spk.start()
for i in range(0, len(speech), 1920):
    assert spk.write_frame(speech[i : i + 1920], timeout=1.0)
spk.flush()
for _ in range(int((len(speech) / 24000 + 1.2) / 0.08)):
    f = mic.read_frame(timeout=2.0)
    if f is None:
        break
    frames.append(f)
drained = spk.drain(timeout=5.0)
stats = spk.stats()
mic.close()
spk.close()
rec = np.concatenate(frames)
size = 1 << (len(rec) + len(speech)).bit_length()
xc = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(speech, size)), size)
lag = int(np.argmax(xc[: len(rec) - len(speech) + 1]))
seg = rec[lag : lag + len(speech)]
corr = float(np.corrcoef(seg, speech[: len(seg)])[0, 1])
print(json.dumps({
    "devices": [d.name for d in devices],
    "mic_rate": mic.device_rate,
    "speaker_rate": spk.device_rate,
    "frames": len(frames),
    "lag_s": lag / 24000,
    "corr": corr,
    "gain": float(np.std(seg) / np.std(speech[: len(seg)])),
    "underruns": stats.underruns,
    "mic_overruns": mic.overruns,
    "drained": drained,
}))
"""


@pytest.fixture
def pulse_null_sink():
    """A private PulseAudio daemon whose default sink is a null sink; yields the client env."""
    daemon = shutil.which("pulseaudio")
    assert daemon, "pulseaudio is not installed: run `./dev system-deps` (apt: pulseaudio)"
    plugin_dirs = [
        Path("/usr/lib/x86_64-linux-gnu/alsa-lib"),
        Path("/usr/lib/aarch64-linux-gnu/alsa-lib"),
        Path("/usr/lib/alsa-lib"),
    ]
    assert any((d / "libasound_module_pcm_pulse.so").exists() for d in plugin_dirs), (
        "ALSA's pulse plugin is missing: run `./dev system-deps` (apt: libasound2-plugins)"
    )
    home = Path(tempfile.mkdtemp(prefix="ppx-pa-"))
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    socket = runtime / "native"
    script = home / "null.pa"
    script.write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}\n"
        "load-module module-null-sink sink_name=ppx_null rate=48000 channels=2\n"
        "set-default-sink ppx_null\n"
        "set-default-source ppx_null.monitor\n"
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
        yield {**env, "PULSE_SERVER": f"unix:{socket}"}
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(home, ignore_errors=True)


def test_play_into_a_null_sink_and_record_its_monitor(pulse_null_sink):
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(SPEECH)],
        cwd=ROOT, env=pulse_null_sink, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(result.stdout.strip().splitlines()[-1])
    assert "pulse" in r["devices"]
    assert r["speaker_rate"] == 48000 and r["mic_rate"] in (24000, 48000, 44100)
    assert r["drained"] and r["underruns"] == 0 and r["mic_overruns"] == 0
    assert r["corr"] > 0.95, r  # the recording is the speech that was played
    assert 0.8 < r["gain"] < 1.2, r
    assert 0.0 < r["lag_s"] < 2.0, r
