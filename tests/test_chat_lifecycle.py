"""The chat's life as a user sees it in a real terminal (a pty) on a small checkpoint: a reset
starts the new conversation on the screen exactly where its recording starts, and a model that
cannot be loaded ends the app with a non-zero exit code and its sentence."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

from tests.tui_pty import ROOT, PtyProcess, after_screen, user_env

CONVERSATION = str(ROOT / "tests" / "data" / "audio" / "conversation.wav")
FRAME_BYTES = 2 * 1920
COPIED = re.compile(r"\x1b\]52;c;([A-Za-z0-9+/=]*)\x07")  # OSC 52: what `c` copied


def said(text: str) -> str:
    return re.sub(r"\s", "", text)


def screen_agent_text(part: str) -> str:
    """The agent's words in a piece of the copied transcript (`[agent 1.2 s] words`)."""
    return said("".join(re.findall(r"^\[agent [\d.]+ s\] (.*)$", part, re.MULTILINE)))


def file_agent_text(folder: Path) -> str:
    lines = (folder / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    return said("".join(e["text"] for e in map(json.loads, lines) if e["type"] == "text"))


def test_after_a_reset_the_screen_and_the_files_split_the_conversations_alike(
    small_checkpoint, tmp_path
):
    """Defect 12: the last piece of the old conversation showed under "new conversation"."""
    record = tmp_path / "record"
    tui = PtyProcess(["--model", str(small_checkpoint), "--mode", "duplex", "--input-file", CONVERSATION,
                      "--output-file", str(tmp_path / "out.wav"), "--record", str(record)],
                     env=user_env(tmp_path))  # fmt: skip

    def recordings() -> list[int]:  # agent.wav sizes, oldest first
        return [f.stat().st_size for f in sorted(record.glob("*/agent.wav"))]

    def talking(n: int) -> bool:
        """Session n is live, has 15 frames of agent audio and has said something (its
        transcript is flushed per entry): a reset then splits a conversation with text in it."""
        folders = sorted(p.parent for p in record.glob("*/agent.wav"))
        if len(folders) != n or recordings()[-1] <= 15 * FRAME_BYTES:
            return False
        try:
            return file_agent_text(folders[-1]) != ""
        except (OSError, ValueError):  # not written yet, or a line being written
            return False

    try:
        for session in (1, 2, 3):  # resets while the model talks (each one could misplace text)
            tui.wait_for(lambda n=session: talking(n), 120, f"live in session {session}")
            os.write(tui.master, b"r")
        tui.wait_for(lambda: talking(4), 120, "live in session 4")
        shown = len(tui.output)
        os.write(tui.master, b" ")  # stop talking, then copy the transcript and quit
        # the status bar says READY once the run has ended: its last words are on the screen
        tui.wait_for(lambda: " READY " in tui.output[shown:], 30, "stopped talking")
        os.write(tui.master, b"c")
        tui.wait_for(lambda: bool(COPIED.search(tui.output)), 30, "copied")
        os.write(tui.master, b"q")
        assert tui.wait(timeout=30) == 0
        copied = base64.b64decode(COPIED.findall(tui.output)[-1]).decode("utf-8")
    finally:
        tui.close()
    on_screen = copied.split("-- new conversation --")
    folders = sorted(p.parent for p in record.glob("*/agent.wav"))
    assert len(on_screen) == len(folders) == 4
    for part, folder in zip(on_screen, folders, strict=True):
        assert screen_agent_text(part) == file_agent_text(folder) != ""


def test_the_chat_exits_2_after_a_fatal_load_error(small_checkpoint, tmp_path):
    """Defect 13: a truncated mimi.safetensors, the error banner, `q`: it exited 0."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in small_checkpoint.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "mimi.safetensors").unlink()
    data = (small_checkpoint / "mimi.safetensors").read_bytes()
    (broken / "mimi.safetensors").write_bytes(data[: len(data) // 2])
    tui = PtyProcess(["--model", str(broken), "--input-file", CONVERSATION,
                      "--output-file", str(tmp_path / "out.wav")], env=user_env(tmp_path))  # fmt: skip
    try:
        tui.wait_for(lambda: " ERROR " in tui.output, 120, "showing the error")
        os.write(tui.master, b"q")
        assert tui.wait(timeout=30) == 2
        out = tui.output
    finally:
        tui.close()
    assert "Traceback" not in out
    last = after_screen(out)[-1]
    assert last.startswith("ppx-tui: ") and "mimi.safetensors" in last and last.endswith(".")


def test_ctrl_c_in_the_chat_stops_it_as_sigint_does(small_checkpoint, tmp_path):
    """In the chat's raw-mode terminal, Ctrl+C is a key (byte 3), not a signal: Textual's own
    answer was a "Press q to quit" notice, and the chat kept running. It stops the chat as
    SIGINT does: every file finished, "interrupted.", exit 130."""
    record = tmp_path / "record"
    tui = PtyProcess(["--model", str(small_checkpoint), "--mode", "duplex", "--input-file", CONVERSATION,
                      "--output-file", str(tmp_path / "out.wav"), "--record", str(record),
                      "--no-user-transcript"], env=user_env(tmp_path))  # fmt: skip
    try:
        tui.wait_for(
            lambda: any(f.stat().st_size > 15 * FRAME_BYTES for f in record.glob("*/agent.wav")),
            120,
            "live",
        )
        os.write(tui.master, b"\x03")
        assert tui.wait(timeout=30) == 130
        out = tui.output
    finally:
        tui.close()
    assert "Traceback" not in out and "Do you want to quit?" not in out
    assert after_screen(out)[-1] == "ppx-tui: interrupted."
    (folder,) = sorted(record.iterdir())
    last = json.loads((folder / "transcript.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert last["type"] == "end"
