"""Streaming utterance segmentation for turn-based mode: feed 24 kHz frames, get utterances."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.resample import StreamResampler
from personaplex_tui.audio.vad import CHUNK, VAD_RATE, SileroVad


@dataclass(frozen=True)
class UtteranceStarted:
    """Speech began `start_s` seconds into the stream (reported once it lasted `min_speech_s`)."""

    start_s: float


@dataclass(frozen=True)
class UtteranceEnded:
    """An utterance ended; `audio` is 24 kHz mono float32 with the pre- and post-roll."""

    start_s: float
    end_s: float
    audio: np.ndarray = field(repr=False)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


SegmentEvent = UtteranceStarted | UtteranceEnded


class UtteranceSegmenter:
    """Finds utterances in a stream of 24 kHz frames with Silero VAD.

    A chunk is speech when its probability reaches `threshold`; inside an utterance only a
    probability under `threshold - 0.15` counts as silence (hysteresis). The utterance ends
    after `end_silence_s` of silence; one whose speech spans less than `min_speech_s` is
    ignored (a cough, a click). `max_utterance_s` forces an end. Times are seconds since the
    first sample fed (or the last `reset`); the audio of an utterance runs from
    `start_s - pre_roll_s` to `end_s + post_roll_s`.
    """

    def __init__(
        self,
        vad: SileroVad | None = None,
        *,
        threshold: float = 0.5,
        end_silence_s: float = 1.0,
        min_speech_s: float = 0.3,
        pre_roll_s: float = 0.2,
        post_roll_s: float = 0.2,
        max_utterance_s: float = 60.0,
    ) -> None:
        self.vad = vad if vad is not None else SileroVad()
        self.threshold = threshold
        self.neg_threshold = max(0.01, threshold - 0.15)
        self.end_silence_s = end_silence_s
        self.min_speech_s = min_speech_s
        self.pre_roll_s = pre_roll_s
        self.post_roll_s = post_roll_s
        self.max_utterance_s = max_utterance_s
        self._resampler = StreamResampler(SAMPLE_RATE, VAD_RATE)
        self.reset()

    def reset(self) -> None:
        """Start over: a new stream whose time starts at 0."""
        self.vad.reset()
        self._resampler.reset()
        self._pending16 = np.zeros(0, dtype=np.float32)
        self._chunks = 0  # 16 kHz chunks scored so far
        self._history: list[np.ndarray] = []  # 24 kHz audio kept for pre-roll and utterances
        self._history_start = 0  # absolute 24 kHz sample index of _history[0][0]
        self._fed = 0  # 24 kHz samples fed
        self._start: float | None = None  # current utterance's speech start (s)
        self._last_speech_end = 0.0
        self._announced = False

    @property
    def in_utterance(self) -> bool:
        """True once an utterance has been announced and until it ends."""
        return self._announced

    @property
    def time_s(self) -> float:
        """Seconds of audio fed since the start."""
        return self._fed / SAMPLE_RATE

    def feed(self, frame: np.ndarray) -> list[SegmentEvent]:
        """Take the next 24 kHz samples (any length; frames of 1920 normally)."""
        frame = np.asarray(frame, dtype=np.float32)
        self._history.append(frame.copy())
        self._fed += len(frame)
        pcm16 = self._resampler.process(frame)
        self._pending16 = np.concatenate([self._pending16, pcm16])
        events: list[SegmentEvent] = []
        lead = self._resampler.latency_samples  # the 16 kHz stream is late by this much
        while len(self._pending16) >= CHUNK:
            chunk, self._pending16 = self._pending16[:CHUNK], self._pending16[CHUNK:]
            p = self.vad.probability(chunk)
            t0 = (self._chunks * CHUNK - lead) / VAD_RATE
            self._chunks += 1
            self._score(max(0.0, t0), max(0.0, t0 + CHUNK / VAD_RATE), p, events)
        if self._start is None:
            self._trim_history()
        return events

    def finish(self) -> list[SegmentEvent]:
        """End the stream now: returns the utterance in progress, if it is long enough."""
        events: list[SegmentEvent] = []
        if self._start is not None:
            self._close(events)
        return events

    def _score(self, t0: float, t1: float, p: float, events: list[SegmentEvent]) -> None:
        if self._start is None:
            if p >= self.threshold:
                self._start, self._last_speech_end = t0, t1
            return
        if p >= self.neg_threshold:
            if p >= self.threshold or t0 <= self._last_speech_end:
                self._last_speech_end = t1
        if not self._announced and self._last_speech_end - self._start >= self.min_speech_s:
            self._announced = True
            events.append(UtteranceStarted(self._start))
        if (
            t1 - self._last_speech_end >= self.end_silence_s
            or t1 - self._start >= self.max_utterance_s
        ):
            self._close(events)

    def _close(self, events: list[SegmentEvent]) -> None:
        start, end = self._start, self._last_speech_end
        assert start is not None
        if end - start >= self.min_speech_s:
            if not self._announced:
                events.append(UtteranceStarted(start))
            events.append(UtteranceEnded(start, end, self._audio(start, end)))
        self._start = None
        self._announced = False
        self._trim_history()

    def _audio(self, start: float, end: float) -> np.ndarray:
        audio = np.concatenate(self._history) if self._history else np.zeros(0, np.float32)
        a = max(0, round((start - self.pre_roll_s) * SAMPLE_RATE) - self._history_start)
        b = max(a, round((end + self.post_roll_s) * SAMPLE_RATE) - self._history_start)
        return audio[a:b]

    def _trim_history(self) -> None:
        """Outside an utterance keep only enough audio for the next one's pre-roll."""
        keep = round((self.pre_roll_s + 1.0) * SAMPLE_RATE)
        total = self._fed - self._history_start
        while self._history and total - len(self._history[0]) >= keep:
            total -= len(self._history[0])
            self._history_start += len(self._history.pop(0))
