"""A bug that crashes the chat mid-conversation (an exception no handler catches) on the small
real model: the conversation is shut down as quitting does, every file finished, no thread of
ours left, and `ppx-tui` exits with 1 under Textual's traceback, not with a C++ abort."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
import soundfile as sf

from personaplex_tui.audio import FRAME_SAMPLES, SAMPLE_RATE, read_audio
from personaplex_tui.conversation import AudioFactory
from personaplex_tui.tui.screens.main_screen import MainScreen
from tests.conversation_fakes import CONVERSATION
from tests.test_chat_app import chat_app, until
from tests.tui_pty import PtyProcess, after_screen, user_env

BUG = "a bug in MainScreen.show_live"
# `ppx-tui` whose meters break once the conversation runs (the pty test's program)
CRASHING_PPX = (
    "import sys, pytest\n"
    "from tests.test_chat_crash import break_live_updates\n"
    "break_live_updates(pytest.MonkeyPatch(), after=5)\n"
    "from personaplex_tui.entry import main\n"
    "sys.exit(main())\n"
)


def break_live_updates(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """The main screen's live update (meters, timings) raises once it has shown `after` updates
    of a duplex conversation, as a bug in a widget would."""
    show_live = MainScreen.show_live
    shown = 0

    def broken(self: MainScreen, data: object) -> None:
        nonlocal shown
        if getattr(self.app, "state", "") == "duplex":
            shown += 1
            if shown > after:
                raise RuntimeError(BUG)
        show_live(self, data)  # type: ignore[arg-type]

    monkeypatch.setattr(MainScreen, "show_live", broken)


def our_threads(but: set[threading.Thread]) -> list[str]:
    """The threads a conversation starts (engine, disk syncs, paced files, echo cancelling)
    alive now, but those in `but` (alive before it started)."""
    names = [t.name for t in threading.enumerate() if t.is_alive() and t not in but]
    return [n for n in names if n.startswith("ppx-") or n in ("file-mic", "file-speaker")]


def finished_wav_frames(path: Path) -> int:
    """The frames a WAV's header announces, which must be every sample on the disk (a header
    not finished after the last write announces fewer)."""
    info = sf.info(str(path))
    assert info.subtype == "PCM_16" and info.channels == 1, info
    assert path.stat().st_size == 44 + 2 * info.frames, (path, info.frames)
    return info.frames


def assert_recording_finished(folder: Path, most_frames: int) -> None:
    """Both tracks finished and as long as each other, and the transcript ended at their end."""
    mic, agent = finished_wav_frames(folder / "mic.wav"), finished_wav_frames(folder / "agent.wav")
    assert 0 < mic == agent <= most_frames and mic % FRAME_SAMPLES == 0
    assert len(read_audio(folder / "mic.wav").pcm) == mic
    entries = [json.loads(line) for line in (folder / "transcript.jsonl").read_text().splitlines()]
    assert entries[-1]["type"] == "end" and entries[-1]["t"] == round(mic / SAMPLE_RATE, 3)


@pytest.mark.asyncio
async def test_a_crash_mid_conversation_shuts_it_down_as_quitting_does(
    small_checkpoint, tmp_path, monkeypatch
):
    break_live_updates(monkeypatch, after=5)
    before = set(threading.enumerate())
    app = chat_app(
        tmp_path,
        *("--model", str(small_checkpoint), "--mode", "duplex", "--input-file", str(CONVERSATION)),
        *("--output-file", str(tmp_path / "agent.wav"), "--record", str(tmp_path / "rec")),
        audio=AudioFactory(realtime_files=True, file_end="end"),  # paced, as a microphone is
    )
    with pytest.raises(RuntimeError, match=BUG):  # (run_test raises it again for the test)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.return_code is not None)  # Textual's 1: it crashed
    assert app.controller is not None and app.controller.closed
    assert our_threads(but=before) == []
    assert app.crashed and app.return_code == app.exit_code == 1
    (folder,) = [p for p in (tmp_path / "rec").iterdir() if p.is_dir()]
    n = len(read_audio(CONVERSATION).pcm) // FRAME_SAMPLES + 1
    assert_recording_finished(folder, n * FRAME_SAMPLES - 1)  # (stopped before the file's end)
    finished_wav_frames(tmp_path / "agent.wav")


def test_ppx_tui_exits_1_after_a_crash_with_the_traceback_and_no_abort(small_checkpoint, tmp_path):
    record = tmp_path / "rec"
    tui = PtyProcess(
        ["--model", str(small_checkpoint), "--mode", "duplex", "--input-file", str(CONVERSATION),
         "--output-file", str(tmp_path / "agent.wav"), "--record", str(record)],
        env=user_env(tmp_path), program=("-c", CRASHING_PPX), size=(120, 40),
    )  # fmt: skip
    try:
        tui.wait_for(lambda: BUG in tui.output or tui.proc.poll() is not None, 120, "crashed")
        try:  # (it went on talking for ever on the engine's thread, which the exit waits for)
            code = tui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"running 30 s after the crash: {tui.output[-800:]!r}") from None
        out = tui.output
    finally:
        tui.close()
    assert "terminate called" not in out, out[-800:]
    assert code == 1, out[-2000:]
    lines = after_screen(out)
    assert any(f"RuntimeError: {BUG}" in line for line in lines)  # Textual's traceback
    log = tmp_path / "ppx-tui.log"
    assert lines[-3:] == [
        f"ppx-tui: the chat stopped on a bug (above); its log is {log}.",
        f"ppx-tui: recordings are in {record}",
        f"ppx-tui: the agent's audio is in {tmp_path / 'agent.wav'}",
    ]
    assert "the app crashed" in log.read_text() and BUG in log.read_text()
    (folder,) = [p for p in record.iterdir() if p.is_dir()]
    n = len(read_audio(CONVERSATION).pcm) // FRAME_SAMPLES + 1
    assert_recording_finished(folder, n * FRAME_SAMPLES - 1)
    finished_wav_frames(tmp_path / "agent.wav")
