"""The incremental WAV writer (its header always counts what is on disk) and the session recorder."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from personaplex_tui.audio import SessionRecorder, WavWriter, new_recording_folder, read_audio

ROOT = Path(__file__).resolve().parents[1]

CRASH = """
import os, sys
import numpy as np
from personaplex_tui.audio import WavWriter
w = WavWriter(sys.argv[1], flush_every_s=1.0)
ramp = (np.arange(1920) / 1920).astype(np.float32) * 0.5
for i in range(32):                     # 32 frames of 80 ms = 2.56 s
    w.write(ramp * (1 if i % 2 else -1))
os._exit(1)                             # die without closing anything
"""


def test_writer_survives_a_crash_with_everything_written(tmp_path):
    path = tmp_path / "crash.wav"
    proc = subprocess.run([sys.executable, "-c", CRASH, str(path)], cwd=ROOT)
    assert proc.returncode == 1
    data, rate = sf.read(path, dtype="float32")
    # The header is rewritten after every write: all 32 frames are counted.
    assert rate == 24000
    assert len(data) == 32 * 1920
    expected = np.concatenate(
        [(np.arange(1920) / 1920 * 0.5) * (1 if i % 2 else -1) for i in range(32)]
    )
    np.testing.assert_allclose(data, expected, atol=1 / 32767)
    assert abs(read_audio(path).duration_s - 32 * 0.08) < 1e-6


def test_header_is_valid_while_writing(tmp_path):
    path = tmp_path / "live.wav"
    w = WavWriter(path, flush_every_s=0.5)
    assert sf.info(path).frames == 0  # a valid empty WAV from the start
    w.write(np.full(12000, 0.25, np.float32))
    assert sf.info(path).frames == 12000
    w.write(np.full(100, 0.25, np.float32))
    assert sf.info(path).frames == 12100  # no flush needed
    w.flush()
    assert sf.info(path).frames == 12100
    w.close()
    w.close()  # twice is fine
    assert w.duration_s == 12100 / 24000


def test_stereo_and_clipping(tmp_path):
    path = tmp_path / "st.wav"
    with WavWriter(path, sample_rate=48000, channels=2) as w:
        w.write(np.array([[2.0, -2.0], [0.5, -0.5]], np.float32))
    data, rate = sf.read(path, dtype="float32")
    assert rate == 48000 and data.shape == (2, 2)
    np.testing.assert_allclose(data, [[1.0, -1.0], [0.5, -0.5]], atol=1 / 32767)


def test_session_recorder_writes_both_tracks(tmp_path):
    folder = new_recording_folder(tmp_path, now=0)
    rec = SessionRecorder(folder)
    mic = np.full(1920, 0.1, np.float32)
    agent = np.full(1920, -0.2, np.float32)
    for _ in range(5):
        rec.write_mic(mic)
        rec.write_agent(agent)
    paths = rec.close()
    assert paths.folder == folder and paths.mic.exists() and paths.agent.exists()
    assert np.allclose(read_audio(paths.mic).pcm, 0.1, atol=1e-4)
    assert np.allclose(read_audio(paths.agent).pcm, -0.2, atol=1e-4)
    assert rec.mic_seconds == rec.agent_seconds == 0.4
    # A second folder for the same second does not overwrite the first.
    folder.mkdir(exist_ok=True)
    assert new_recording_folder(tmp_path, now=0) != folder


def test_a_header_that_cannot_be_written_leaves_no_file_but_never_removes_a_device(tmp_path):
    """A full disk at the header: the empty file is not left behind as a broken WAV; a device
    such as /dev/full is never removed (the tests run as root on CI)."""
    import errno

    import pytest

    from personaplex_tui.audio import wav_writer
    from personaplex_tui.audio.errors import AudioFileError

    path = tmp_path / "mic.wav"

    class Full:
        def __init__(self, file, mode="r", *args, **kwargs):
            self._f = open(file, mode, *args, **kwargs)  # noqa: SIM115

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._f, name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wav_writer, "open", Full, raising=False)
        with pytest.raises(AudioFileError, match="No space left on device"):
            WavWriter(path)
    assert not path.exists()
    with pytest.raises(AudioFileError, match="No space left on device"):
        WavWriter("/dev/full")
    assert Path("/dev/full").exists()


def test_the_wav_formats_4_gib_limit_stops_the_file_with_a_valid_header(tmp_path):
    """The RIFF sizes are 32 bits (24.9 h of 24 kHz mono 16-bit): at the limit the writer keeps
    what fits, says why, and the header still counts exactly the samples on disk. The limit is
    lowered here; `MAX_DATA_BYTES` is the real one."""
    import struct

    import pytest

    from personaplex_tui.audio.wav_writer import MAX_DATA_BYTES, WavWriteError

    assert MAX_DATA_BYTES + 36 == 2**32 - 1
    w = WavWriter(tmp_path / "long.wav")
    w.max_data_bytes = 10_001  # an odd number of bytes: the last sample that fits is whole
    w.write(np.zeros(3000, np.float32))
    with pytest.raises(WavWriteError) as info:
        w.write(np.full(3000, 0.5, np.float32))
    assert "a WAV file holds at most 4 GiB" in str(info.value)
    assert "it keeps the first" in str(info.value) and not info.value.deleted
    with pytest.raises(WavWriteError):  # later writes say it again
        w.write(np.zeros(10, np.float32))
    w.close()
    raw = (tmp_path / "long.wav").read_bytes()
    assert struct.unpack("<I", raw[40:44])[0] == 10_000 == len(raw) - 44
    assert struct.unpack("<I", raw[4:8])[0] == 36 + 10_000
    assert len(read_audio(tmp_path / "long.wav").pcm) == 5000


def test_a_file_deleted_while_written_fails_within_a_second_of_audio(tmp_path):
    """Deleting the file (its folder removed) is noticed by the next second of audio and by
    `flush`, as `deleted`: nothing of it is kept, and the writer does not go on writing into an
    unlinked file."""
    import pytest

    from personaplex_tui.audio.wav_writer import WavWriteError

    w = WavWriter(tmp_path / "gone.wav")
    w.write(np.zeros(1920, np.float32))
    w.flush()  # present: nothing to say
    (tmp_path / "gone.wav").unlink()
    with pytest.raises(WavWriteError) as info:
        for _ in range(13):  # 13 frames of 80 ms: past the 1 s check
            w.write(np.zeros(1920, np.float32))
    assert info.value.deleted and "was deleted while it was written" in str(info.value)
    w2 = WavWriter(tmp_path / "gone2.wav")
    w2.write(np.zeros(1920, np.float32))
    (tmp_path / "gone2.wav").unlink()
    with pytest.raises(WavWriteError, match="was deleted"):
        w2.flush()
    w.close()
    w2.close()


# -- syncing to the disk (a power cut loses at most about SYNC_EVERY_S) -------------------------


class FsyncSpy:
    """Stands in for os.fsync: records which file (by inode) each call synced and on which
    thread; raises `error` when it is set."""

    def __init__(self, error: OSError | None = None) -> None:
        import threading

        self.calls: list[tuple[int, str]] = []
        self.error = error
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        import os
        import threading

        with self._lock:
            self.calls.append((os.fstat(fd).st_ino, threading.current_thread().name))
        if self.error is not None:
            raise self.error

    def count(self, path: Path) -> int:
        inode = path.stat().st_ino
        with self._lock:
            return sum(1 for ino, _ in self.calls if ino == inode)


def _wait_for(condition, timeout_s: float = 5.0) -> bool:
    import time

    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def test_recording_tracks_are_synced_every_interval_off_the_writing_thread(tmp_path, monkeypatch):
    import os
    import time

    import personaplex_tui.audio.recorder as recorder

    spy = FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    interval = 0.05
    monkeypatch.setattr(recorder, "SYNC_EVERY_S", interval)
    rec = SessionRecorder(tmp_path / "rec")
    frame = np.zeros(1920, np.float32)
    start = time.monotonic()
    while time.monotonic() - start < 0.6:  # ~12 intervals of frames arriving
        rec.write_mic(frame)
        rec.write_agent(frame)
        time.sleep(0.005)
    elapsed = time.monotonic() - start
    synced = spy.count(rec.paths.mic)
    # about one sync per interval while the track grows (generous below: a loaded machine)
    assert 3 <= synced <= elapsed / interval + 2
    assert 3 <= spy.count(rec.paths.agent) <= elapsed / interval + 2
    assert {thread for _, thread in spy.calls} == {"ppx-wav-sync"}  # never the writing thread
    rec.write_mic(frame)
    assert _wait_for(lambda: spy.count(rec.paths.mic) > synced)  # a last frame: synced too
    time.sleep(2 * interval)  # (a sync that had begun before that frame may follow it)
    settled = spy.count(rec.paths.mic)
    time.sleep(4 * interval)
    assert spy.count(rec.paths.mic) == settled  # nothing new: no sync
    rec.close()
    assert spy.count(rec.paths.mic) == settled  # already synced: close has nothing to do
    assert len(sf.read(rec.paths.mic, dtype="float32")[0]) > 0


def test_closing_a_recording_syncs_each_track_once(tmp_path, monkeypatch):
    import os

    import personaplex_tui.audio.recorder as recorder

    spy = FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(recorder, "SYNC_EVERY_S", 3600.0)  # no periodic sync in this test
    rec = SessionRecorder(tmp_path / "rec")
    for _ in range(25):  # 2 s
        rec.write_mic(np.zeros(1920, np.float32))
        rec.write_agent(np.zeros(1920, np.float32))
    rec.write_mic_processed(np.zeros(1920, np.float32))
    assert spy.calls == []  # writing never syncs on the writing thread
    rec.close()
    assert spy.count(rec.paths.mic) == 1
    assert spy.count(rec.paths.agent) == 1
    assert spy.count(rec.processed_path) == 1
    rec.close()  # twice: nothing more
    assert len(spy.calls) == 3


def test_a_failed_sync_fails_the_writer_as_a_failed_write_does(tmp_path, monkeypatch):
    import errno
    import os
    import threading

    import pytest

    from personaplex_tui.audio.wav_writer import WavWriteError

    crashes = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    monkeypatch.setattr(os, "fsync", FsyncSpy(OSError(errno.EIO, "Input/output error")))
    path = tmp_path / "eio.wav"
    w = WavWriter(path, sync_every_s=0.02)
    w.write(np.zeros(1920, np.float32))  # never raises here: the sync is not on this thread
    assert _wait_for(lambda: w.failure is not None)
    sentence = (
        f"Writing the audio file {path} failed (Input/output error); it keeps the first 0.08 s, "
        "which its header describes."
    )
    assert str(w.failure) == sentence
    with pytest.raises(WavWriteError) as info:  # the writer's usual failure, on the next write
        w.write(np.zeros(1920, np.float32))
    assert str(info.value) == sentence
    w.close()
    assert crashes == []  # no traceback from the sync thread
    assert len(sf.read(path, dtype="float32")[0]) == 1920


def test_a_failed_sync_stops_the_recording_not_the_conversation(tmp_path, monkeypatch):
    import errno
    import os
    import threading

    import personaplex_tui.audio.recorder as recorder
    from personaplex_tui.conversation.recording import ConversationRecording

    crashes = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    monkeypatch.setattr(os, "fsync", FsyncSpy(OSError(errno.EIO, "Input/output error")))
    monkeypatch.setattr(recorder, "SYNC_EVERY_S", 0.02)
    messages: list[str] = []
    rec = ConversationRecording.begin(tmp_path / "rec", {}, messages.append)

    def talk() -> bool:
        rec.write_mic(np.zeros(1920, np.float32))  # never raises
        rec.write_agent(np.zeros(1920, np.float32))
        return bool(messages)

    assert _wait_for(talk)
    for _ in range(10):  # the conversation goes on; nothing more is said
        talk()
    assert len(messages) == 1
    message = messages[0]
    assert message.startswith(f"Recording in {rec.folder} stopped at ")
    assert message.endswith(
        "s (Input/output error); what was recorded until then is kept and the conversation goes on."
    )
    assert "\n" not in message
    assert rec.close() == rec.folder
    kept, _ = sf.read(rec.folder / "mic.wav", dtype="float32")
    assert len(kept) >= 1920  # what came before is kept
    assert crashes == []


def test_a_failed_last_sync_on_close_is_one_sentence(tmp_path, monkeypatch):
    import errno
    import os

    import personaplex_tui.audio.recorder as recorder
    from personaplex_tui.conversation.recording import ConversationRecording

    spy = FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(recorder, "SYNC_EVERY_S", 3600.0)
    messages: list[str] = []
    rec = ConversationRecording.begin(tmp_path / "rec", {}, messages.append)
    rec.write_mic(np.zeros(1920, np.float32))
    spy.error = OSError(errno.EIO, "Input/output error")
    assert rec.close() == rec.folder
    assert messages == [  # one sentence a file: the tracks, then the transcript's own last sync
        "Finishing the recording failed: Input/output error.",
        f"Finishing the transcript in {rec.folder} failed (Input/output error).",
    ]
    assert len(sf.read(rec.folder / "mic.wav", dtype="float32")[0]) == 1920


def test_two_sessions_that_start_together_never_share_a_folder(tmp_path, monkeypatch):
    """Both looked for a free name before either made it (two processes, the same second):
    they wrote into one folder, a WAV header counting half its data and the transcripts mixed.
    The race is made certain here: every name under the folder looks free when asked."""
    import json
    import time

    from personaplex_tui.conversation.recording import ConversationRecording

    base = tmp_path / "rec"
    real_exists, real_localtime = Path.exists, time.localtime
    monkeypatch.setattr(Path, "exists", lambda p: p.parent != base and real_exists(p))
    same_second = real_localtime(1_700_000_000)
    monkeypatch.setattr(time, "localtime", lambda now=None: same_second)
    one = ConversationRecording.begin(base, {})
    two = ConversationRecording.begin(base, {})
    assert one.folder != two.folder and one.folder.parent == two.folder.parent == base
    for rec in (one, two):
        rec.write_mic(np.zeros(1920, np.float32))
        rec.write_agent(np.zeros(1920, np.float32))
        rec.close()
    monkeypatch.undo()
    for rec in (one, two):
        assert sf.info(str(rec.folder / "mic.wav")).frames == 1920
        entries = [
            json.loads(line) for line in (rec.folder / "transcript.jsonl").read_text().splitlines()
        ]
        assert [e["type"] for e in entries].count("session") == 1
