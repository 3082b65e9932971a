"""An Ogg input cut short (an interrupted download) that only a pipe or the soak hands over is
said in the sentence `read_audio` says of it: the soak's `--input` (a file, or `-`), the chat's
input through a pipe (`<(command)`: a notice in the app), and the chat's refusal of its own
standard input, where its screen reads the keys."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from personaplex_tui.audio import read_audio
from personaplex_tui.audio.file_checks import cut_short_note
from personaplex_tui.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from personaplex_tui.conversation import ControllerConfig
from personaplex_tui.events import Notice
from tests.conversation_fakes import AUDIO, Events, FakeModel, Probe, run_until_ended

ROOT = Path(__file__).resolve().parents[1]
CUT_SHORT = "seems cut short (its Ogg stream stops without its end"


@pytest.fixture(scope="module")
def oggs(tmp_path_factory) -> tuple[Path, Path]:
    """weather.wav as Ogg Vorbis, whole and without its last 700 bytes."""
    folder = tmp_path_factory.mktemp("ogg")
    data, rate = sf.read(AUDIO / "weather.wav", dtype="float32")
    whole, cut = folder / "whole.ogg", folder / "cut.ogg"
    sf.write(whole, data, rate, format="OGG", subtype="VORBIS")
    cut.write_bytes(whole.read_bytes()[:-700])
    return whole, cut


def _run(argv: list[str], stdin: bytes | None, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "PPX_TUI_CONFIG": str(tmp / "settings.toml"),
        "PPX_TUI_LOG": str(tmp / "ppx-tui.log"),
    }
    return subprocess.run(
        [sys.executable, "-m", "personaplex_tui", *argv],
        input=b"" if stdin is None else stdin,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("how", ["file", "pipe"])
def test_the_soak_says_its_input_is_cut_short(oggs, how, tmp_path):
    """`soak --input cut.ogg` and `soak --input - < cut.ogg` run on the audio there is and say
    so once, on stderr, before the soak; the whole file says nothing."""
    said = {}
    for path in oggs:
        name, stdin = (str(path), None) if how == "file" else ("-", path.read_bytes())
        soak = ["soak", "--frames", "3", "--context", "50", "--voice-frames", "20"]
        proc = _run([*soak, "--prompt-tokens", "10", "--input", name], stdin, tmp_path)
        err = proc.stderr.decode()
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        said[path.name] = [line for line in err.splitlines() if "warning" in line]
    assert said["whole.ogg"] == []
    (line,) = said["cut.ogg"]
    shown = str(oggs[1]) if how == "file" else "/dev/stdin"
    assert line.startswith(f"soak: warning: The audio file {shown} {CUT_SHORT}, as after an ")
    assert line.endswith(" s are used as far as they go.")


def _feed_fifo(fifo: Path, data: bytes) -> threading.Thread:
    """A writer that opens `fifo` (when the reader does) and writes `data`, then closes it."""

    def write() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _notices_of_a_piped_input(fifo: Path, data: bytes) -> tuple[list[Notice], float]:
    """The notices of a duplex conversation whose input file is `fifo`, fed `data`, and the
    seconds of reply it wrote (one 80 ms frame per frame of input stepped)."""
    writer = _feed_fifo(fifo, data)
    out = fifo.with_name(f"agent_{len(data)}.wav")
    config = ControllerConfig(mode="duplex", input_file=fifo, output_file=out)
    events = Events()
    asyncio.run(run_until_ended(config, Probe(FakeModel()), events))
    writer.join(10)
    return events.of(Notice), read_audio(out).duration_s


def test_the_chat_says_a_piped_input_is_cut_short(oggs, tmp_path):
    """`ppx-tui --input-file <(curl ...)` (a pipe: read once, by the conversation, not by the
    start-up check): an Ogg stream cut short is played as far as it goes and said as a warning
    notice (the app shows it; the transcript keeps it as a note); a whole one is not."""
    fifo = tmp_path / "talk.fifo"
    os.mkfifo(fifo)
    whole, cut = oggs
    notices, whole_played = _notices_of_a_piped_input(fifo, whole.read_bytes())
    assert not [n for n in notices if "cut" in n.message]
    notices, played = _notices_of_a_piped_input(fifo, cut.read_bytes())
    (said,) = [n for n in notices if CUT_SHORT in n.message]
    assert said.severity == "warning"
    # the audio up to the cut, as the file itself reads, is what the note names and what was
    # stepped: every frame of it (the last one padded), not one more, and less than the whole
    duration = read_audio(cut).duration_s
    assert said.message == cut_short_note(str(fifo), duration)
    frame_s = FRAME_SAMPLES / SAMPLE_RATE
    assert played == pytest.approx(math.ceil(duration / frame_s) * frame_s, abs=1e-6)
    assert played < whole_played


@pytest.mark.parametrize("how", ["pipe", "dash", "redirect"])
def test_the_chat_refuses_its_own_standard_input_as_the_input_file(oggs, how, tmp_path):
    """The chat's screen reads the keys from the standard input: audio piped or redirected into
    it was read as keys (Textual's UnicodeDecodeError, a traceback). One sentence, exit 2."""
    cut = oggs[1]
    if how in ("pipe", "dash"):
        named = "/dev/stdin" if how == "pipe" else "-"  # ("-" was "does not exist")
        proc = _run(["--input-file", named], cut.read_bytes(), tmp_path)
    else:
        with open(cut, "rb") as stdin:
            proc = subprocess.run(
                [sys.executable, "-m", "personaplex_tui", "--input-file", str(cut)],
                stdin=stdin, capture_output=True, cwd=ROOT, timeout=60,
                env={**os.environ, "PYTHONPATH": str(ROOT),
                     "PPX_TUI_CONFIG": str(tmp_path / "settings.toml")},
            )  # fmt: skip
        named = str(cut)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err == (
        f"ppx-tui: --input-file {named} is the standard input, where the chat reads its keys; "
        "give the audio as a file, or a command's output as <(command).\n"
    )


def test_a_cut_short_ogg_read_through_the_chat_file_mic_keeps_its_audio(oggs):
    """The notice does not cost the audio: the file mic plays what `read_audio` reads."""
    from personaplex_tui.audio import FileMic, read_audio

    whole, cut = oggs
    mic = FileMic(cut, realtime=False)
    assert mic.file_warning == read_audio(cut).warning
    assert FileMic(whole, realtime=False).file_warning is None
    assert FileMic(np.zeros(1920, np.float32)).file_warning is None
