"""A crash mid-conversation loses at most the last second: the process running a full-duplex
conversation (the real engine, controller and recording, via `ppx-tui soak`) is killed with
SIGKILL, and what it left on disk is checked — standard WAVs holding all but the last second,
JSON lines that all parse, a readable Markdown transcript."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

from tests.checkpoints import small_config, write_small_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SECOND = 24000  # samples
KILL_AT = 300  # frames (24 s of conversation)


def _whole_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    return lines[:-1]  # the last piece is "" after a newline, or a line still being written


def test_sigkill_mid_session_keeps_all_but_the_last_second(tmp_path):
    ckpt = write_small_checkpoint(tmp_path / "ckpt", config=small_config(context=50))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "personaplex_tui",
            "soak",
            "--model",
            str(ckpt),
            "--frames",
            "100000",
            "--every",
            "1",
            "--record-dir",
            str(tmp_path / "run"),
        ],  # fmt: skip
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    printed = b""

    def last_frame() -> int:  # the soak prints a line after every step: "soak: frame N: ..."
        frames = [
            int(x.split()[2].rstrip(b":"))
            for x in _whole_lines(printed)
            if x.startswith(b"soak: frame ")
        ]
        return frames[-1] if frames else 0

    deadline = time.monotonic() + 180
    while last_frame() < KILL_AT:
        ready, _, _ = select.select([fd], [], [], 1.0)
        chunk = os.read(fd, 1 << 16) if ready else b""
        assert (chunk or not ready) and time.monotonic() < deadline, (proc.poll(), printed[-500:])
        printed += chunk
    proc.send_signal(signal.SIGSTOP)  # frozen: read what it printed up to now, then kill it
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        printed += chunk
    frame = last_frame()
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    (folder,) = (tmp_path / "run" / "recording").iterdir()
    # `frame` steps had been taken: their mic audio was written before each step, their agent
    # audio (all but maybe the last) after it. The WAV headers count what was flushed.
    for name, made in (("mic.wav", frame), ("agent.wav", frame - 1)):
        with wave.open(str(folder / name)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
            kept = w.getnframes()
            assert len(w.readframes(kept)) == 2 * kept  # the data is really there
        assert made * 1920 - SECOND - 1920 <= kept <= (frame + 1) * 1920, (name, kept, made)

    lines = (folder / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]  # every line whole: flushed entry by entry
    assert entries[0]["type"] == "session" and entries[0]["mode"] == "duplex"
    texts = [e for e in entries if e["type"] == "text"]
    assert texts and all(isinstance(e["text"], str) and e["t"] >= 0 for e in texts)
    assert max(e["t"] for e in texts) <= frame * 0.08  # nothing from after the kill
    assert entries[-1]["type"] != "end"  # it did die mid-session
    markdown = (folder / "transcript.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Conversation") and "**Agent** · " in markdown
