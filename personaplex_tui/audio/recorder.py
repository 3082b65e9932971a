"""Records a conversation's two tracks, the user's microphone and the agent's voice, as WAVs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.wav_writer import WavWriter


@dataclass(frozen=True)
class RecordingPaths:
    """Where a session's recording went."""

    folder: Path
    mic: Path
    agent: Path


def new_recording_folder(base: str | Path, now: float | None = None) -> Path:
    """A fresh folder under `base` named by the local time, e.g. `2025-01-31_14-05-09`."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now))
    folder = Path(base) / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = Path(base) / f"{stamp}_{n}"
    return folder


class SessionRecorder:
    """Writes `mic.wav` and `agent.wav` (24 kHz mono 16-bit) into one folder as audio arrives,
    and `mic_processed.wav` (the mic after echo cancellation) once there is any.

    Each track is an incremental `WavWriter`, so a crash loses at most its last second. The
    transcript is the caller's (write it into `paths.folder`). Thread-safe per track.
    """

    def __init__(self, folder: str | Path, flush_every_s: float = 1.0) -> None:
        folder = Path(folder)
        self.paths = RecordingPaths(folder, folder / "mic.wav", folder / "agent.wav")
        self._mic = WavWriter(self.paths.mic, SAMPLE_RATE, 1, flush_every_s)
        try:
            self._agent = WavWriter(self.paths.agent, SAMPLE_RATE, 1, flush_every_s)
        except BaseException:
            self._mic.close()  # a valid empty WAV, its file closed
            raise
        self._flush_every_s = flush_every_s
        self._processed: WavWriter | None = None

    @property
    def processed_path(self) -> Path:
        return self.paths.folder / "mic_processed.wav"

    def write_mic_processed(self, pcm: np.ndarray) -> None:
        """The mic after echo cancellation (the file is made on the first call)."""
        if self._processed is None:
            self._processed = WavWriter(self.processed_path, SAMPLE_RATE, 1, self._flush_every_s)
        self._processed.write(pcm)

    @property
    def processed_seconds(self) -> float | None:
        return None if self._processed is None else self._processed.duration_s

    def write_mic(self, pcm: np.ndarray) -> None:
        self._mic.write(pcm)

    def write_agent(self, pcm: np.ndarray) -> None:
        self._agent.write(pcm)

    @property
    def mic_seconds(self) -> float:
        return self._mic.duration_s

    @property
    def agent_seconds(self) -> float:
        return self._agent.duration_s

    def flush(self) -> None:
        self._mic.flush()
        self._agent.flush()
        if self._processed is not None:
            self._processed.flush()

    def close(self) -> RecordingPaths:
        """Finish both files (safe to call twice, both closed even if one fails); returns their paths."""
        try:
            self._mic.close()
        finally:
            try:
                self._agent.close()
            finally:
                if self._processed is not None:
                    self._processed.close()
        return self.paths
