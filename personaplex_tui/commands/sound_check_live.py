"""The live `ppx-tui sound-check`: play the test signal through the speaker while recording the
microphone, through the same echo path the app uses, and say whether duplex will work."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

import numpy as np

from personaplex_tui.audio.aec import EchoCanceller, ProcessingOptions
from personaplex_tui.audio.cancelling_mic import CancellingMic, stream_latency_s
from personaplex_tui.audio.echo_check import LiveReport, analyse, check_signal
from personaplex_tui.audio.errors import AudioDeviceError, NoDeviceError
from personaplex_tui.audio.far_end import FarEndTimeline, PlayedTap
from personaplex_tui.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from personaplex_tui.commands.common import print_out, status
from personaplex_tui.stop_signals import POLICY
from personaplex_tui.stuck_exit import run_in_time

if TYPE_CHECKING:
    from personaplex_tui.audio.streams import MicStream, SpeakerStream

READ_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = 3.0  # PortAudio stops a stream in well under a second


class _TappedTimeline(FarEndTimeline):
    """Keeps a copy of every far-end frame handed to the canceller, for the report."""

    def __init__(self) -> None:
        super().__init__(capacity_s=30.0)
        self.taken: list[np.ndarray] = []

    def take(self, start: int, n: int) -> np.ndarray:
        far = super().take(start, n)
        self.taken.append(far)
        return far


def run_live(args: argparse.Namespace, options: ProcessingOptions) -> int:
    """The live check; PortAudio's and ALSA's own lines go to the log, not the terminal."""
    from personaplex_tui.commands.device_noise import device_noise_to_log

    with device_noise_to_log():
        return _run_live(args, options)


def _run_live(args: argparse.Namespace, options: ProcessingOptions) -> int:
    from personaplex_tui.audio.streams import make_mic, make_speaker

    canceller = EchoCanceller(options)  # CancellerUnavailableError: one sentence, exit 2
    signal = check_signal()
    frames = len(signal) // FRAME_SAMPLES
    try:
        mic = make_mic(args.input_device)
        speaker = make_speaker(args.output_device)
    except NoDeviceError as e:  # no sound card: the offline check needs none
        raise AudioDeviceError(
            f"{str(e).rstrip('.')}; without one, sound-check runs offline on two recordings: "
            "--far WAV --mic WAV --output WAV."
        ) from None
    status(
        f"Playing a {frames * FRAME_SAMPLES / SAMPLE_RATE:.0f} s test signal on "
        f"'{speaker.device_name}' and recording '{mic.device_name}'..."
    )
    timeline = _TappedTimeline()
    raw: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    try:
        speaker.start()
        tap = PlayedTap(timeline, speaker.device_rate, stream_latency_s(speaker))
        speaker.player.tap = tap
        cancelling = CancellingMic(mic, timeline, canceller, tap=tap)
        cancelling.start()
        out = speaker
        try:
            # The whole signal is queued at once: the device plays it without a gap whatever
            # this machine's load; the player's tap hands the canceller what it played.
            for k in range(frames):
                out.write_frame(signal[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES], 1.0)
            out.flush()
            for _ in range(frames):
                frame = cancelling.read_frame(timeout=READ_TIMEOUT_S)
                if frame is None:  # asked here, before the streams are closed
                    raise AudioDeviceError(
                        no_audio_sentence(
                            mic.device_name,
                            speaker.device_name,
                            mic_running=mic.active,
                            speaker_running=speaker.active,
                            heard_s=len(clean) * FRAME_SAMPLES / SAMPLE_RATE,
                        )
                    )
                clean.append(frame)
                raw.append(cancelling.last_raw if cancelling.last_raw is not None else frame)
        finally:
            cancelling.close()
    finally:
        _close_streams(mic, speaker)
    far = np.concatenate(timeline.taken)
    report = analyse(
        signal,
        far,
        np.concatenate(raw),
        np.concatenate(clean),
        mic.device_name,
        speaker.device_name,
        clipped=mic.clipped_samples,  # counted at the device's rate, before resampling
    )
    report.canceller = canceller.name
    if args.json:
        print_out(json.dumps(report.as_json(), indent=2))
    else:
        _print(report)
    return 0


def _close_streams(mic: MicStream, speaker: SpeakerStream) -> None:
    """Close both streams, giving up after CLOSE_TIMEOUT_S: a sound server that hangs (stopped,
    not dead) holds PortAudio's Pa_StopStream for good; the process then ends without waiting
    for it (`stuck_exit`), and this sentence replaces the one on its way (the mic's silence),
    but not a stop signal's ("interrupted.")."""

    def close() -> None:
        try:
            mic.close()
        finally:
            speaker.close()

    if not run_in_time(close, CLOSE_TIMEOUT_S, "sound-check-close") and POLICY.received is None:
        raise AudioDeviceError(stuck_sentence(mic.device_name, speaker.device_name))


def stuck_sentence(mic: str, speaker: str) -> str:
    """The streams did not close within CLOSE_TIMEOUT_S."""
    return (
        f"The sound server or the devices stopped responding: the streams of the input device "
        f"'{mic}' and the output device '{speaker}' could not be closed within "
        f"{CLOSE_TIMEOUT_S:.0f} s; restart the sound server or replug the devices, and run the "
        "check again."
    )


def no_audio_sentence(
    mic: str, speaker: str, *, mic_running: bool, speaker_running: bool, heard_s: float
) -> str:
    """Why the microphone went quiet for READ_TIMEOUT_S mid-check, as far as PortAudio tells.

    A device that could not be opened never gets here (the streams' own sentence says so). A
    stream PortAudio ended by itself (`active` False: its host API thread hit an error, as when
    a device is unplugged or the sound server quits; a dead PulseAudio ends both streams at
    once) is told from one still running that delivers nothing (a driver or a sound server that
    stopped answering); the audio delivered before it (`heard_s`) tells a mic that stopped from
    one that never started.
    """
    waited = f"{READ_TIMEOUT_S:.0f} s"
    if not mic_running and not speaker_running:
        return (
            f"The input device '{mic}' and the output device '{speaker}' both stopped "
            f"{heard_s:.1f} s into the check: PortAudio ended their streams, as it does when the "
            "sound server they go through quits or restarts, or the devices are unplugged; run "
            "the check again once it is back."
        )
    if not mic_running:
        return (
            f"The input device '{mic}' stopped {heard_s:.1f} s into the check: PortAudio ended "
            "its stream, as it does when the device is unplugged or its sound server quits; "
            "plug it back in or choose another input device (`ppx-tui devices` lists them), and "
            "run the check again."
        )
    if heard_s > 0:
        return (
            f"The input device '{mic}' delivered no audio for {waited}, {heard_s:.1f} s into the "
            "check, though its stream is still open: its driver or the sound server stopped "
            "answering; run the check again."
        )
    return (
        f"The input device '{mic}' opened but delivered no audio in its first {waited}, though "
        "its stream is running: its driver or the sound server is not answering; run the check "
        "again, or choose another input device (`ppx-tui devices` lists them)."
    )


def _print(r: LiveReport) -> None:
    """The report as sentences on stdout (OutputError where it cannot be written)."""
    print_out(f"Microphone: {r.input_device}    Speaker: {r.output_device}")
    clipping = f", {r.clipped_samples} clipped samples." if r.clipped_samples else ", no clipping."
    print_out(
        f"Noise floor: {r.noise_floor_dbfs:.0f} dBFS; mic peak {r.mic_peak_dbfs:.0f} dBFS{clipping}"
    )
    if r.round_trip_ms is not None:
        left = "" if r.residual_ms is None else f"; {r.residual_ms:.0f} ms left after alignment"
        print_out(f"Round-trip delay: {r.round_trip_ms:.0f} ms{left}.")
    if r.erle_db is not None:
        print_out(
            f"Echo: {r.echo_before_dbfs:.0f} dBFS before, {r.echo_after_dbfs:.0f} dBFS after "
            f"cancellation ({r.erle_db:.0f} dB removed)."
        )
    if r.canceller:
        print_out(f"Canceller: {r.canceller}.")
    for sentence in r.verdict:
        print_out(sentence)
    print_out(f"Use: {r.settings}")
