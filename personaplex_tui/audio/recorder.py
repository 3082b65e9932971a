"""Records a conversation's two tracks, the user's microphone and the agent's voice, as WAVs."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personaplex_tui.audio.frames import SAMPLE_RATE
from personaplex_tui.audio.wav_writer import WavWriteError, WavWriter

# How often each track is synced to the disk (on a background thread per track, never the one
# that writes): a power cut or a crash of the operating system loses at most about this much of
# a recording. A few seconds keeps the disk's work small (one sync per track each time, even on
# a slow SD card or network disk) while losing little of a conversation.
SYNC_EVERY_S = 5.0


@dataclass(frozen=True)
class RecordingPaths:
    """Where a session's recording went."""

    folder: Path
    mic: Path
    agent: Path


def new_recording_folder(
    base: str | Path, now: float | None = None, *, create: bool = False
) -> Path:
    """A fresh folder under `base` named by the local time, e.g. `2025-01-31_14-05-09` (then
    `_2`, `_3`... after a name that is taken). `create`: made here, atomically, so that two
    sessions started in the same second never share one (OSError when it cannot be made)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now))
    names = (Path(base) / (stamp if n == 1 else f"{stamp}_{n}") for n in itertools.count(1))
    if not create:
        return next(folder for folder in names if not folder.exists())
    Path(base).mkdir(parents=True, exist_ok=True)
    folder = next(names)
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # taken, by another session meanwhile too
            folder = next(names)


class SessionRecorder:
    """Writes `mic.wav` and `agent.wav` (24 kHz mono 16-bit) into one folder as audio arrives,
    and `mic_processed.wav` (the mic after echo cancellation) once there is any.

    Each track is an incremental `WavWriter`, so a crash of the app loses at most the frame being
    written, and is synced to the disk every `SYNC_EVERY_S` (and on `close`) in the background,
    so a power cut loses at most about that much. The transcript is the caller's (write it into
    `paths.folder`). Thread-safe per track.
    """

    def __init__(self, folder: str | Path, flush_every_s: float = 1.0) -> None:
        folder = Path(folder)
        self.paths = RecordingPaths(folder, folder / "mic.wav", folder / "agent.wav")
        self._flush_every_s = flush_every_s
        self._sync_every_s = SYNC_EVERY_S  # (read here, so that tests can lower it)
        self._mic = self._writer(self.paths.mic)
        try:
            self._agent = self._writer(self.paths.agent)
        except BaseException:
            self._mic.close(wait=False)  # a valid empty WAV, its file closed
            raise
        self._processed: WavWriter | None = None

    def _writer(self, path: Path) -> WavWriter:
        return WavWriter(path, SAMPLE_RATE, 1, self._flush_every_s, sync_every_s=self._sync_every_s)

    @property
    def processed_path(self) -> Path:
        return self.paths.folder / "mic_processed.wav"

    def write_mic_processed(self, pcm: np.ndarray) -> None:
        """The mic after echo cancellation (the file is made on the first call)."""
        if self._processed is None:
            self._processed = self._writer(self.processed_path)
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

    def close(self, wait: bool = True) -> RecordingPaths:
        """Finish the files (safe to call twice, all closed even if one fails); returns their paths.

        Waits for each track's last sync to the disk unless `wait` is False (a thread that must
        not wait on the disk: the syncs still happen, in the background). A last sync that failed
        raises its `WavWriteError` (an OSError), the first such; the files are closed anyway."""
        writers = [w for w in (self._mic, self._agent, self._processed) if w is not None]
        failed_before = [w.failure for w in writers]
        for writer in writers:
            writer.close(wait)  # never raises
        for writer, before in zip(writers, failed_before, strict=True):
            if wait and before is None and isinstance(writer.failure, WavWriteError):
                raise writer.failure
        return self.paths
