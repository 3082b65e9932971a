"""Conversation control: the turn-based and full-duplex controllers joining audio and engine, the
app-level `ConversationController` (the `ConversationAPI` the TUI drives), recording and logs."""

from personaplex_tui.conversation.audio_factory import AudioFactory, AudioRig, device_alive
from personaplex_tui.conversation.config import (
    AUDIO_FIELDS,
    ControllerConfig,
    Mode,
    SettingsError,
)
from personaplex_tui.conversation.controller import ConversationController, create_conversation
from personaplex_tui.conversation.duplex import DuplexController
from personaplex_tui.conversation.recording import ConversationRecording, RecordingError
from personaplex_tui.conversation.run import MicReader, RunContext, RunEnd, Telemetry
from personaplex_tui.conversation.timing_log import TimingLog, TimingLogError
from personaplex_tui.conversation.transcript_writer import TranscriptWriter
from personaplex_tui.conversation.turn import Heard, TurnController

__all__ = [
    "AUDIO_FIELDS",
    "AudioFactory",
    "AudioRig",
    "ControllerConfig",
    "ConversationController",
    "ConversationRecording",
    "DuplexController",
    "Heard",
    "MicReader",
    "Mode",
    "RecordingError",
    "RunContext",
    "RunEnd",
    "SettingsError",
    "Telemetry",
    "TimingLog",
    "TimingLogError",
    "TranscriptWriter",
    "TurnController",
    "create_conversation",
    "device_alive",
]
