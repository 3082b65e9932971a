"""The stream factory: the microphone and speaker a config names, as sound devices or WAV files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from personaplex_tui.audio import (
    AudioDeviceError,
    AudioInput,
    AudioOutput,
    DeviceInfo,
    FileMic,
    FileSpeaker,
    MicStream,
    SpeakerStream,
    find_device,
)
from personaplex_tui.audio.devices import Direction
from personaplex_tui.audio.devices import choose_rate as portaudio_rate
from personaplex_tui.audio.devices import list_devices as portaudio_devices
from personaplex_tui.audio.devices import rescan as portaudio_rescan
from personaplex_tui.audio.errors import NoDeviceError
from personaplex_tui.audio.streams import StreamFactory
from personaplex_tui.conversation.config import ControllerConfig

Stream = TypeVar("Stream", AudioInput, AudioOutput)

# What the chat can use without a sound card: a file in the device's stead.
FILE_FLAGS: dict[Direction, str] = {
    "input": "--input-file WAV (a recording as the mic)",
    "output": "--output-file WAV (the agent's voice written to a file)",
}


def without_devices(
    direction: Direction, devices: list[DeviceInfo], input_file: object, output_file: object
) -> str:
    """The sentence for a chat whose `direction` has no device at all (no sound card): the file
    flags to use instead, both of them when the other side has neither a device nor a file
    (`input_file`, `output_file`: the chat's, None where not given)."""
    files = {"input": input_file, "output": output_file}
    sides: tuple[Direction, ...] = ("input", "output")
    lacking = [s for s in sides if not files[s] and not any(d.channels(s) for d in devices)]
    what = "sound device" if len(lacking) == 2 else f"{direction} device"
    flags = " and ".join(FILE_FLAGS[side] for side in lacking)
    return (
        f"There is no {what}: PortAudio finds none (no sound card, or no sound server); to talk "
        f"without one, start the chat with {flags}."
    )


def start_or_close(stream: Stream) -> Stream:
    """Start `stream` and return it; if it fails to start, close it and re-raise."""
    try:
        stream.start()
    except BaseException:
        stream.close()
        raise
    return stream


def device_alive(stream: object) -> bool:
    """False once a device stream stopped by itself (unplugged, failed); file stand-ins live on."""
    return bool(getattr(stream, "active", True))


@dataclass
class AudioFactory:
    """Opens what a `ControllerConfig` names: `input_file` -> `FileMic`, else the `input_device`
    (None = default) as a `MicStream`; `output_file` -> `FileSpeaker`, else `output_device`.

    Every PortAudio entry point can be replaced, so tests run the real stream classes on fake
    devices: `input_stream` / `output_stream` stand in for `sounddevice.InputStream` /
    `OutputStream`, `devices` for the device list, `rate` for the sample-rate check.
    File stand-ins are paced in real time unless `realtime_files` is False; a played file
    ends the input (`file_end="end"`) or goes on as silence (`"silence"`, the app's default).
    Errors are `AudioDeviceError` / `AudioFileError` with one sentence naming the device or file.
    """

    input_stream: StreamFactory | None = None
    output_stream: StreamFactory | None = None
    devices: Callable[[], list[DeviceInfo]] | None = None
    rate: Callable[[DeviceInfo, Direction], int] | None = None
    realtime_files: bool = True
    file_end: Literal["end", "silence"] = "silence"
    latency: float | str | None = None
    # How long the agent counts as audible after its last sound left the player: the output
    # and input latencies plus one 80 ms mic block (a PulseAudio loopback measured ~0.32 s).
    echo_tail_s: float = 0.5

    def _find(
        self, spec: str | int | None, direction: Direction, config: ControllerConfig
    ) -> tuple[DeviceInfo, int]:
        devices = self.devices() if self.devices is not None else portaudio_devices()
        try:
            info = find_device(spec, direction, devices)
        except NoDeviceError:  # none to choose from: the chat's files instead
            sentence = without_devices(direction, devices, config.input_file, config.output_file)
            raise AudioDeviceError(sentence) from None
        rate = (
            self.rate(info, direction) if self.rate is not None else portaudio_rate(info, direction)
        )
        return info, rate

    def rescan(self, config: ControllerConfig) -> None:
        """Before devices are opened: PortAudio lists again those plugged in since it started
        (`devices.rescan`: while none of its streams is open), unless the device list is a
        stand-in or both sides are files."""
        if self.devices is None and not (config.input_file and config.output_file):
            portaudio_rescan()

    def open_mic(self, config: ControllerConfig) -> AudioInput:
        """The configured microphone, not started yet."""
        if config.input_file:
            return FileMic(config.input_file, realtime=self.realtime_files, after_end=self.file_end)
        info, rate = self._find(config.input_device, "input", config)
        return MicStream(
            rate,
            device=info.index,
            device_name=info.name,
            latency=self.latency,
            stream_factory=self.input_stream,
        )

    def open_speaker(self, config: ControllerConfig) -> AudioOutput:
        """The configured speaker, not started yet."""
        if config.output_file:
            return FileSpeaker(
                config.output_file, realtime=self.realtime_files, echo_tail_s=self.echo_tail_s
            )
        info, rate = self._find(config.output_device, "output", config)
        return SpeakerStream(
            rate,
            device=info.index,
            device_name=info.name,
            echo_tail_s=self.echo_tail_s,
            latency=self.latency,
            stream_factory=self.output_stream,
        )


def _input_key(config: ControllerConfig) -> tuple[object, object]:
    return ("file", config.input_file) if config.input_file else ("device", config.input_device)


def _output_key(config: ControllerConfig) -> tuple[object, object]:
    return ("file", config.output_file) if config.output_file else ("device", config.output_device)


class AudioRig:
    """The conversation's microphone and speaker, opened when a run starts.

    Sound devices are closed when a run ends (the mic is not held open between conversations);
    file stand-ins stay open for the whole app session, so a played file goes on where it was
    and a recorded one is not overwritten by the next run. A changed setting reopens its side.
    """

    def __init__(self, factory: AudioFactory | None = None) -> None:
        self.factory = factory if factory is not None else AudioFactory()
        self.mic: AudioInput | None = None
        self.speaker: AudioOutput | None = None
        self._mic_key: tuple[object, object] | None = None
        self._speaker_key: tuple[object, object] | None = None
        self.fresh_mic = False  # the last `acquire` opened the mic (rather than kept it)

    def acquire(self, config: ControllerConfig) -> tuple[AudioInput, AudioOutput]:
        """Open (or keep) the configured mic and speaker, started. Raises AudioDeviceError or
        AudioFileError; on failure nothing is left open that was opened here."""
        if self.mic is not None and self._mic_key != _input_key(config):
            self._close_mic()
        if self.speaker is not None and self._speaker_key != _output_key(config):
            self._close_speaker()
        self.fresh_mic = self.mic is None
        try:
            if self.mic is None or self.speaker is None:  # (a device plugged in meanwhile)
                self.factory.rescan(config)
            if self.mic is None:
                self.mic = start_or_close(self.factory.open_mic(config))
                self._mic_key = _input_key(config)
            if self.speaker is None:
                self.speaker = start_or_close(self.factory.open_speaker(config))
                self._speaker_key = _output_key(config)
        except BaseException:
            self.release()
            raise
        return self.mic, self.speaker

    def release(self) -> None:
        """A run ended: close the sound devices, keep the file stand-ins."""
        if self._mic_key is not None and self._mic_key[0] == "device":
            self._close_mic()
        if self._speaker_key is not None and self._speaker_key[0] == "device":
            self._close_speaker()

    def close(self) -> None:
        """Close everything (files are finished); safe to call twice."""
        try:
            self._close_mic()
        finally:
            self._close_speaker()

    def _close_mic(self) -> None:
        mic, self.mic, self._mic_key = self.mic, None, None
        _close_quietly(mic)

    def _close_speaker(self) -> None:
        speaker, self.speaker, self._speaker_key = self.speaker, None, None
        _close_quietly(speaker)


def _close_quietly(stream: AudioInput | AudioOutput | None) -> None:
    if stream is not None:
        try:
            stream.close()
        except Exception:  # a vanished device may fail to close; it is gone either way
            pass
