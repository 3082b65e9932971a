"""A chat whose shutdown never finishes (an audio device whose close hangs, a model step that never
returns) still ends soon after `q` or Ctrl+C, in a real terminal on the small real model: it says
so in one sentence, exits with the code quitting gives, the recordings are readable and the
transcript has its end. The process used to hang after the screen closed (the interpreter joins
the stuck threads at exit), and a second Ctrl+C did nothing: only kill -9 ended it. Now a second
Ctrl+C while the app waits for the shutdown leaves at once, the same way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf

from personaplex_tui.audio import FRAME_SAMPLES
from personaplex_tui.tui.shutdown_wait import DOUBLE_PRESS_S
from tests.conversation_fakes import CONVERSATION
from tests.tui_pty import PtyProcess, after_screen, user_env

# `ppx-tui` whose conversation does not stop (the pty test's program), its arguments after HOW
# and TIMEOUT: HOW is "engine" (the shutdown never returns, even cancelled; the conversation goes
# on on the engine's thread) or "device" (the audio devices' close blocks a thread of asyncio's
# default executor for good); the app waits TIMEOUT seconds for the shutdown
STUCK_PPX = (
    "import sys, pytest\n"
    "from tests.test_chat_stuck_exit import stick_shutdown\n"
    "stick_shutdown(pytest.MonkeyPatch(), sys.argv.pop(1), float(sys.argv.pop(1)))\n"
    "from personaplex_tui.entry import main\n"
    "sys.exit(main())\n"
)
STUCK = (
    "ppx-tui: the model or an audio device did not stop within 1 s; ppx-tui exits without "
    "waiting for it (recordings keep every frame written until then)."
)
LEFT = (
    "ppx-tui: stopped at Ctrl+C while stopping, without waiting for the model and the audio devices "
    "to stop (recordings keep every frame written until then)."
)


def stick_shutdown(monkeypatch: pytest.MonkeyPatch, how: str, timeout_s: float = 1.0) -> None:
    """The conversation's shutdown hangs as `how` says; the app waits `timeout_s` for it."""
    from personaplex_tui.conversation.audio_factory import AudioRig
    from personaplex_tui.conversation.controller import ConversationController

    monkeypatch.setattr("personaplex_tui.tui.app.SHUTDOWN_TIMEOUT_S", timeout_s)
    if how == "engine":

        async def hangs(self: ConversationController) -> None:
            while True:  # not even cancelling ends it (as a cleanup waiting on a stuck thread)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)

        monkeypatch.setattr(ConversationController, "shutdown", hangs)
    else:
        monkeypatch.setattr(AudioRig, "close", lambda self: time.sleep(3600))


def start_talking(
    ckpt: Path, tmp: Path, how: str, timeout_s: float
) -> tuple[PtyProcess, Path, Path]:
    """A stuck chat (`stick_shutdown`) in duplex on the conversation, recording, once the
    model has talked; returns it, its recordings' folder and its --output-file."""
    record, out = tmp / "rec", tmp / "agent.wav"
    tui = PtyProcess(
        [how, str(timeout_s), "--model", str(ckpt), "--mode", "duplex", "--input-file",
         str(CONVERSATION), "--output-file", str(out), "--record", str(record),
         "--no-user-transcript"],
        env=user_env(tmp), program=("-c", STUCK_PPX), size=(120, 40),
    )  # fmt: skip

    def talking() -> bool:  # duplex, with some agent audio recorded
        tracks = list(record.glob("*/agent.wav"))
        return bool(tracks) and tracks[0].stat().st_size > 44 + 10 * 2 * FRAME_SAMPLES

    try:
        tui.wait_for(talking, 120, "talking")
    except BaseException:
        tui.close()
        raise
    return tui, record, out


def interrupt(tui: PtyProcess, how: str) -> None:
    """`q` or Ctrl+C (the key, byte 3, in the app's raw-mode terminal), or a SIGINT."""
    if how == "SIGINT":
        tui.kill(signal.SIGINT)
    else:
        os.write(tui.master, b"q" if how == "q" else b"\x03")


def transcript_end(record: Path) -> dict:
    """The last entry of the recording's transcript (the Markdown ends its last line)."""
    (folder,) = [p for p in record.iterdir() if p.is_dir()]
    assert (folder / "transcript.md").read_text(encoding="utf-8").endswith("\n")
    return json.loads((folder / "transcript.jsonl").read_text(encoding="utf-8").splitlines()[-1])


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
    tui, record, out = start_talking(small_checkpoint, tmp_path, how, 1.0)
    try:
        interrupt(tui, stop)
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
    end = transcript_end(record)  # written by the shutdown (what can still stop does), or after
    assert end["type"] == "end"
    if how == "engine":  # (the shutdown never got to it: the end says why)
        assert end["reason"] == (
            "ppx-tui exited before its shutdown finished (the model or an audio device did not "
            "stop within 1 s)"
        )


@pytest.mark.parametrize(
    ("first", "second"), [("ctrl-c", "ctrl-c"), ("SIGINT", "SIGINT"), ("q", "ctrl-c")]
)
def test_ctrl_c_again_while_the_shutdown_hangs_leaves_at_once(
    small_checkpoint, tmp_path, first, second
):
    """The app waits up to its timeout (60 s here) for a shutdown that never ends; a second
    Ctrl+C meanwhile did nothing. It leaves at once the way a timed-out shutdown does: exit
    130, one sentence, the transcript ended."""
    tui, record, out = start_talking(small_checkpoint, tmp_path, "engine", 60.0)
    try:
        shown = len(tui.output)
        interrupt(tui, first)
        tui.wait_for(lambda: " STOPPING " in tui.output[shown:], 30, "stopping")  # (its status)
        time.sleep(DOUBLE_PRESS_S + 0.1)  # since it took the first: the second is no double press
        sent = time.monotonic()
        interrupt(tui, second)
        try:
            exit_code = tui.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running 15 s after a second Ctrl+C: {after_screen(tui.output)[-5:]!r}"
            ) from None
        took = time.monotonic() - sent
        output = tui.output
    finally:
        tui.close()
    assert exit_code == 130, output[-2000:]
    assert took < 3  # (the cancelled shutdown gets GRACE_S, then the hard exit; it took 60 s)
    assert "Traceback" not in output
    assert after_screen(output)[2:] == ["ppx-tui: interrupted.", LEFT]
    (folder,) = [p for p in record.iterdir() if p.is_dir()]
    assert readable_frames(folder / "agent.wav") >= 10 * FRAME_SAMPLES
    assert "Ctrl+C again: leaving without waiting" in (tmp_path / "ppx-tui.log").read_text()
    end = transcript_end(record)
    assert (end["type"], end["reason"]) == (
        "end",
        "ppx-tui exited before its shutdown finished (stopped at Ctrl+C while stopping, without "
        "waiting for the model and the audio devices to stop)",
    )
