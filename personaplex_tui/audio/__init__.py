"""Audio between the sound devices and the engine: streams, player, meters, VAD, files.

Importing this package loads neither PortAudio (`sounddevice`) nor onnxruntime: they are
imported when a device is listed or opened, or a VAD is made.
"""

from personaplex_tui.audio.audio_file import AudioClip, read_audio
from personaplex_tui.audio.audio_writing import write_wav
from personaplex_tui.audio.device_table import devices_table
from personaplex_tui.audio.devices import DeviceInfo, find_device, list_devices
from personaplex_tui.audio.echo import EchoSuppressor
from personaplex_tui.audio.errors import AudioDeviceError, AudioFileError, VadUnavailableError
from personaplex_tui.audio.file_streams import FileMic, FileSpeaker
from personaplex_tui.audio.frames import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    PREBUFFER_FRAMES,
    SAMPLE_RATE,
    split_frames,
)
from personaplex_tui.audio.levels import LevelMeter, LevelMeters
from personaplex_tui.audio.player import Player
from personaplex_tui.audio.protocols import AudioInput, AudioOutput
from personaplex_tui.audio.recorder import RecordingPaths, SessionRecorder, new_recording_folder
from personaplex_tui.audio.resample import StreamResampler, resample
from personaplex_tui.audio.ring_buffer import RingBuffer
from personaplex_tui.audio.segmenter import UtteranceEnded, UtteranceSegmenter, UtteranceStarted
from personaplex_tui.audio.streams import MicStream, SpeakerStream, make_mic, make_speaker
from personaplex_tui.audio.vad import SileroVad
from personaplex_tui.audio.wav_writer import WavWriteError, WavWriter

__all__ = [
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "PREBUFFER_FRAMES",
    "SAMPLE_RATE",
    "AudioClip",
    "AudioDeviceError",
    "AudioFileError",
    "AudioInput",
    "AudioOutput",
    "DeviceInfo",
    "EchoSuppressor",
    "FileMic",
    "FileSpeaker",
    "LevelMeter",
    "LevelMeters",
    "MicStream",
    "Player",
    "RecordingPaths",
    "RingBuffer",
    "SessionRecorder",
    "SileroVad",
    "SpeakerStream",
    "StreamResampler",
    "UtteranceEnded",
    "UtteranceSegmenter",
    "UtteranceStarted",
    "VadUnavailableError",
    "WavWriteError",
    "WavWriter",
    "devices_table",
    "find_device",
    "list_devices",
    "make_mic",
    "make_speaker",
    "new_recording_folder",
    "read_audio",
    "resample",
    "split_frames",
    "write_wav",
]
