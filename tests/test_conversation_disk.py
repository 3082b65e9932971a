"""File faults: an unwritable record folder, a disk that fills up mid-session (for the recording
and for the speaker's output file), a bad input file. Each is one clear sentence; the
conversation goes on, and what reached the disk before the failure stays valid (WAVs readable,
transcript lines whole)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from personaplex_tui.audio import read_audio, split_frames
from personaplex_tui.conversation import ControllerConfig, create_conversation
from personaplex_tui.events import EngineError, FrameOut, Notice
from tests.conversation_fakes import (
    CONVERSATION,
    Events,
    FakeDevices,
    FakeModel,
    Probe,
    conversation_pcm,
    ended,
    is_state,
    run_until_ended,
)
from tests.test_conversation_duplex import only_folder

N_FRAMES = len(split_frames(conversation_pcm()))


class FullDisk:
    """Files opened under `root` share `free` bytes; a write that does not fit raises ENOSPC
    (nothing of it is written), as does every later one. With `error` EROFS: a file system
    remounted read-only (after I/O errors) once that much was written."""

    def __init__(self, root: Path, free: int, error: int = errno.ENOSPC) -> None:
        self.root = str(root)
        self.free = free
        self.refused = 0
        self.error = error

    def open(self, file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)  # the real one
        if str(file).startswith(self.root) and any(c in mode for c in "wa+"):
            return _Metered(handle, self)
        return handle

    def install(self, monkeypatch) -> None:
        """Route the recording's, transcript's and speaker's file opening through this disk."""
        import personaplex_tui.audio.wav_writer as wav_writer
        import personaplex_tui.conversation.timing_log as timing_log
        import personaplex_tui.conversation.transcript_writer as transcript_writer

        for module in (wav_writer, transcript_writer, timing_log):
            monkeypatch.setattr(module, "open", self.open, raising=False)


class _Metered:
    def __init__(self, handle, disk: FullDisk) -> None:
        self._handle, self._disk = handle, disk

    def write(self, data):
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self._disk.free:
            self._disk.free = 0
            self._disk.refused += 1
            raise OSError(self._disk.error, os.strerror(self._disk.error))
        self._disk.free -= size
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".")


def run_duplex(config: ControllerConfig, devices: FakeDevices | None = None):
    """A duplex conversation over conversation.wav to its end; the events and the model probe."""
    factory = (devices or FakeDevices()).factory()

    async def main():
        events, probe = Events(), Probe(FakeModel())
        await run_until_ended(config, probe, events, factory)
        return events, probe

    return asyncio.run(main())


def warnings(events) -> list[str]:
    return [e.message for e in events.of(Notice) if e.severity == "warning"]


@pytest.mark.parametrize("how", ["read-only", "not-a-folder"])
def test_an_unwritable_record_folder_is_one_sentence_and_the_conversation_goes_on(
    how, tmp_path, monkeypatch
):
    if how == "read-only":
        root = tmp_path / "locked"
        root.mkdir()
        root.chmod(stat.S_IRUSR | stat.S_IXUSR)
        if os.geteuid() == 0:  # root ignores permission bits: refuse like the kernel would
            real_mkdir = os.mkdir

            def mkdir(path, *args, **kwargs):
                if str(path).startswith(str(root)):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_mkdir(path, *args, **kwargs)

            monkeypatch.setattr(os, "mkdir", mkdir)
        reason = "Permission denied"
    else:
        (tmp_path / "notes.txt").write_text("a file where a folder should be")
        root = tmp_path / "notes.txt" / "recordings"
        reason = "Not a directory"
    config = ControllerConfig(mode="duplex", input_file=CONVERSATION, record_dir=root)
    try:
        events, probe = run_duplex(config)
    finally:
        if (tmp_path / "locked").exists():
            (tmp_path / "locked").chmod(stat.S_IRWXU)  # so that pytest can clean up
    (message,) = warnings(events)  # one message for the mic, agent and transcript files
    assert message.startswith(f"Cannot record in {root}/") and f"({reason})" in message
    assert message.endswith("the conversation goes on without a recording or transcript.")
    assert one_sentence(message)
    assert not events.of(EngineError)
    assert len(events.of(FrameOut)) == len(probe.sessions[-1].inputs) == N_FRAMES


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_disk_filling_up_mid_session_stops_the_recording_not_the_conversation(
    error, tmp_path, monkeypatch
):
    # about 3 s of the two 24 kHz 16-bit tracks; then full, or the file system turned read-only
    disk = FullDisk(tmp_path, free=300_000, error=error)
    disk.install(monkeypatch)
    config = ControllerConfig(mode="duplex", input_file=CONVERSATION, record_dir=tmp_path)
    events, probe = run_duplex(config)

    assert disk.refused > 0
    # One sentence: the recording's stop ends its transcript too (its last entry, the `end`
    # where the audio ends, does not fit either: that is not said a second time)
    (recording,) = warnings(events)
    reason = f"({os.strerror(error)})"  # No space left on device, Read-only file system
    assert recording.startswith("Recording in") and reason in recording
    assert recording.endswith("is kept and the conversation goes on.") and one_sentence(recording)
    assert not events.of(EngineError)
    assert len(events.of(FrameOut)) == len(probe.sessions[-1].inputs) == N_FRAMES

    folder = only_folder(tmp_path)
    live = probe.sessions[-1]
    mic, agent = read_audio(folder / "mic.wav").pcm, read_audio(folder / "agent.wav").pcm
    assert 24000 <= len(mic) <= 24000 * 4 and 24000 <= len(agent) <= 24000 * 4
    np.testing.assert_allclose(mic, np.concatenate(live.inputs)[: len(mic)], atol=1.5 / 32767)
    np.testing.assert_allclose(agent, np.concatenate(live.outputs)[: len(agent)], atol=1.5 / 32767)
    lines = (folder / "transcript.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["type"] == "session"
    assert all(json.loads(line)["t"] <= len(mic) / 24000 for line in lines)  # whole lines only


def test_an_output_file_on_a_full_disk_is_a_lost_output_and_another_goes_on(tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    disk = FullDisk(out_dir, free=200_000)  # about 4 s of the speaker's track
    disk.install(monkeypatch)
    config = ControllerConfig(
        mode="duplex",
        input_file=CONVERSATION,
        output_file=out_dir / "speaker.wav",
        record_dir=tmp_path / "rec",
    )
    devices = FakeDevices()

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        error = await events.wait_for(lambda e: isinstance(e, EngineError))
        while conv.running:
            await asyncio.sleep(0.01)
        steps = len(probe.sessions[-1].inputs)
        other = ControllerConfig(
            mode="duplex",
            input_file=CONVERSATION,
            output_device="USB Headset",
            record_dir=tmp_path / "rec",
        )
        await conv.apply_settings(other)
        mark = len(events.items)
        await conv.toggle_talk()
        await events.wait_for(ended, after=mark)
        await conv.shutdown()
        return events, probe, error, steps

    events, probe, error, steps = asyncio.run(main())
    played = read_audio(out_dir / "speaker.wav").pcm  # its header counts what was written
    assert error.message == (
        f"Writing the output file {out_dir / 'speaker.wav'} failed (No space left on device); "
        f"it keeps the first {len(played) / 24000:.2f} s."
    )
    assert error.hint == "Choose another output and press space to go on."
    assert error.kind == "AudioDeviceError" and is_state("error")(
        events.items[events.items.index(error) + 1]
    )
    assert steps > 1 and steps < N_FRAMES
    assert 24000 <= len(played) <= 24000 * 5
    assert len(probe.sessions) == 2 and len(probe.sessions[-1].inputs) == N_FRAMES
    folder = only_folder(tmp_path / "rec")
    assert len(read_audio(folder / "mic.wav").pcm) == N_FRAMES * 1920  # the recording lost nothing


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Input files the app's --input-file may be given, and the sentence each one gets."""
    folder.mkdir()
    good = folder / "good.wav"
    good.write_bytes((CONVERSATION).read_bytes()[: 44 + 48000])  # header promises more: cut
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    text = folder / "notes.wav"
    text.write_text("not audio at all\n" * 10)
    return {
        "truncated": (good, f"The audio file {good} is truncated: it holds"),
        "zero-length": (empty, f"The audio file {empty} is empty (0 bytes)."),
        "not-audio": (text, f"{text} is not a WAV or FLAC audio file"),
        "missing": (folder / "gone.wav", f"The audio file {folder / 'gone.wav'} does not exist."),
        "folder": (folder, f"{folder} is a folder, not an audio file."),
    }


@pytest.mark.parametrize("kind", ["truncated", "zero-length", "not-audio", "missing", "folder"])
def test_a_bad_input_file_is_one_sentence_and_the_app_goes_on_with_a_good_one(kind, tmp_path):
    path, message = _bad_inputs(tmp_path / "inputs")[kind]
    config = ControllerConfig(mode="duplex", input_file=path)

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=FakeDevices().factory())
        await conv.start()
        error = await events.wait_for(lambda e: isinstance(e, EngineError))
        assert not conv.running
        await conv.apply_settings(ControllerConfig(mode="duplex", input_file=CONVERSATION))
        mark = len(events.items)
        await conv.toggle_talk()
        await events.wait_for(ended, after=mark)
        await conv.shutdown()
        return events, probe, error

    events, probe, error = asyncio.run(main())
    assert error.message.startswith(message) and one_sentence(error.message)
    assert error.kind == "AudioFileError"
    assert len(probe.sessions[-1].inputs) == N_FRAMES  # the good file was played in full


def test_a_temp_folder_that_cannot_be_written_is_one_sentence(tmp_path, monkeypatch):
    """Without a record folder the session is recorded in a temporary one: a full or read-only
    temp folder is the same single warning, and the conversation goes on."""
    import tempfile

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "notes.txt"))
    (tmp_path / "notes.txt").write_text("a file where the temp folder should be")
    events, probe = run_duplex(ControllerConfig(mode="duplex", input_file=CONVERSATION))
    (message,) = warnings(events)
    assert message.startswith(f"Cannot record in {tmp_path / 'notes.txt'}/ppx-tui-recording-")
    assert one_sentence(message) and not events.of(EngineError)
    assert len(events.of(FrameOut)) == N_FRAMES


def test_a_timing_log_on_a_full_disk_stops_with_one_warning(tmp_path, monkeypatch):
    disk = FullDisk(tmp_path / "logs", free=5_000)  # some 25 lines of timings
    disk.install(monkeypatch)
    log = tmp_path / "logs" / "timing.jsonl"
    config = ControllerConfig(mode="duplex", input_file=CONVERSATION, timing_log=log)
    events, probe = run_duplex(config)
    (message,) = warnings(events)
    assert not events.of(EngineError) and len(events.of(FrameOut)) == N_FRAMES
    lines = log.read_text().splitlines()
    assert 10 < len(lines) < 40 and all(json.loads(line)["step"] >= 0 for line in lines)
    assert message == (
        f"Writing the timing log {log} failed (No space left on device); "
        f"it keeps the {len(lines)} steps logged until then and stops here."
    )


TRANSCRIBE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2001, 2001))  # a real full disk past 2001 bytes
from personaplex_tui.conversation.transcript_writer import TranscriptWriter
said = []
t = TranscriptWriter(sys.argv[1], "Conversation", {"voice": "NATF2"}, said.append)
for step in range(500):
    t.agent_text(step * 0.08, f" word{step}", step)
t.close(40.0)
print(said[0] if said else "")
"""


def test_a_transcript_on_a_real_full_disk_keeps_whole_entries(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", TRANSCRIBE, str(tmp_path)],
        capture_output=True, text=True, cwd=root, timeout=60,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout.strip()
    data = (tmp_path / "transcript.jsonl").read_bytes()
    assert data.endswith(b"\n") and len(data) <= 2001
    entries = [json.loads(line) for line in data.splitlines()]  # whole lines only
    assert entries[0]["type"] == "session" and entries[-1]["type"] == "text"
    assert message == (
        f"Writing the transcript in {tmp_path} failed (File too large); it keeps the "
        f"{len(entries)} entries written until then and the conversation goes on without it."
    )
    markdown = (tmp_path / "transcript.md").read_text()
    assert markdown.rstrip().endswith(entries[-1]["text"].strip())  # the same entries, whole


def _save_after_the_run(config: ControllerConfig):
    """A duplex run to its end, then `save_recording` (the `w` key), then shutdown."""

    async def main():
        events, probe = Events(), Probe(FakeModel())
        conv = create_conversation(probe.loader(), events, config, audio=FakeDevices().factory())
        await conv.start()
        await events.wait_for(ended)
        mark = len(events.items)
        saved = await conv.save_recording()
        said = events.items[mark:]
        await conv.shutdown()
        return conv, saved, said

    return asyncio.run(main())


def test_saving_a_kept_recording_cut_short_says_where_it_stopped(tmp_path, monkeypatch):
    """`w` on a recording that a full disk stopped does not say "Saved": it says when the files
    stopped, and so does the line after the screen is gone (`file_problems`)."""
    disk = FullDisk(tmp_path, free=300_000)
    disk.install(monkeypatch)
    config = ControllerConfig(mode="duplex", input_file=CONVERSATION, record_dir=tmp_path)
    conv, saved, said = _save_after_the_run(config)
    folder = only_folder(tmp_path)
    kept_s = len(read_audio(folder / "mic.wav").pcm) / 24000
    assert saved == "" and not [e for e in said if isinstance(e, Notice) and "Saved" in e.message]
    (error,) = [e for e in said if isinstance(e, EngineError)]
    assert error.message == (
        f"The recording in {folder} stopped at {kept_s:.1f} s (No space left on device); "
        "only what came before is saved."
    )
    assert conv.file_problems == [error.message]


def test_a_recording_that_could_not_start_leaves_no_empty_file_and_says_so(tmp_path, monkeypatch):
    """A disk already full: no 0-byte mic.wav is left (not a WAV), `w` and the exit line say
    that nothing could be recorded."""
    disk = FullDisk(tmp_path, free=0)
    disk.install(monkeypatch)
    config = ControllerConfig(mode="duplex", input_file=CONVERSATION, record_dir=tmp_path)
    conv, saved, said = _save_after_the_run(config)
    folder = only_folder(tmp_path)
    assert not (folder / "mic.wav").exists() and not (folder / "agent.wav").exists()
    (error,) = [e for e in said if isinstance(e, EngineError)]
    assert error.message.startswith(f"Nothing could be recorded in {folder} (Could not create")
    assert "No space left on device" in error.message and one_sentence(error.message)
    assert saved == "" and conv.file_problems == [error.message]


def test_a_recording_folder_deleted_mid_session_is_said_and_never_called_saved(tmp_path):
    """The folder of a kept recording removed while it records: one sentence within a second of
    audio, and `w` (save) says it was deleted instead of "Saved the recording in" a folder that
    is gone. The conversation's writes go on without raising."""
    import shutil

    from personaplex_tui.conversation.recording import ConversationRecording, RecordingError

    said: list[str] = []
    folder = tmp_path / "rec"
    rec = ConversationRecording(folder, temporary=False, details={}, on_error=said.append)
    frame = np.zeros(1920, np.float32)
    for _ in range(5):
        rec.write_mic(frame)
        rec.write_agent(frame)
    shutil.rmtree(folder)
    for _ in range(15):  # 1.2 s more
        rec.write_mic(frame)
        rec.write_agent(frame)
    assert len(said) == 1 and said[0].startswith(f"The recording in {folder} was deleted at ")
    assert said[0].endswith("nothing more is recorded and the conversation goes on.")
    with pytest.raises(RecordingError) as info:
        rec.save(tmp_path / "saved")
    assert str(info.value).startswith(f"The recording in {folder} was deleted at ")
    assert "only what came before is saved" not in str(info.value)
    rec.close()


def test_a_processed_mic_track_that_cannot_be_created_stops_the_recording_not_the_caller(
    tmp_path,
):
    """`mic_processed.wav` is created at the first echo-cancelled frame; when that fails (here a
    folder stands in its place) `write_mic` still never raises: the recording stops, once."""
    from personaplex_tui.conversation.recording import ConversationRecording

    said: list[str] = []
    folder = tmp_path / "rec"
    rec = ConversationRecording(folder, temporary=False, details={}, on_error=said.append)
    frame = np.zeros(1920, np.float32)
    rec.write_mic(frame)
    (folder / "mic_processed.wav").mkdir()
    rec.write_mic(frame, frame * 0.5)
    rec.write_mic(frame, frame * 0.5)
    assert len(said) == 1 and said[0].startswith(f"Recording in {folder} stopped at ")
    assert "mic_processed.wav" in said[0]
    assert rec.failure is not None
    rec.close()
