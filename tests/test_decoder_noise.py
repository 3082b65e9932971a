"""libmpg123 (libsndfile's MP3 decoder) prints its notes on damaged frames straight to fd 2: they
are kept off the user's terminal, and a file whose frames were skipped gets one sentence."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from personaplex_tui import stderr_capture
from personaplex_tui.audio import read_audio
from personaplex_tui.audio.audio_file import AudioStream
from personaplex_tui.audio.decoder_noise import damaged_note, is_decoder_noise
from personaplex_tui.conversation import ControllerConfig
from personaplex_tui.events import Notice
from personaplex_tui.stderr_capture import fd2_filtered, stderr_to_file
from tests.conversation_fakes import Events, FakeModel, Probe, run_until_ended

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "data" / "audio"
MPG123_TEXT = ("Illegal Audio-MPEG-Header", "libmpg123", "Note:", "Warning:", "resync")


def test_this_libsndfile_reads_mp3():
    """soundfile's wheels bundle libsndfile 1.1+ (MP3 through libmpg123): the rest needs it."""
    assert "MP3" in sf.available_formats()


@pytest.fixture(scope="module")
def mp3s(tmp_path_factory) -> dict[str, Path]:
    """weather.wav as MP3: whole; with 200 bytes of junk in its middle (the decoder skips a
    frame, resyncs, and says so on fd 2); with 2000 bytes after its end (a tag: only the
    decoder's Xing warning, no frame lost)."""
    folder = tmp_path_factory.mktemp("mp3")
    data, rate = sf.read(AUDIO / "weather.wav", dtype="float32")
    clean = folder / "clean.mp3"
    sf.write(clean, data, rate, format="MP3")
    raw = clean.read_bytes()
    junk = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    damaged, tagged = folder / "damaged.mp3", folder / "tagged.mp3"
    damaged.write_bytes(raw[: len(raw) // 2] + junk + raw[len(raw) // 2 :])
    tagged.write_bytes(raw + b"\0" * 2000)
    return {"clean": clean, "damaged": damaged, "tagged": tagged}


def _raw_stderr(path: Path) -> str:
    """What decoding `path` with soundfile alone prints on stderr (in a fresh process)."""
    code = f"import soundfile as sf; sf.read({str(path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return proc.stderr


def _transcribe(path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`ppx-tui transcribe --input path` on an STT model folder that does not exist: it reads
    the file (and says what it says of it) before it fails to load the model."""
    return subprocess.run(
        [sys.executable, "-m", "personaplex_tui", "transcribe", "--input", str(path),
         "--stt-model", str(tmp / "no-model")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip


def test_transcribe_keeps_the_decoders_notes_off_the_terminal_and_says_one_sentence(mp3s, tmp_path):
    # the premise: this libsndfile's decoder writes on stderr for these files
    raw = _raw_stderr(mp3s["damaged"])
    assert "Illegal Audio-MPEG-Header" in raw and "Skipped 200 bytes" in raw
    assert all(is_decoder_noise(line) for line in raw.splitlines())
    assert "Xing stream size off" in _raw_stderr(mp3s["tagged"])
    assert _raw_stderr(mp3s["clean"]) == ""
    said = {}
    for name, path in mp3s.items():
        proc = _transcribe(path, tmp_path)
        assert "Traceback" not in proc.stderr
        assert not [t for t in MPG123_TEXT if t in proc.stderr], proc.stderr
        assert "No model folder at" in proc.stderr  # it went on past the file
        said[name] = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert said == {
        "clean": [],
        "damaged": [f"warning: {damaged_note(str(mp3s['damaged']))}"],
        "tagged": [],  # the Xing warning alone is no lost frame: nothing to say
    }
    assert said["damaged"][0].endswith("has damaged frames; the decoder skipped them, so its "
                                       "audio may have gaps.")  # fmt: skip


def test_the_offline_sound_check_says_it_once_and_prints_none_of_the_decoder(mp3s, tmp_path):
    """`sound-check --far damaged.mp3` reads the file three times (a check, the delay's window,
    the cancelling): the notes of every pass stay off the terminal, the sentence is one note."""
    proc = subprocess.run(
        [sys.executable, "-m", "personaplex_tui", "sound-check", "--far", str(mp3s["damaged"]),
         "--mic", str(AUDIO / "weather.wav"), "--output", str(tmp_path / "clean.wav")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert not [t for t in MPG123_TEXT if t in proc.stderr], proc.stderr
    assert proc.returncode == 0 and proc.stderr == ""  # (the canceller is a dependency: it runs)
    assert proc.stdout.count(damaged_note(str(mp3s["damaged"]))) == 1


def test_read_audio_and_audio_stream_take_the_notes_off_fd_2(mp3s, capfd):
    """In process: fd 2 (pytest's capture here) gets nothing of the decoder, and is fd 2 again
    afterwards; the clip and the stream say the same."""
    clip = read_audio(mp3s["damaged"])
    with AudioStream(mp3s["damaged"]) as stream:
        assert sum(len(b) for b in stream.blocks(4800)) == stream.samples
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert clip.damaged and stream.damaged
    assert clip.warning == stream.file_warning == damaged_note(str(mp3s["damaged"]))
    for name in ("clean", "tagged"):
        assert read_audio(mp3s[name]).warning is None
    assert capfd.readouterr().err == ""


def test_the_chats_start_up_check_says_it_before_the_screen(mp3s, tmp_path, capfd):
    from personaplex_tui.cli import build_parser
    from personaplex_tui.commands.chat import check_settings
    from personaplex_tui.settings_flags import resolve_settings

    flags = ["--input-file", str(mp3s["damaged"]), "--config", str(tmp_path / "settings.toml")]
    check_settings(resolve_settings(build_parser().parse_args(flags))[0])
    err = capfd.readouterr().err
    assert err == f"ppx-tui: warning: {damaged_note(str(mp3s['damaged']))}\n"


def _chat_says(path: Path, how: str, folder: Path) -> tuple[list[Notice], list[str]]:
    """The warning notices of a duplex conversation whose input file is `path` (or, `how` =
    "fifo", a FIFO fed its bytes, as `<(cat path)`), and the notes of its transcript."""
    folder.mkdir()
    source = path
    if how == "fifo":
        source = folder / "talk.fifo"
        os.mkfifo(source)
        data = path.read_bytes()

        def write() -> None:
            with open(source, "wb") as f:
                f.write(data)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
    config = ControllerConfig(
        mode="duplex", input_file=source, output_file=folder / "agent.wav", record_dir=folder
    )
    events = Events()
    asyncio.run(run_until_ended(config, Probe(FakeModel()), events))
    (recording,) = [p for p in folder.iterdir() if p.is_dir()]
    entries = [json.loads(line) for line in (recording / "transcript.jsonl").open()]
    notes = [e["text"] for e in entries if e["type"] == "note"]
    return [n for n in events.of(Notice) if n.severity == "warning"], notes


@pytest.mark.parametrize("how", ["file", "fifo"])
def test_the_chat_says_a_damaged_mp3_once_as_a_notice_and_a_transcript_note(mp3s, how, tmp_path):
    """In the TUI fd 2 is its log (`stderr_to_file`) and the file mic reads `--input-file` on a
    worker thread, so the decoder's lines cannot be taken off fd 2: they stay in the log, and
    are read back from it. A damaged MP3 (a file, or a pipe that only the chat reads) is said
    once, as a warning notice and a transcript note, in `read_audio`'s sentence; a clean one
    and one with a tag after its audio say nothing."""
    log = tmp_path / "ppx-tui.log"
    said = {}
    with stderr_to_file(log):
        for name, path in mp3s.items():
            said[name] = _chat_says(path, how, tmp_path / name)
    for name in ("clean", "tagged"):
        notices, notes = said[name]
        assert not [n for n in notices if "MP3" in n.message], notices
        assert not [n for n in notes if "MP3" in n], notes
    notices, notes = said["damaged"]
    shown = mp3s["damaged"] if how == "file" else tmp_path / "damaged" / "talk.fifo"
    sentence = damaged_note(str(shown))
    assert [n.message for n in notices if "MP3" in n.message] == [sentence]
    assert [n for n in notes if "MP3" in n] == [sentence]
    assert "Illegal Audio-MPEG-Header" in log.read_text()  # the decoder's lines: in the log


def test_fd2_filtered_passes_other_text_on_and_restores_fd_2_on_an_error(capfd):
    dropped: list[str] = []
    with pytest.raises(RuntimeError), fd2_filtered(is_decoder_noise, dropped):
        os.write(2, b"Note: Trying to resync...\nsomething else\n")
        raise RuntimeError("the call failed")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "something else\nafter\n"
    assert dropped == ["Note: Trying to resync..."]


def test_under_the_tuis_log_the_lines_of_the_block_are_read_back_on_any_thread(tmp_path):
    """`stderr_to_file` keeps the log's own file open for reading: a block on a worker thread
    finds the lines written to fd 2 during it (not those before or after), the log keeps them
    all, and a log renamed meanwhile (the logging module's rotation) is still the one read."""
    log, dropped = tmp_path / "ppx-tui.log", []

    def worker() -> None:
        with fd2_filtered(is_decoder_noise, dropped):
            os.write(2, b"Note: inside\nsomething else\n")
            log.rename(tmp_path / "ppx-tui.log.1")
            os.write(2, b"Warning: still inside\n")

    with stderr_to_file(log):
        os.write(2, b"Note: before\n")
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        os.write(2, b"Note: after\n")
    assert dropped == ["Note: inside", "Warning: still inside"]
    assert (tmp_path / "ppx-tui.log.1").read_text() == (
        "Note: before\nNote: inside\nsomething else\nWarning: still inside\nNote: after\n"
    )


def test_fd2_is_left_alone_off_the_main_thread_and_under_the_tuis_log(capfd, monkeypatch):
    """Pointing fd 2 elsewhere is process-wide: not done from a worker thread (the app's file
    microphone opens there, while the engine's thread runs), nor while the TUI sends fd 2 to
    its log already."""
    dropped: list[str] = []

    def worker() -> None:
        with fd2_filtered(is_decoder_noise, dropped):
            os.write(2, b"Note: from a thread\n")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    monkeypatch.setattr(stderr_capture, "_to_log", True)
    with fd2_filtered(is_decoder_noise, dropped):
        os.write(2, b"Note: under the TUI\n")
    assert capfd.readouterr().err == "Note: from a thread\nNote: under the TUI\n"
    assert dropped == []
