"""The real PortAudio path end to end, on a virtual sound card.

A private PulseAudio daemon with a null sink is started; PortAudio reaches it through ALSA's
`pulse` device. Speech is played into the sink through `SpeakerStream` (opened at 48 kHz, so
the resampling path runs too) while `MicStream` records the sink's monitor. The recording
must hold the speech. Needs the `pulseaudio` and `libasound2-plugins` packages (`./dev
system-deps` installs them). The check runs in a subprocess because PortAudio lists its
devices once, when `sounddevice` is first imported.
"""

import json
import subprocess
import sys
from pathlib import Path

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
