"""Keeping the agent's voice out of the mic for one run: the echo canceller around a sound
device's mic, fed what the speaker's player plays (a tap in its callback), or, when it is off
or cannot load, mute-while-speaking."""

from __future__ import annotations

from dataclasses import dataclass

from personaplex_tui.audio import SAMPLE_RATE, AudioInput, AudioOutput, FileMic
from personaplex_tui.audio.aec import EchoCanceller, ProcessingOptions
from personaplex_tui.audio.cancelling_mic import (
    CancellingMic,
    ReferencingSpeaker,
    stream_latency_s,
)
from personaplex_tui.audio.echo_metrics import EchoMeter
from personaplex_tui.audio.errors import CancellerUnavailableError
from personaplex_tui.audio.far_end import FarEndTimeline, PlayedTap
from personaplex_tui.conversation.config import ControllerConfig
from personaplex_tui.events import EchoStats

FALLBACK = "the mic is muted while the agent speaks instead"


@dataclass
class EchoPath:
    """The mic and speaker a run uses, and how echo is handled on them."""

    mic: AudioInput
    speaker: AudioOutput
    meter: EchoMeter | None = None  # set while cancelling
    fallback: bool = False  # the canceller was wanted but could not load: mute instead
    player: object = None  # the speaker's player, whose tap feeds the canceller

    def stats(self, config: ControllerConfig) -> EchoStats:
        if self.meter is not None:
            r = self.meter.reading()
            return EchoStats("cancel", r.delay_ms, r.erle_db, r.processing_ms)
        return EchoStats("mute" if self.fallback or config.echo_suppression else "off")

    def close(self) -> None:
        """Stop the canceller's thread (the devices are their owner's to close)."""
        if self.player is not None:
            self.player.tap = None  # type: ignore[attr-defined]
        if isinstance(self.mic, CancellingMic):
            self.mic.close()


def echo_path(
    mic: AudioInput, speaker: AudioOutput, config: ControllerConfig
) -> tuple[EchoPath, str]:
    """Wrap a sound-device mic and its speaker in the echo canceller when it is on; returns the
    path and a sentence for the user when the canceller could not load ("" otherwise). A file
    stand-in for the mic hears no speaker: it is left as it is."""
    if not config.echo_cancellation or isinstance(mic, FileMic):
        return EchoPath(mic, speaker), ""
    options = ProcessingOptions(
        noise_suppression=config.noise_suppression, auto_gain=config.auto_gain
    )
    try:
        canceller = EchoCanceller(options)
    except CancellerUnavailableError as e:
        return EchoPath(mic, speaker, fallback=True), f"{str(e).rstrip('.')}; {FALLBACK}."
    timeline = FarEndTimeline()
    meter = EchoMeter()
    player = getattr(speaker, "player", None)
    if player is None:  # no player to tap: place the agent's frames by the clock instead
        wrapped = CancellingMic(mic, timeline, canceller, meter)
        wrapped.start()
        return EchoPath(wrapped, ReferencingSpeaker(speaker, timeline), meter), ""
    rate = int(getattr(speaker, "device_rate", 0) or SAMPLE_RATE)
    tap = PlayedTap(timeline, rate, stream_latency_s(speaker))
    wrapped = CancellingMic(mic, timeline, canceller, meter, tap=tap)
    wrapped.start()
    player.tap = tap
    return EchoPath(wrapped, speaker, meter, player=player), ""
