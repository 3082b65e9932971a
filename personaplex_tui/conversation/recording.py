"""A session's recording: the mic and agent tracks on one timeline plus the transcript, always on disk.

Every session is recorded as it happens (each frame handed to the OS with the WAV header
updated, the transcript on every entry), so a crash of the app loses at most the frame being
written; the WAV tracks and the transcript are synced to the disk every few seconds on background
threads (a power cut loses at most about the last 5 s of them).
With continuous recording on (`record_dir`), the files go into a new folder there and stay. Without it they go into a private temporary folder:
`save()` copies a consistent snapshot of it into a new folder, and `close()` deletes it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import PersonaPlexError
from personaplex_tui.audio import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioFileError,
    SessionRecorder,
    new_recording_folder,
)
from personaplex_tui.conversation.transcript_writer import TranscriptWriter
from personaplex_tui.errors import AppError

_WAV_HEADER = 44  # WavWriter writes a canonical 44-byte header
_COPY_CHUNK = 1 << 20


class RecordingError(PersonaPlexError):
    """A recording could not be saved."""


def copy_wav_prefix(source: Path, target: Path, frames: int, length: int | None = None) -> None:
    """Copy the first `frames` samples of a 16-bit mono WavWriter file into a new WAV, followed
    by silence up to `length` samples when it is given."""
    with open(source, "rb") as src, wave.open(str(target), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(SAMPLE_RATE)
        src.seek(_WAV_HEADER)
        left = 2 * frames
        while left > 0:
            chunk = src.read(min(left, _COPY_CHUNK))
            if not chunk:
                break
            dst.writeframes(chunk)
            left -= len(chunk)
        silence = 0 if length is None else 2 * length - (2 * frames - left)
        while silence > 0:
            dst.writeframes(bytes(min(silence, _COPY_CHUNK)))
            silence -= _COPY_CHUNK


# what a track's writer raises when writing stops (AudioFileError: a track created late, such as
# mic_processed.wav, could not be created)
_WRITE_ERRORS = (OSError, ValueError, AudioFileError)


def _lengths(recorder: SessionRecorder) -> tuple[int, int, int | None]:
    """The samples on disk of each track: mic, agent, the processed mic (None: none came)."""
    processed = recorder.processed_seconds
    return (
        round(recorder.mic_seconds * SAMPLE_RATE),
        round(recorder.agent_seconds * SAMPLE_RATE),
        None if processed is None else round(processed * SAMPLE_RATE),
    )


class ConversationRecording:
    """Records `mic.wav` and `agent.wav` (24 kHz mono 16-bit) and the transcript of one session;
    with echo cancellation on, `mic.wav` is the raw mic and `mic_processed.wav` the cleaned one
    (silence where nothing was processed), on the same timeline.

    The two tracks share a timeline: `align()` pads the shorter one with silence, and the
    controllers call it whenever the conversation changes phase, so sample n of one track
    happened at the same time as sample n of the other. The timeline keeps counting even if
    writing fails (a full disk): the failure is reported once through `on_error`, and the
    transcript ends there too (an `end` entry where the audio ends, with the reason), so that
    nothing more is written in the folder and no entry is later than the audio it describes.
    """

    def __init__(
        self,
        folder: Path,
        temporary: bool,
        details: dict[str, Any],
        on_error: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.folder = folder
        self.temporary = temporary
        self._on_error = on_error
        self._lock = threading.Lock()
        self._mic_samples = 0
        self._agent_samples = 0
        self._processed_samples: int | None = None  # None until a processed frame came
        self._recorder: SessionRecorder | None = None
        self.closed = False
        # What stopped the audio files, for a kept recording's user ("the recording in ... stopped
        # at 6.2 s (No space left on device)"); None while they are written
        self.failure: str | None = None
        self._nothing_kept = False  # the failure left no recording (none began, or deleted)
        # the samples of each track on disk when writing stopped (mic, agent, processed or
        # None): what a temporary recording's `save` copies after a failure
        self._stopped_at: tuple[int, int, int | None] | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # unwritable or missing parent: one message for every file
            self.failure = f"nothing could be recorded in {folder} ({e.strerror or e})"
            self._nothing_kept = True
            on_error(
                f"Cannot record in {folder} ({e.strerror or e}); the conversation goes on "
                "without a recording or transcript."
            )
            self.transcript = TranscriptWriter(folder, "Conversation", details)
            return
        try:
            self._recorder = SessionRecorder(folder)
        except (PersonaPlexError, AppError) as e:
            self.failure = f"nothing could be recorded in {folder} ({str(e).rstrip('.')})"
            self._nothing_kept = True
            on_error(f"{str(e).rstrip('.')}; the conversation goes on without a recording.")
        self.transcript = TranscriptWriter(folder, "Conversation", details, on_error)  # (says why)

    @classmethod
    def begin(
        cls,
        record_dir: str | Path | None,
        details: dict[str, Any],
        on_error: Callable[[str], None] = lambda message: None,
    ) -> ConversationRecording:
        """A new recording under `record_dir` (kept), or in a temporary folder when it is None."""
        if record_dir:
            base = Path(record_dir).expanduser()
            try:  # claimed now: a session started in the same second takes the next name
                folder = new_recording_folder(base, create=True)
            except OSError:
                folder = new_recording_folder(base)  # __init__ makes it, or says why it cannot
            return cls(folder, False, details, on_error)
        try:
            folder = Path(tempfile.mkdtemp(prefix="ppx-tui-recording-"))
        except OSError:  # a full or read-only temp folder: __init__ says so, once
            folder = Path(tempfile.gettempdir()) / f"ppx-tui-recording-{uuid.uuid4().hex}"
        return cls(folder, True, details, on_error)

    # -- the timeline --------------------------------------------------------------------
    @property
    def mic_s(self) -> float:
        return self._mic_samples / SAMPLE_RATE

    @property
    def agent_s(self) -> float:
        return self._agent_samples / SAMPLE_RATE

    @property
    def position_s(self) -> float:
        """The end of the timeline (the longer track), in seconds."""
        return max(self._mic_samples, self._agent_samples) / SAMPLE_RATE

    def write_mic(self, pcm: np.ndarray, processed: np.ndarray | None = None) -> None:
        """Append the user's audio as captured, and as the echo canceller left it when it ran
        (any thread; never raises)."""
        if processed is not None:
            with self._lock:
                start = self._processed_samples or 0
                gap = self._mic_samples - start
                self._processed_samples = self._mic_samples + len(processed)
                if self._recorder is not None and not self.closed:
                    try:
                        if gap > 0:
                            self._recorder.write_mic_processed(np.zeros(gap, np.float32))
                        self._recorder.write_mic_processed(processed)
                    except _WRITE_ERRORS as e:
                        self._fail(e)
        self._write(pcm, mic=True)

    def write_agent(self, pcm: np.ndarray) -> None:
        """Append the agent's audio (any thread; never raises)."""
        self._write(pcm, mic=False)

    def agent_catches_up(self) -> None:
        """Pad the agent's track with silence up to the mic's: its next frame plays now (a
        turn-based reply whose mic was recorded while the model thought)."""
        with self._lock:
            gap = self._mic_samples - self._agent_samples
        self._silence(max(gap, 0), mic=False)

    def align(self) -> None:
        """Pad the shorter track with silence so both end at the same time."""
        with self._lock:
            gap = self._mic_samples - self._agent_samples
        self._silence(abs(gap), mic=gap < 0)
        with self._lock:
            behind = (
                None
                if self._processed_samples is None
                else (self._mic_samples - self._processed_samples)
            )
            if behind and behind > 0:
                self._processed_samples = self._mic_samples
                if self._recorder is not None and not self.closed:
                    try:
                        self._recorder.write_mic_processed(np.zeros(behind, np.float32))
                    except _WRITE_ERRORS as e:
                        self._fail(e)

    def _silence(self, samples: int, mic: bool) -> None:
        """Append `samples` of silence to one track, a frame at a time."""
        silence = np.zeros(FRAME_SAMPLES, np.float32)
        for start in range(0, samples, FRAME_SAMPLES):
            self._write(silence[: min(FRAME_SAMPLES, samples - start)], mic=mic)

    def _write(self, pcm: np.ndarray, mic: bool) -> None:
        with self._lock:
            if self.closed:
                return
            if mic:
                self._mic_samples += len(pcm)
            else:
                self._agent_samples += len(pcm)
            if self._recorder is None:
                return
            try:
                (self._recorder.write_mic if mic else self._recorder.write_agent)(pcm)
            except _WRITE_ERRORS as e:
                self._fail(e)

    def _fail(self, error: Exception) -> None:
        """Writing failed (a full disk): keep what is on disk, stop writing, say so once."""
        recorder, self._recorder = self._recorder, None
        written = 0.0
        try:
            if recorder is not None:
                written = max(recorder.mic_seconds, recorder.agent_seconds)
                self._stopped_at = _lengths(recorder)
                recorder.close(wait=False)  # (any thread, the engine's too: no wait on the disk)
        except OSError:
            pass
        reason = str(getattr(error, "strerror", None) or error).rstrip(".")
        deleted = getattr(error, "deleted", False)  # the folder was deleted under the recording
        self.transcript.stop(written, f"the recording stopped here ({reason})")
        if deleted:
            self.failure = f"the recording in {self.folder} was deleted at {written:.1f} s"
            self._nothing_kept = True
            self._on_error(
                f"The recording in {self.folder} was deleted at {written:.1f} s; nothing more "
                "is recorded and the conversation goes on."
            )
            return
        self.failure = f"the recording in {self.folder} stopped at {written:.1f} s ({reason})"
        self._on_error(
            f"Recording in {self.folder} stopped at {written:.1f} s ({reason}); what was recorded "
            "until then is kept and the conversation goes on."
        )

    # -- files ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Make everything recorded so far valid files on disk."""
        with self._lock:
            if self._recorder is not None:
                try:
                    self._recorder.flush()
                except OSError as e:
                    self._fail(e)

    def save(self, root: str | Path) -> Path:
        """Everything so far as files in a folder: this one when it is kept anyway, else a copy
        in a new folder under `root`. Raises RecordingError with one sentence on failure."""
        if not self.temporary:
            self.flush()
            if self.failure is not None:
                raise RecordingError(self.failure_sentence())
            return self.folder
        with self._lock:
            if self._recorder is not None:
                try:
                    self._recorder.flush()
                except OSError as e:  # (a deleted folder, a full disk: as `flush` would say)
                    self._fail(e)
            if self._recorder is not None:
                mic_frames, agent_frames, processed = _lengths(self._recorder)
            elif self._stopped_at is not None and not self._nothing_kept:
                mic_frames, agent_frames, processed = self._stopped_at  # what came before
            elif self.failure is not None:  # none began, or its folder was deleted
                raise RecordingError(self.failure_sentence())
            else:
                raise RecordingError("There is no recording to save (writing it had failed).")
            entries = self.transcript.sizes  # (all earlier than the tracks' end)
        # Every track is padded with silence to the longer one (the agent's lags the mic's by a
        # frame or two mid-conversation): the snapshot is the recording as `close` would leave
        # it had the conversation ended now (`align` pads the same way), so sample n is the same
        # moment in every track and the transcript's entries up to the end stay; trimming would
        # cut the mic's latest words that the transcript may already hold.
        end = max(mic_frames, agent_frames)
        root = Path(root).expanduser()
        target = root
        try:
            target = new_recording_folder(root, create=True)
            copy_wav_prefix(self.folder / "mic.wav", target / "mic.wav", mic_frames, end)
            copy_wav_prefix(self.folder / "agent.wav", target / "agent.wav", agent_frames, end)
            if processed is not None:  # (a frame written meanwhile is not the snapshot's)
                name = "mic_processed.wav"
                copy_wav_prefix(self.folder / name, target / name, min(processed, end), end)
            self.transcript.copy_to(target, end / SAMPLE_RATE, entries)
        except OSError as e:
            if target != root:  # no half snapshot that looks like a recording
                shutil.rmtree(target, ignore_errors=True)
            raise RecordingError(
                f"Could not save the recording in {target}: {e.strerror or e}."
            ) from None
        return target

    def failure_sentence(self) -> str:
        """`failure` as a sentence for the user (call it only when there is one)."""
        failure = str(self.failure)
        said = f"{failure[0].upper()}{failure[1:]}"
        return f"{said}." if self._nothing_kept else f"{said}; only what came before is saved."

    def abandon(self, reason: str, timeout_s: float = 0.5) -> bool:
        """The process leaves without `close` (its shutdown did not finish; any thread): the
        transcript's `end` entry, with `reason`, where the timeline is now; False when a stuck
        thread holds the transcript past `timeout_s`. (The WAV tracks are whole as they are.)
        A temporary recording keeps nothing: its folder is deleted, as `close` deletes it."""
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)
            return True
        return self.transcript.abandon(self.position_s, reason, timeout_s)

    def close(self, note: str | None = None) -> Path | None:
        """Finish the files; a temporary recording is deleted. Returns the kept folder, if any.

        Safe to call twice."""
        self.align()
        end = self.position_s
        if note:
            self.transcript.note(end, note)
        with self._lock:
            if self.closed:
                return None if self.temporary else self.folder
            self.closed = True
            if self._recorder is not None:
                try:
                    self._recorder.close()
                except OSError as e:
                    self._on_error(f"Finishing the recording failed: {e.strerror or e}.")
        self.transcript.close(end)
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)
            return None
        return self.folder
