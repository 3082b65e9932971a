"""Reading audio files into 24 kHz mono float32, and the one-sentence errors for bad files."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from personaplex_tui.audio import AudioFileError, read_audio, write_wav

AUDIO = Path(__file__).parent / "data" / "audio"


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_44k_stereo_reads_as_24k_mono_matching_the_original():
    clip = read_audio(AUDIO / "shipping_44k_stereo.wav")
    ref = read_audio(AUDIO / "shipping.wav")
    assert clip.source_rate == 44100 and clip.source_channels == 2
    assert clip.pcm.dtype == np.float32 and clip.pcm.ndim == 1
    assert abs(len(clip.pcm) - len(ref.pcm)) <= 1
    assert _corr(clip.pcm, ref.pcm) > 0.99
    assert not clip.silent and clip.warning is None


@pytest.mark.parametrize(
    ("rate", "channels", "subtype", "ext"),
    [
        (48000, 1, "PCM_16", "wav"),
        (16000, 2, "PCM_24", "wav"),
        (22050, 1, "FLOAT", "wav"),
        (8000, 1, "PCM_U8", "wav"),
        (96000, 6, "PCM_32", "wav"),
        (44100, 2, "PCM_16", "flac"),
        (24000, 1, "PCM_24", "flac"),
    ],
)
def test_any_rate_channels_and_format(tmp_path, rate, channels, subtype, ext):
    t = np.arange(int(rate * 0.5)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    # Channels carry the tone with different gains and a DC-free sign pattern; the mix is known.
    gains = np.linspace(1.0, 0.5, channels)
    data = np.stack([g * tone for g in gains], axis=1)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, data, rate, subtype=subtype)
    clip = read_audio(path)
    assert clip.source_rate == rate and clip.source_channels == channels
    assert abs(clip.duration_s - 0.5) < 1e-3
    expected = gains.mean() * 0.5 * np.sin(2 * np.pi * 440 * np.arange(12000) / 24000)
    mid = slice(1000, 11000)  # away from the resampler's edges
    tol = 0.02 if subtype == "PCM_U8" else 2e-3
    assert np.max(np.abs(clip.pcm[mid] - expected[mid])) < tol


def test_silent_file_is_flagged_not_refused(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(24000), 24000, subtype="PCM_16")
    clip = read_audio(path)
    assert clip.silent
    assert clip.warning == f"The audio file {path} contains only silence."


def _expect(path, message: str) -> None:
    with pytest.raises(AudioFileError) as info:
        read_audio(path)
    assert str(info.value) == message


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.wav", f"The audio file {tmp_path / 'nope.wav'} does not exist.")


def test_folder_instead_of_file(tmp_path):
    _expect(tmp_path, f"{tmp_path} is a folder, not an audio file.")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _expect(path, f"The audio file {path} is empty (0 bytes).")


def test_wav_with_no_samples(tmp_path):
    path = tmp_path / "nosamples.wav"
    sf.write(path, np.zeros((0, 1)), 24000, subtype="PCM_16")
    _expect(path, f"The audio file {path} contains no audio samples.")


def test_text_file_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not audio\n" * 20)
    _expect(path, f"{path} is not a WAV or FLAC audio file (its format was not recognised).")


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, np.full(24000, 0.1), 24000, subtype="PCM_16")  # 1 s
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 24000])  # half of the samples survive
    _expect(
        path,
        f"The audio file {path} is truncated: it holds 0.50 s of the 1.00 s its header promises.",
    )


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    rng = np.random.default_rng(0)
    sf.write(path, 0.3 * rng.standard_normal(48000), 24000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioFileError) as info:
        read_audio(path)
    message = str(info.value)
    assert message.startswith(f"The audio file {path} is ")
    assert "truncated" in message and message.endswith(".")


def _ogg(path: Path, subtype: str) -> bytes:
    """4 s of noise as an Ogg file (some ten pages): its bytes."""
    noise = 0.2 * np.random.default_rng(0).standard_normal(4 * 24000)
    sf.write(path, noise, 24000, format="OGG", subtype=subtype)
    return path.read_bytes()


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_file_cut_short_is_read_as_far_as_it_goes_and_said(tmp_path, subtype):
    """libsndfile reads an Ogg file cut short (an interrupted download) up to the cut and says
    nothing; its last page lacks the end-of-stream flag: a warning, and the audio is used."""
    from personaplex_tui.audio.audio_file import AudioStream

    whole = tmp_path / "talk.ogg"
    data = _ogg(whole, subtype)
    clip = read_audio(whole)
    assert not clip.cut_short and clip.warning is None and abs(clip.duration_s - 4) < 0.01
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(data[: len(data) * 6 // 10])
    short = read_audio(cut)
    assert short.cut_short and 1 < short.duration_s < 3.5
    np.testing.assert_allclose(short.pcm[:24000], clip.pcm[:24000], atol=1e-6)
    assert short.warning == (
        f"The audio file {cut} seems cut short (its Ogg stream stops without its end, as after "
        f"an interrupted download or copy); its {short.duration_s:.2f} s are used as far as "
        "they go."
    )
    with AudioStream(cut) as stream, AudioStream(whole) as full:
        assert stream.cut_short_note == short.warning and full.cut_short_note is None
    for end in (len(data) - 1, len(data) - 30):  # cut inside the last page, past its flag
        cut.write_bytes(data[:end])
        assert read_audio(cut).cut_short


def test_an_ogg_file_cut_short_through_the_standard_input_is_said(tmp_path):
    import subprocess
    import sys

    data = _ogg(tmp_path / "talk.ogg", "VORBIS")
    root = Path(__file__).resolve().parents[1]
    code = "from personaplex_tui.audio import read_audio; print(read_audio('-').warning)"
    said = [
        subprocess.run(
            [sys.executable, "-c", code], input=piped, capture_output=True, cwd=root,
            env={"PYTHONPATH": str(root)}, timeout=60, text=False,
        ).stdout.decode().strip()
        for piped in (data, data[: len(data) * 6 // 10])
    ]  # fmt: skip
    assert said[0] == "None"
    assert said[1].startswith("The audio file /dev/stdin seems cut short (its Ogg stream")


def test_other_formats_are_not_judged_as_ogg(tmp_path):
    """A WAV or FLAC is not searched for Ogg pages, even with "OggS" in its last samples."""
    tone = (8000 * np.sin(np.arange(2400) / 5)).astype("<i2")
    samples = np.concatenate([tone, np.frombuffer(b"OggS\x00\x00" * 2000, dtype="<i2")])
    for name in ("pages.wav", "pages.flac"):
        sf.write(tmp_path / name, samples, 24000, subtype="PCM_16")
        clip = read_audio(tmp_path / name)
        assert not clip.cut_short and clip.warning is None


def test_corrupt_wav_header(tmp_path):
    path = tmp_path / "garbled.wav"
    sf.write(path, np.full(2400, 0.1), 24000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[20:36] = b"\xff" * 16  # the fmt chunk: format, channels, rate, block size
    path.write_bytes(bytes(data))
    with pytest.raises(AudioFileError) as info:
        read_audio(path)
    message = str(info.value)
    assert message.startswith(f"The audio file {path} is corrupt (") and message.endswith(").")


def test_float_samples_far_past_full_scale_are_refused(tmp_path):
    """A float WAV whose samples reach 1e30 was taken: a reply computed on it, sound-check's ERLE
    653 dB. Past 1000 (60 dB over full scale) it is one sentence; 4 times full scale is taken."""
    x = np.sin(np.arange(24000) / 10).astype(np.float32)
    sf.write(tmp_path / "huge.wav", x * 1e30, 24000, "FLOAT")
    with pytest.raises(AudioFileError, match="not scaled as audio: its samples reach 1e\\+30"):
        read_audio(tmp_path / "huge.wav")
    sf.write(tmp_path / "loud.wav", x * 4, 24000, "FLOAT")
    assert np.abs(read_audio(tmp_path / "loud.wav").pcm).max() == pytest.approx(4, rel=1e-2)


def test_a_wav_whose_data_size_is_zero_is_read_to_its_end(tmp_path):
    """Some streaming writers leave the data chunk's size 0 (length unknown); libsndfile reads no
    frames of it, and the file was refused as holding no samples. It is read to the end of the
    file (a trailing odd byte left out), as a size of 0xFFFFFFFF already was."""
    import struct

    x = (np.sin(np.arange(48000) / 10) * 0.5).astype(np.float32)
    sf.write(tmp_path / "ok.wav", x, 24000, "PCM_16")
    raw = bytearray((tmp_path / "ok.wav").read_bytes())
    at = raw.find(b"data")
    raw[at + 4 : at + 8] = struct.pack("<I", 0)
    raw[4:8] = struct.pack("<I", 0)
    (tmp_path / "stream.wav").write_bytes(bytes(raw) + b"\x01")
    want = read_audio(tmp_path / "ok.wav").pcm
    np.testing.assert_array_equal(read_audio(tmp_path / "stream.wav").pcm, want)


def test_write_wav_round_trip(tmp_path):
    pcm = (0.25 * np.sin(np.arange(4800) / 10)).astype(np.float32)
    path = write_wav(tmp_path / "sub" / "out.wav", pcm)
    back = read_audio(path)
    assert back.source_rate == 24000 and back.source_format == "WAV PCM_16"
    np.testing.assert_allclose(back.pcm, pcm, atol=1 / 32767)


def test_devices_and_the_standard_input(monkeypatch):
    """/dev/null is a device that gave nothing (not "a pipe"); an endless device stops at the
    cap instead of being read into memory whole; `-` reads the standard input (a pipe here)."""
    import subprocess
    import sys

    from personaplex_tui.audio import audio_file

    with pytest.raises(AudioFileError, match=r"^/dev/null gave no data \(a device that ended"):
        read_audio("/dev/null")
    monkeypatch.setattr(audio_file, "MAX_PIPE_BYTES", 3 << 20)
    with pytest.raises(AudioFileError, match="more than 3 MB came through the device"):
        read_audio("/dev/zero")
    root = Path(__file__).resolve().parents[1]
    code = "from personaplex_tui.audio import read_audio; print(read_audio('-').duration_s)"
    proc = subprocess.run(
        [sys.executable, "-c", code], input=(AUDIO / "weather.wav").read_bytes(),
        capture_output=True, cwd=root, env={"PYTHONPATH": str(root)}, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert abs(float(proc.stdout) - sf.info(str(AUDIO / "weather.wav")).duration) < 0.01


def test_a_file_read_in_blocks_is_the_file_read_whole():
    """`AudioStream` (the offline sound check reads hour-long recordings with it): the same
    account of the file and the same samples as `read_audio`, a block at a time, from the start
    as often as asked, padded with silence or cut to the length asked."""
    from personaplex_tui.audio.audio_file import AudioStream

    path = AUDIO / "shipping_44k_stereo.wav"  # 3 blocks of decoding, resampled, mixed down
    clip = read_audio(path)
    with AudioStream(path) as stream:
        said = (stream.source_rate, stream.source_channels, stream.source_format, stream.silent)
        assert said == (clip.source_rate, clip.source_channels, clip.source_format, clip.silent)
        assert stream.samples == len(clip.pcm) and stream.duration_s == clip.duration_s
        blocks = list(stream.blocks(1000))
        assert {len(b) for b in blocks[:-1]} == {1000} and 0 < len(blocks[-1]) <= 1000
        np.testing.assert_array_equal(np.concatenate(blocks), clip.pcm)
        longer = np.concatenate(list(stream.blocks(4096, len(clip.pcm) + 5000)))
        np.testing.assert_array_equal(longer[: len(clip.pcm)], clip.pcm)
        assert len(longer) == len(clip.pcm) + 5000 and not longer[len(clip.pcm) :].any()
        np.testing.assert_array_equal(next(stream.blocks(24000, 24000)), clip.pcm[:24000])


def test_a_file_read_in_blocks_is_refused_in_read_audios_sentences(tmp_path):
    import struct

    from personaplex_tui.audio.audio_file import AudioStream

    x = (0.5 * np.sin(np.arange(100_000) / 10)).astype(np.float32)
    sf.write(tmp_path / "cut.wav", x, 24000, "PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "cut.wav").read_bytes()[:100_044])
    nan = x.copy()
    nan[90_000] = np.nan  # past the first block decoded
    sf.write(tmp_path / "nan.wav", nan, 24000, "FLOAT")
    sf.write(tmp_path / "huge.wav", x * 1e30, 24000, "FLOAT")
    sf.write(tmp_path / "none.wav", np.zeros((0, 1)), 24000, "PCM_16")
    (tmp_path / "notes.wav").write_text("not audio\n" * 20)
    for name in ("cut.wav", "nan.wav", "huge.wav", "none.wav", "notes.wav", "missing.wav"):
        with pytest.raises(AudioFileError) as whole:
            read_audio(tmp_path / name)
        with pytest.raises(AudioFileError) as blocks:
            AudioStream(tmp_path / name)
        assert str(blocks.value) == str(whole.value), name
    sf.write(tmp_path / "ok.wav", x, 24000, "PCM_16")  # a length-less header: read to the end
    raw = bytearray((tmp_path / "ok.wav").read_bytes())
    raw[raw.find(b"data") + 4 : raw.find(b"data") + 8] = struct.pack("<I", 0)
    (tmp_path / "stream.wav").write_bytes(bytes(raw) + b"\x01")
    with AudioStream(tmp_path / "stream.wav") as stream:
        pcm = np.concatenate(list(stream.blocks(7000)))
    np.testing.assert_array_equal(pcm, read_audio(tmp_path / "ok.wav").pcm)


def test_audio_written_in_blocks_is_what_write_wav_writes(tmp_path):
    """`AudioWriter` (the offline sound check's output, written as it is cancelled): the bytes
    of `write_wav`'s WAV, the samples of its FLAC; unfinished, the file is removed."""
    from personaplex_tui.audio.audio_writing import AudioWriter

    rng = np.random.default_rng(3)
    pcm = np.clip(0.4 * rng.standard_normal(50_000), -1.2, 1.2).astype(np.float32)
    for ext in ("wav", "flac"):
        whole = write_wav(tmp_path / f"whole.{ext}", pcm)
        with AudioWriter(tmp_path / "sub" / f"blocks.{ext}", len(pcm)) as out:
            for start in range(0, len(pcm), 7000):
                out.write(pcm[start : start + 7000])
        blocks = tmp_path / "sub" / f"blocks.{ext}"
        if ext == "wav":
            assert blocks.read_bytes() == whole.read_bytes()
        np.testing.assert_array_equal(sf.read(blocks)[0], sf.read(whole)[0])
        with pytest.raises(RuntimeError), AudioWriter(tmp_path / f"cut.{ext}", 100) as out:
            out.write(pcm[:50])
            raise RuntimeError("the canceller failed")
        assert not (tmp_path / f"cut.{ext}").exists()


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_a_full_disk_while_writing_in_blocks_is_its_reason_and_leaves_no_file(
    tmp_path, monkeypatch, ext
):
    import errno

    from personaplex_tui.audio import audio_writing
    from personaplex_tui.audio.audio_writing import AudioWriter

    real_open = open

    class Full:  # a disk with room for 20 kB
        def __init__(self, path, mode):
            self._f, self._room = real_open(path, mode), 20_000

        def write(self, data):
            if len(data) > self._room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self._room -= len(data)
            return self._f.write(data)

        def seek(self, *args):
            return self._f.seek(*args)

        def tell(self):
            return self._f.tell()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    monkeypatch.setattr(audio_writing, "open", Full, raising=False)
    rng = np.random.default_rng(4)
    pcm = (0.3 * rng.standard_normal(240_000)).astype(np.float32)
    path = tmp_path / f"clean.{ext}"
    with pytest.raises(AudioFileError) as info, AudioWriter(path, len(pcm)) as out:
        for start in range(0, len(pcm), 24000):
            out.write(pcm[start : start + 24000])
    assert str(info.value) == f"Could not write the audio file {path}: No space left on device."
    assert not path.exists()


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_a_failed_write_leaves_an_older_file_of_that_name_as_it_was(tmp_path, monkeypatch, ext):
    """The output was opened with "wb" (emptied at once) and removed on a failure, Ctrl+C or
    kill: a file already there (last run's cleaned audio) was lost with the new one."""
    import errno

    from personaplex_tui.audio import audio_writing
    from personaplex_tui.audio.audio_writing import AudioWriter

    path = tmp_path / f"clean.{ext}"
    older = write_wav(path, np.full(4800, 0.25, np.float32)).read_bytes()
    real_open = open

    def full(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode:
            handle.write = lambda data: (_ for _ in ()).throw(
                OSError(errno.ENOSPC, "No space left on device")
            )
        return handle

    monkeypatch.setattr(audio_writing, "open", full, raising=False)
    with pytest.raises(AudioFileError, match="No space left on device"):
        with AudioWriter(path, 24000) as out:
            out.write(np.zeros(24000, np.float32))
    assert path.read_bytes() == older
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no part file left
    monkeypatch.undo()  # (a disk with room again)
    with pytest.raises(KeyboardInterrupt), AudioWriter(path, 24000) as out:  # Ctrl+C mid-way
        out.write(np.zeros(2400, np.float32))
        raise KeyboardInterrupt
    assert path.read_bytes() == older and len(list(tmp_path.iterdir())) == 1


def test_a_written_file_replaces_an_older_one_keeping_its_mode_and_any_link(tmp_path):
    import os
    import stat

    target = tmp_path / "real.wav"
    write_wav(target, np.zeros(100, np.float32))
    os.chmod(target, 0o640)
    link = tmp_path / "link.wav"
    link.symlink_to(target)
    pcm = np.full(2400, 0.5, np.float32)
    write_wav(link, pcm)
    assert link.is_symlink() and link.resolve() == target
    np.testing.assert_allclose(read_audio(target).pcm, pcm, atol=1 / 32767)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.wav", "real.wav"]
