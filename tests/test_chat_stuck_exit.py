"""A chat whose shutdown never finishes (an audio device whose close hangs, a model step that never
returns) still ends soon after `q` or Ctrl+C, in a real terminal on the small real model: it says
so in one sentence, exits with the code quitting gives, and the recordings are readable. The
process used to hang after the screen closed (the interpreter joins the stuck threads at exit),
and a second Ctrl+C did nothing: only kill -9 ended it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf

from personaplex_tui.audio import FRAME_SAMPLES
from tests.conversation_fakes import CONVERSATION
from tests.tui_pty import PtyProcess, after_screen, user_env

# `ppx-tui` whose conversation does not stop (the pty test's program): HOW is "engine" (the
# shutdown never returns, even cancelled; the conversation goes on on the engine's thread) or
# "device" (the audio devices' close blocks a thread of asyncio's default executor for good)
STUCK_PPX = (
    "import sys, pytest\n"
    "from tests.test_chat_stuck_exit import stick_shutdown\n"
    "stick_shutdown(pytest.MonkeyPatch(), sys.argv.pop(1))\n"
    "from personaplex_tui.entry import main\n"
    "sys.exit(main())\n"
)
STUCK = (
    "ppx-tui: the model or an audio device did not stop within 1 s; ppx-tui exits without "
    "waiting for it (recordings keep every frame written until then)."
)


def stick_shutdown(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The conversation's shutdown hangs as `how` says; the app waits 1 s for it."""
    from personaplex_tui.conversation.audio_factory import AudioRig
    from personaplex_tui.conversation.controller import ConversationController

    monkeypatch.setattr("personaplex_tui.tui.app.SHUTDOWN_TIMEOUT_S", 1.0)
    if how == "engine":

        async def hangs(self: ConversationController) -> None:
            while True:  # not even cancelling ends it (as a cleanup waiting on a stuck thread)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)

        monkeypatch.setattr(ConversationController, "shutdown", hangs)
    else:
        monkeypatch.setattr(AudioRig, "close", lambda self: time.sleep(3600))


def readable_frames(path: Path) -> int:
    """The frames of a WAV that soundfile reads whole (its header is rewritten per frame)."""
    pcm, rate = sf.read(str(path), dtype="int16")
    assert rate == 24000 and pcm.ndim == 1
    return len(pcm)


@pytest.mark.parametrize(
    ("how", "stop", "code", "last"),
    [("engine", "q", 0, None), ("device", "SIGINT", 130, "ppx-tui: interrupted.")],
)
def test_a_stuck_shutdown_still_ends_the_chat(small_checkpoint, tmp_path, how, stop, code, last):
    record, out = tmp_path / "rec", tmp_path / "agent.wav"
    tui = PtyProcess(
        [how, "--model", str(small_checkpoint), "--mode", "duplex", "--input-file",
         str(CONVERSATION), "--output-file", str(out), "--record", str(record),
         "--no-user-transcript"],
        env=user_env(tmp_path), program=("-c", STUCK_PPX), size=(120, 40),
    )  # fmt: skip

    def talking() -> bool:  # duplex, with some agent audio recorded
        tracks = list(record.glob("*/agent.wav"))
        return bool(tracks) and tracks[0].stat().st_size > 44 + 10 * 2 * FRAME_SAMPLES

    try:
        tui.wait_for(talking, 120, "talking")
        if stop == "q":
            os.write(tui.master, b"q")
        else:
            tui.kill(signal.SIGINT)
        try:  # 1 s of shutdown, then the process ends without waiting for the stuck threads
            exit_code = tui.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running 15 s after {stop}: {after_screen(tui.output)[-5:]!r}"
            ) from None
        output = tui.output
    finally:
        tui.close()
    lines = after_screen(output)
    assert exit_code == code, output[-2000:]
    assert "Traceback" not in output
    assert lines[:2] == [
        f"ppx-tui: recordings are in {record}",
        f"ppx-tui: the agent's audio is in {out}",
    ]
    assert lines[2:] == ([last] if last else []) + [STUCK]
    (folder,) = [p for p in record.iterdir() if p.is_dir()]
    assert readable_frames(folder / "mic.wav") >= 10 * FRAME_SAMPLES
    assert readable_frames(folder / "agent.wav") >= 10 * FRAME_SAMPLES
    assert readable_frames(out) > 0
    assert "did not shut down within 1 s" in (tmp_path / "ppx-tui.log").read_text()
