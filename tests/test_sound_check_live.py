"""The live sound check when its devices go quiet mid-check: what PortAudio tells, said."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from personaplex_tui.audio.echo_metrics import clipped_samples
from personaplex_tui.audio.resample import resample
from personaplex_tui.commands.sound_check_live import (
    CLOSE_TIMEOUT_S,
    READ_TIMEOUT_S,
    no_audio_sentence,
    stuck_sentence,
)
from tests.conversation_fakes import FakeInputStream, FakeOutputStream
from tests.pulse_server import server_pid

ROOT = Path(__file__).resolve().parents[1]


def start_check(pulse_room: dict) -> subprocess.Popen:
    """`sound-check` on the private server's devices, 1.5 s into its test signal."""
    check = subprocess.Popen(
        [sys.executable, "-m", "personaplex_tui", "sound-check",
         "--input-device", "pulse", "--output-device", "pulse"],
        cwd=ROOT, env={**pulse_room, "PYTHONPATH": str(ROOT)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert check.stderr is not None
        first = check.stderr.readline()
        assert first.startswith("Playing a 10 s test signal on 'pulse'"), first
    except BaseException:
        check.kill()
        check.wait()
        raise
    time.sleep(1.5)
    return check


def test_the_sound_server_quitting_mid_check_is_said_as_such(pulse_room):
    """`pactl exit` 1.5 s into the test signal: the check said "The input device 'pulse'
    delivered no audio for 2 s; is it in use by another program?"."""
    check = start_check(pulse_room)
    try:
        subprocess.run(["pactl", "exit"], env=pulse_room, check=True, timeout=10)
        out, rest = check.communicate(timeout=60)
    finally:
        if check.poll() is None:
            check.kill()
            check.wait()
    assert check.returncode == 2, rest
    assert out == "" and len(rest.strip().splitlines()) == 1, rest
    assert rest.startswith(
        "ppx-tui: The input device 'pulse' and the output device 'pulse' both stopped "
    ), rest
    assert "as it does when the sound server they go through quits or restarts" in rest
    assert "another program" not in rest


@pytest.mark.parametrize(
    ("interrupt_after_s", "code", "sentence"),
    [(None, 2, stuck_sentence("pulse", "pulse")), (READ_TIMEOUT_S + 1.0, 130, "interrupted.")],
)
def test_a_sound_server_that_hangs_mid_check_ends_it_in_seconds(
    pulse_room, interrupt_after_s, code, sentence
):
    """SIGSTOP on the server 1.5 s into the test signal (it hangs, it does not die): the mic
    went quiet, and closing the streams hung in PortAudio's Pa_StopStream for good, with no
    message, and Ctrl+C (its handler never ran) did not end it either. Now the streams are left
    behind after CLOSE_TIMEOUT_S, and a Ctrl+C while it waits for them ends it at once."""
    pid = server_pid(pulse_room)
    check = start_check(pulse_room)
    try:
        os.kill(pid, signal.SIGSTOP)
        hung = time.monotonic()
        if interrupt_after_s is not None:  # while it waits for the streams to close
            time.sleep(interrupt_after_s)
            check.send_signal(signal.SIGINT)
        out, rest = check.communicate(timeout=30)
        took = time.monotonic() - hung
    finally:
        os.kill(pid, signal.SIGCONT)
        if check.poll() is None:
            check.kill()
            check.wait()
    assert check.returncode == code, rest
    assert out == "" and rest == f"ppx-tui: {sentence}\n", rest
    assert took < READ_TIMEOUT_S + CLOSE_TIMEOUT_S + 3, took


@pytest.mark.parametrize(
    ("mic_running", "speaker_running", "heard_s", "start"),
    [
        (False, False, 4.0, "The input device 'USB Mic' and the output device 'Speakers' both "
         "stopped 4.0 s into the check: PortAudio ended their streams"),
        (False, True, 2.4, "The input device 'USB Mic' stopped 2.4 s into the check: PortAudio "
         "ended its stream, as it does when the device is unplugged"),
        (True, True, 3.2, "The input device 'USB Mic' delivered no audio for 2 s, 3.2 s into "
         "the check, though its stream is still open"),
        (True, False, 0.0, "The input device 'USB Mic' opened but delivered no audio in its "
         "first 2 s, though its stream is running"),
    ],
)  # fmt: skip
def test_a_microphone_gone_quiet_is_told_apart_by_what_portaudio_says(
    mic_running, speaker_running, heard_s, start
):
    """`active` is PortAudio's Pa_IsStreamActive: 0 once the host API's thread ended the stream
    (a PortAudioError from it reads as stopped too, `_DeviceStream.active`)."""
    sentence = no_audio_sentence(
        "USB Mic",
        "Speakers",
        mic_running=mic_running,
        speaker_running=speaker_running,
        heard_s=heard_s,
    )
    assert sentence.startswith(start) and sentence.endswith(".")
    assert "another program" not in sentence and "\n" not in sentence


@pytest.mark.parametrize("args", [[], ["--json"]], ids=["text", "json"])
def test_a_report_to_a_full_disk_is_one_sentence(pulse_room, args):
    """`sound-check > /dev/full` printed its report with print(): a traceback, exit 1."""
    with open("/dev/full", "w") as full:
        check = subprocess.run(
            [sys.executable, "-m", "personaplex_tui", "sound-check", *args,
             "--input-device", "pulse", "--output-device", "pulse"],
            cwd=ROOT, env={**pulse_room, "PYTHONPATH": str(ROOT)}, text=True,
            stdout=full, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
    assert check.returncode == 2 and "Traceback" not in check.stderr, check.stderr
    assert check.stderr.strip().splitlines()[-1] == (
        "ppx-tui: Could not write to the standard output: No space left on device."
    )


def _at_48k(kind: str) -> np.ndarray:
    """12 blocks (0.96 s) of a 48 kHz microphone, then silence: a full-scale 15 kHz tone (it
    clips; resampled to 24 kHz it is gone, above 12 kHz), or a square wave at 0.95 (it does not;
    resampled, it rings over full scale)."""
    t = np.arange(12 * 3840) / 48000
    if kind == "tone":
        return np.sin(2 * np.pi * 15000 * t).astype(np.float32)
    return (0.95 * np.sign(np.sin(2 * np.pi * 440 * t))).astype(np.float32)


@pytest.mark.parametrize("kind", ["tone", "square"])
def test_the_live_check_counts_clipping_at_the_microphones_own_rate(
    kind, monkeypatch, tmp_path, capsys
):
    """A 48 kHz mic: clipping was counted after resampling to 24 kHz, which moves peaks: a
    clipping tone above 12 kHz was 'no clipping', a square wave under full scale 'clipped'."""
    from personaplex_tui.audio import streams
    from personaplex_tui.cli import main

    mic_pcm = _at_48k(kind)
    at_24k = clipped_samples(resample(mic_pcm, 48000, 24000))
    assert (clipped_samples(mic_pcm) > 0) == (kind == "tone") == (at_24k == 0)  # the premise
    mics: list[streams.MicStream] = []

    def make_mic(device, **_):
        mics.append(
            streams.MicStream(
                48000,
                device_name="Fake 48k",
                capacity_frames=400,  # (none dropped: all of it is read)
                stream_factory=lambda **kw: FakeInputStream(mic_pcm, 0.01, **kw),
            )
        )
        return mics[-1]

    def make_speaker(device, **_):
        return streams.SpeakerStream(
            24000,
            device_name="Fake Out",
            stream_factory=lambda **kw: FakeOutputStream(0.01, True, **kw),
        )

    monkeypatch.setenv("PPX_TUI_LOG", str(tmp_path / "ppx-tui.log"))
    monkeypatch.setattr(streams, "make_mic", make_mic)
    monkeypatch.setattr(streams, "make_speaker", make_speaker)
    assert main(["sound-check", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert mics[0].overruns == 0
    assert report["clipped_samples"] == clipped_samples(mic_pcm)
    said = " ".join(report["verdict"])
    assert ("The microphone clipped (" in said) == (kind == "tone")
