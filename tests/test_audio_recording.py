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
