"""`ppx-tui sound-check --far --mic --output`: the canceller on two recordings, no sound card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from personaplex_tui.audio import read_audio
from personaplex_tui.audio.aec import EchoCanceller
from personaplex_tui.cli import main
from tests.echo_paths import echo, far_talk, impulse_response, noise


def _recordings(tmp_path: Path, delay_s: float, mic_rate: int = 24000, cut_s: float = 0.0):
    rng = np.random.default_rng(5)
    far = far_talk(10.0)
    mic = echo(far, delay_s, 0.5, impulse_response(rng)) + noise(len(far), rng)
    mic = mic[: len(mic) - int(cut_s * 24000)]
    if mic_rate != 24000:
        mic = soxr.resample(mic, 24000, mic_rate)
    sf.write(tmp_path / "far.wav", far, 24000)
    sf.write(tmp_path / "mic.wav", mic, mic_rate)
    return tmp_path / "far.wav", tmp_path / "mic.wav", tmp_path / "clean.wav"


def test_json_reports_the_delay_and_erle_and_says_what_was_converted(tmp_path, capsys):
    far, mic, out = _recordings(tmp_path, 0.15, mic_rate=44100, cut_s=0.5)
    rc = main(["sound-check", "--far", str(far), "--mic", str(mic), "--output", str(out), "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert abs(report["delay_ms"] - 150) <= 3
    assert report["erle_db"] >= 25
    assert report["echo_after_dbfs"] < report["echo_before_dbfs"] - 25
    assert "resampled from 44100 Hz to 24000 Hz" in captured.err
    assert "0.50 s shorter; it was padded with silence" in captured.err
    assert report["canceller"] == EchoCanceller().name  # which build of AEC3 ran
    clean = read_audio(out)
    assert abs(clean.duration_s - 10.0) < 0.02 and clean.source_rate == 24000


def test_a_recording_cut_short_is_used_and_said(tmp_path, capsys):
    """An Ogg recording cut short (an interrupted copy) is read as far as it goes, and said."""
    far, mic, out = _recordings(tmp_path, 0.05)
    data, rate = sf.read(far)
    sf.write(tmp_path / "far.ogg", data, rate, format="OGG", subtype="VORBIS")
    raw = (tmp_path / "far.ogg").read_bytes()
    (tmp_path / "far.ogg").write_bytes(raw[: len(raw) * 6 // 10])
    args = ["--far", str(tmp_path / "far.ogg"), "--mic", str(mic), "--output", str(out)]
    assert main(["sound-check", *args, "--json"]) == 0
    err = capsys.readouterr().err
    assert f"The audio file {tmp_path / 'far.ogg'} seems cut short" in err
    assert "shorter; it was padded with silence" in err


def test_an_echo_beyond_the_cancellers_reach_is_said_and_brought_within_it(tmp_path, capsys):
    far, mic, out = _recordings(tmp_path, 0.8)
    rc = main(["sound-check", "--far", str(far), "--mic", str(mic), "--output", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "beyond the canceller's own reach" in text
    assert f"Canceller: {EchoCanceller().name}." in text.splitlines()
    delay = float(text.split("Echo delay: ")[1].split(" ms")[0])
    assert abs(delay - 800) <= 5
    erle = float(text.split("dB removed")[0].rsplit(":", 1)[1])
    assert erle >= 25


@pytest.mark.parametrize(
    "args, message",
    [
        (["--far", "FAR"], "needs all three of --far, --mic and --output"),
        (["--far", "missing.wav", "--mic", "MIC", "--output", "o.wav"], "does not exist"),
        (
            ["--far", "FAR", "--mic", "MIC", "--output", "o.wav", "--input-device", "1"],
            "are for the live sound check",
        ),
        (["--far", "FAR", "--mic", "MIC", "--output", "MIC"], "--output and --mic name the same"),
        (["--far", "FAR", "--mic", "MIC", "--output", "/dev/full"], "No space left on device"),
        (["--far", "FAR", "--mic", "MIC", "--output", "o.mp3"], "give it a .wav or .flac name"),
        (["--far", "FAR", "--mic", "MIC", "--output", "MIC/o.wav"], "is a file, not a folder"),
        (["--far", "-", "--mic", "-", "--output", "o.wav"], "cannot both be the standard input"),
    ],
)
def test_mistakes_end_in_one_sentence_and_exit_code_2(tmp_path, capsys, args, message):
    far, mic, _ = _recordings(tmp_path, 0.05)
    args = [a.replace("FAR", str(far)).replace("MIC", str(mic)) for a in args]
    args = [str(tmp_path / a) if a.endswith(".wav") and "/" not in a else a for a in args]
    before = mic.read_bytes()
    assert main(["sound-check", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert mic.read_bytes() == before  # the recording is untouched


def test_a_full_disk_while_writing_is_its_reason_and_leaves_no_broken_file(tmp_path, capsys):
    """libsndfile says only "System error." for a full or read-only disk: the cleaned audio is
    encoded in memory and written by Python, which says why, and a file cut short is removed."""
    import errno

    from personaplex_tui.audio import audio_writing

    far, mic, clean = _recordings(tmp_path, 0.05)
    real_open = open

    class Full:
        def __init__(self, path, mode="r", *args, **kwargs):
            self._f = real_open(path, mode, *args, **kwargs)

        def write(self, data):
            self._f.write(bytes(data)[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def opener(path, mode="r", *args, **kwargs):
        return Full(path, mode, *args, **kwargs) if "w" in mode else real_open(path, mode)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audio_writing, "open", opener, raising=False)
        code = main(["sound-check", "--far", str(far), "--mic", str(mic), "--output", str(clean)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"ppx-tui: Could not write the audio file {clean}: No space left on device."
    )
    assert not clean.exists()


def test_memory_does_not_grow_with_the_recordings_length(tmp_path, monkeypatch, capsys):
    """An hour-long call recording needed gigabytes: both recordings, the cleaned audio and
    their 64-bit copies were held whole, some 50 bytes a sample. They are read, cancelled and
    written in blocks, keeping only each 20 ms block's power: a minute more of audio must cost
    less than a quarter of its own 32-bit samples (numpy's arrays, as tracemalloc sees them)."""
    import tracemalloc

    from personaplex_tui.audio import SAMPLE_RATE, offline_aec

    monkeypatch.setattr(offline_aec, "DELAY_WINDOW_S", 5)  # the delay search's memory is bounded
    far, mic, clean = _recordings(tmp_path, 0.15)  # 10 s
    long_far, long_mic = tmp_path / "far70.wav", tmp_path / "mic70.wav"
    for short, long in ((far, long_far), (mic, long_mic)):
        sf.write(long, np.tile(sf.read(short)[0], 7), SAMPLE_RATE, "PCM_16")

    def traced_peak(far: Path, mic: Path) -> int:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        args = ["--far", str(far), "--mic", str(mic), "--output", str(clean), "--json"]
        assert main(["sound-check", *args]) == 0
        report = json.loads(capsys.readouterr().out)
        assert abs(report["delay_ms"] - 150) <= 3 and report["erle_db"] >= 25
        return tracemalloc.get_traced_memory()[1] - before

    traced_peak(far, mic)  # once untraced: lazy imports, the canceller's library
    tracemalloc.start()
    try:
        short, long = traced_peak(far, mic), traced_peak(long_far, long_mic)
    finally:
        tracemalloc.stop()
    minute = 60 * SAMPLE_RATE * 4  # bytes of the extra minute as float32
    assert long - short < minute / 4, f"{(long - short) / minute:.1f} times the extra minute"
    assert read_audio(clean).duration_s == pytest.approx(70.0, abs=0.02)


def test_a_gap_of_a_sample_is_said_in_milliseconds(tmp_path, capsys):
    """Rates converted apart by a sample were said to be "0.00 s shorter"."""
    far, mic, out = _recordings(tmp_path, 0.05, cut_s=1.5 / 24000)  # one sample
    assert main(["sound-check", "--far", str(far), "--mic", str(mic), "--output", str(out)]) == 0
    said = capsys.readouterr()
    said = said.out + said.err
    assert "is 0.04 ms shorter; it was padded with silence" in said and "0.00 s" not in said


def _same_recording_note(far: str, mic: str) -> str:
    return (
        f"The far end {far} and the microphone {mic} are the same recording: the echo found in "
        "it is the far end itself, so its delay and the echo removed mean nothing; give the "
        "microphone's own recording as --mic."
    )


def test_the_far_end_given_as_the_microphone_too_is_said(tmp_path, capsys):
    """One file as --far and --mic (by the same name, another name of it, or a copy of its
    bytes) was reported as a perfect echo of 0 ms, without a word."""
    far, mic, out = _recordings(tmp_path, 0.15)
    (tmp_path / "link.wav").symlink_to(far)
    (tmp_path / "copy.wav").write_bytes(far.read_bytes())
    for other in (far, tmp_path / "link.wav", tmp_path / "copy.wav"):
        args = ["--far", str(far), "--mic", str(other), "--output", str(out)]
        assert main(["sound-check", *args]) == 0
        text = capsys.readouterr().out
        assert text.splitlines()[0] == _same_recording_note(str(far), str(other))
    assert main(["sound-check", "--far", str(far), "--mic", str(mic), "--output", str(out)]) == 0
    assert "same recording" not in capsys.readouterr().out


def test_a_clipped_microphone_recording_is_said_and_counted_as_live(tmp_path, capsys):
    """The live check counts and names the mic's clipping; offline it went unsaid."""
    far, mic, out = _recordings(tmp_path, 0.15)
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.clip(sf.read(mic)[0] * 40, -1, 1), 24000, "PCM_16")
    for recording, clipped in ((mic, False), (loud, True)):
        args = ["--far", str(far), "--mic", str(recording), "--output", str(out), "--json"]
        assert main(["sound-check", *args]) == 0
        said = capsys.readouterr()
        report = json.loads(said.out)
        assert (report["clipped_samples"] > 0) == clipped
        note = (
            f"The microphone {recording} clipped ({report['clipped_samples']} samples at full "
            "scale): lower the speaker or input volume; clipped echo cannot be removed."
        )
        assert (note in report["notes"] and note in said.err) == clipped
        assert ("clipped (" in said.err) == clipped


def test_a_stereo_microphone_clipping_on_one_channel_is_counted_before_the_mix(tmp_path, capsys):
    """Counted after the mix to mono, a left channel at full scale beside a quiet right one
    was half scale: no clipping said. Counted in each channel of the file, and the channel
    named; a file clipping in both is not said to clip in one."""
    far, mic, out = _recordings(tmp_path, 0.15)
    quiet = sf.read(mic)[0]
    loud = np.clip(quiet * 40, -1, 1)
    expected = int(np.count_nonzero(np.abs(loud) >= 0.99))
    cases = {
        "left.wav": (np.stack([loud, quiet], axis=1), [expected, 0], " in its left channel"),
        "right.wav": (np.stack([quiet, loud], axis=1), [0, expected], " in its right channel"),
        "both.wav": (np.stack([loud, loud], axis=1), [expected, expected], ""),
    }
    for name, (frames, per_channel, where) in cases.items():
        sf.write(tmp_path / name, frames, 24000, "PCM_16")
        args = ["--far", str(far), "--mic", str(tmp_path / name), "--output", str(out), "--json"]
        assert main(["sound-check", *args]) == 0
        said = capsys.readouterr()
        report = json.loads(said.out)
        assert report["clipped_samples"] == sum(per_channel) > 0
        assert report["clipped_by_channel"] == per_channel
        note = (
            f"The microphone {tmp_path / name} clipped ({sum(per_channel)} samples at full "
            f"scale){where}: lower the speaker or input volume; clipped echo cannot be removed."
        )
        assert note in report["notes"] and note in said.err


def test_the_clipped_channels_of_a_many_channel_recording_are_numbered():
    from personaplex_tui.audio.echo_metrics import clipped_channels_words

    assert clipped_channels_words([5]) == ""
    assert clipped_channels_words([0, 0]) == ""
    assert clipped_channels_words([0, 3, 0, 0]) == " in channel 2 of 4"
    assert clipped_channels_words([1, 0, 2, 0]) == " in channels 1 and 3 of 4"
    assert clipped_channels_words([1, 1, 0, 1]) == " in channels 1, 2 and 4 of 4"
    assert clipped_channels_words([1, 1, 1, 1]) == ""
