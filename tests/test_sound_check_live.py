"""The live sound check when its devices go quiet mid-check: what PortAudio tells, said."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from personaplex_tui.commands.sound_check_live import (
    CLOSE_TIMEOUT_S,
    READ_TIMEOUT_S,
    no_audio_sentence,
    stuck_sentence,
)
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
