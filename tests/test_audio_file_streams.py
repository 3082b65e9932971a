"""File stand-ins: a mic that plays a file, a speaker that records, with the devices' interfaces."""

import time
from pathlib import Path

import numpy as np
import pytest

from personaplex_tui.audio import (
    AudioFileError,
    AudioInput,
    AudioOutput,
    FileMic,
    FileSpeaker,
    MicStream,
    SpeakerStream,
    read_audio,
)

AUDIO = Path(__file__).parent / "data" / "audio"


def _members(proto: type) -> set[str]:
    return {n for n in vars(proto) if not n.startswith("_")} | set(
        getattr(proto, "__annotations__", {})
    )


@pytest.mark.parametrize(
    ("proto", "classes"),
    [(AudioInput, (MicStream, FileMic)), (AudioOutput, (SpeakerStream, FileSpeaker))],
)
def test_devices_and_stand_ins_share_one_interface(proto, classes, tmp_path):
    needed = _members(proto)
    assert {"start", "close", "sample_rate", "device_name"} <= needed
    instances = {
        MicStream: lambda: MicStream(24000),
        FileMic: lambda: FileMic(np.zeros(10, np.float32)),
        SpeakerStream: lambda: SpeakerStream(24000),
        FileSpeaker: lambda: FileSpeaker(tmp_path / "x.wav", realtime=False),
    }
    for cls in classes:
        obj = instances[cls]()
        missing = [n for n in needed if not hasattr(obj, n)]
        assert not missing, f"{cls.__name__} lacks {missing}"
        obj.close()


def test_fast_file_mic_gives_the_whole_file_in_frames_then_ends():
    ref = read_audio(AUDIO / "weather.wav").pcm
    mic = FileMic(AUDIO / "weather.wav", realtime=False)
    mic.start()
    frames = []
    while (f := mic.read_frame()) is not None:
        assert f.shape == (1920,)
        frames.append(f)
    assert mic.finished
    got = np.concatenate(frames)
    assert len(got) == -(-len(ref) // 1920) * 1920
    np.testing.assert_array_equal(got[: len(ref)], ref)
    assert not got[len(ref) :].any()
    assert mic.position_s == mic.duration_s


def test_file_mic_can_go_on_with_silence():
    mic = FileMic(np.ones(1920 * 2, np.float32), realtime=False, after_end="silence")
    assert mic.read_frame().all() and mic.read_frame().all()
    for _ in range(3):
        f = mic.read_frame()
        assert f is not None and not f.any()
    assert not mic.finished


def test_realtime_file_mic_is_paced_by_the_clock():
    mic = FileMic(np.ones(1920 * 5, np.float32), realtime=True)
    t0 = time.monotonic()
    with mic:
        frames = []
        while (f := mic.read_frame(timeout=2.0)) is not None:
            frames.append(f)
    elapsed = time.monotonic() - t0
    assert len(frames) == 5 and mic.finished
    assert 0.25 <= elapsed < 1.5  # 5 frames of 80 ms, the first at once


def test_file_mic_reports_bad_files():
    with pytest.raises(AudioFileError, match="does not exist"):
        FileMic(AUDIO / "missing.wav")


def test_fast_file_speaker_records_exactly_what_was_written(tmp_path):
    path = tmp_path / "agent.wav"
    ref = read_audio(AUDIO / "greeting.wav").pcm[: 1920 * 10 + 500]
    spk = FileSpeaker(path, realtime=False)
    spk.start()
    for i in range(0, len(ref), 1920):
        assert spk.write_frame(ref[i : i + 1920])
        if i == 1920:  # two frames: under the pre-buffer, nothing plays yet
            assert spk.recorded_s == 0.0
    assert spk.recorded_s == 10 * 0.08  # the 500-sample tail waits for a flush
    assert spk.drain()
    spk.close()
    got = read_audio(path).pcm
    assert len(got) == len(ref)
    np.testing.assert_allclose(got, ref, atol=1 / 32767 + 1e-6)
    assert spk.stats().underruns == 0


def test_realtime_file_speaker_records_prebuffer_and_underrun_as_silence(tmp_path):
    path = tmp_path / "agent.wav"
    spk = FileSpeaker(path, realtime=True)
    tone = np.full(1920, 0.5, np.float32)
    with spk:
        for _ in range(3):
            spk.write_frame(tone)
        time.sleep(0.6)  # plays 3 frames, then runs dry: an underrun
        assert spk.stats().underruns == 1
        for _ in range(3):
            spk.write_frame(tone)
        assert spk.drain(timeout=2.0)
    got = read_audio(path).pcm
    loud = np.abs(got) > 0.25
    assert loud.sum() == 6 * 1920  # every frame written was played once, none repeated
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(int), [0]])))
    assert len(edges) == 4  # on, off (the underrun), on, off
    assert edges[1] - edges[0] == 3 * 1920 and edges[3] - edges[2] == 3 * 1920
