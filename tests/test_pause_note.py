"""A pause of the process (SIGSTOP, Ctrl+Z, a debugger) is one note in the transcript (run.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import personaplex_tui.conversation.run as run
from personaplex_tui.conversation.run import PAUSED_S, MicReader, RunContext, pause_note
from personaplex_tui.events import Notice


class Noted:
    """Stands in for a run's engine and recording: what the reader noted and emitted, and the
    end of the mic's track (its caller records each frame read)."""

    def __init__(self) -> None:
        self.notes: list[tuple[float, str, str]] = []
        self.events: list[object] = []
        self.mic_s = 0.0
        self.transcript = self

    def note(self, t: float, text: str, kind: str = "note") -> None:
        self.notes.append((t, text, kind))

    def emit(self, event: object) -> None:
        self.events.append(event)


class Clock:
    """Wall time (`now`) and the process's CPU time (`cpu`): waits for the mic and pauses move
    the first only, steps (work) both."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.cpu = 5.0

    def monotonic(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.cpu

    def work(self, seconds: float) -> None:
        self.now += seconds
        self.cpu += seconds


class ClockedMic:
    """A device delivering a frame every 80 ms of the fake clock; `waiting` frames are already
    queued (read at once), `stall_polls` polls return None after their timeout."""

    device_name = "clocked"
    finished = False
    active = True

    def __init__(self, clock: Clock, realtime: bool = True) -> None:
        self.clock, self.realtime = clock, realtime
        self.waiting = 0
        self.stall_polls = 0
        self.stalled_for = 0.0  # how long the next stalled poll takes (a pause while blocked)

    def read_frame(self, timeout: float) -> np.ndarray | None:
        if self.stall_polls:
            self.stall_polls -= 1
            self.clock.now += self.stalled_for or timeout
            self.stalled_for = 0.0
            return None
        if self.waiting:
            self.waiting -= 1
        else:
            self.clock.now += 0.08
        return np.zeros(1920, np.float32)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    fakes = SimpleNamespace(monotonic=fake.monotonic, process_time=fake.process_time)
    monkeypatch.setattr(run, "time", fakes)
    return fake


def reader(mic: ClockedMic, noted: Noted) -> MicReader:
    ctx = RunContext(
        engine=noted, mic=mic, speaker=None, recording=noted, telemetry=None, config=None,
        stall_s=2.0, start_s=10.0, poll_s=0.1,
    )  # fmt: skip
    return MicReader(ctx, should_stop=lambda: False)


def read(r: MicReader, noted: Noted, frames: int, step_s: float = 0.0) -> None:
    """`frames` frames as a run reads them: each recorded, then a step of `step_s`."""
    for _ in range(frames):
        assert r.read() is not None and r.end is None
        noted.mic_s += 0.08
        r.ctx.mic.clock.work(step_s)


def test_a_pause_during_a_step_is_one_note_where_it_began(clock):
    """Stopped while the engine stepped; on resume the mic has frames waiting (the timeout path
    never runs), yet the gap between two frames is the pause."""
    noted, mic = Noted(), ClockedMic(clock)
    r = reader(mic, noted)
    read(r, noted, 10, step_s=0.01)
    clock.now += 12.3  # SIGSTOP ... fg
    mic.waiting = 5
    read(r, noted, 30, step_s=0.01)
    message = pause_note(12.3)
    assert message == (
        "ppx-tui was paused for 12.3 s (stopped by a signal or a debugger, or kept off the CPU "
        "by a busy machine); nothing said meanwhile was heard."
    )
    assert noted.notes == [(pytest.approx(0.8), message, "pause")]  # after the 10th frame
    assert noted.events == [Notice(message, in_transcript=True)]


def test_a_pause_while_waiting_for_the_mic_is_one_note_and_not_a_lost_device(clock):
    noted, mic = Noted(), ClockedMic(clock)
    r = reader(mic, noted)
    read(r, noted, 5)
    mic.stall_polls, mic.stalled_for = 1, 4.0  # stopped inside a poll, nothing there after it
    read(r, noted, 5)
    assert [(round(t, 2), kind) for t, _, kind in noted.notes] == [(0.4, "pause")]
    assert "paused for 4.0 s" in noted.notes[0][1] and len(noted.events) == 1


def test_a_normal_run_has_no_note_until_a_pause(clock):
    """Steps, a slow start (polls of nothing for 1.5 s), a device hiccup of 0.9 s: no note; then
    a pause of PAUSED_S is one."""
    noted, mic = Noted(), ClockedMic(clock)
    r = reader(mic, noted)
    mic.stall_polls = 15
    read(r, noted, 200, step_s=0.07)
    mic.stall_polls = 9  # 0.9 s without a frame: slow, but under PAUSED_S
    read(r, noted, 20, step_s=0.07)
    assert clock.now - 1000.0 > 10 * PAUSED_S
    assert noted.notes == [] and noted.events == []
    clock.now += PAUSED_S - 0.07 + 1e-6  # with the last step: PAUSED_S since the last frame
    mic.waiting = 1
    read(r, noted, 20, step_s=0.07)
    assert [text for _, text, _ in noted.notes] == [pause_note(PAUSED_S)]


def test_a_slow_step_is_not_a_pause(clock):
    """A step that takes 3 s of work (a 7B on a laptop's CPU, a first compile) is no pause: the
    process ran all along. The same 3 s with the process stopped is one."""
    noted, mic = Noted(), ClockedMic(clock)
    r = reader(mic, noted)
    read(r, noted, 5)
    clock.work(3.0)  # all threads together: at least the wall time
    mic.waiting = 3
    read(r, noted, 5)
    clock.work(2.5)
    clock.now += 1.5  # 2.5 s of work in 4 s: a step that waited on something besides
    read(r, noted, 5)
    assert noted.notes == [] and noted.events == []
    clock.work(0.5)
    clock.now += 2.5  # 0.5 s of work in 3 s: stopped for most of it
    mic.waiting = 1
    read(r, noted, 5)
    assert [text for _, text, _ in noted.notes] == [pause_note(3.0)]
    assert r.end is None


def test_a_file_read_ahead_waited_and_lost_nothing(clock):
    """A file read as fast as the model steps (`realtime=False`, as the soak runs) gets no note:
    its frames waited for the process; a mic in real time does."""
    said = {}
    for realtime in (False, True):
        noted, mic = Noted(), ClockedMic(clock, realtime=realtime)
        r = reader(mic, noted)
        read(r, noted, 5)
        clock.now += 5.0
        read(r, noted, 5)
        said[realtime] = len(noted.notes), len(noted.events)
    assert said == {False: (0, 0), True: (1, 1)}


CHILD = """
import json, os, sys, time
import numpy as np
from types import SimpleNamespace
from personaplex_tui.audio import FileMic
from personaplex_tui.conversation.recording import ConversationRecording
from personaplex_tui.conversation.run import MicReader, RunContext

folder, flag = sys.argv[1], sys.argv[2]
events = []
rec = ConversationRecording(__import__("pathlib").Path(folder), False, {})
mic = FileMic(np.zeros(24000, np.float32), realtime=True, after_end="silence")
mic.start()
ctx = RunContext(
    engine=SimpleNamespace(emit=events.append), mic=mic, speaker=None, recording=rec,
    telemetry=None, config=None,
)
reader = MicReader(ctx, lambda: os.path.exists(flag))
while (pcm := reader.read()) is not None:
    rec.write_mic(pcm)
    if reader.frames == 5:
        print("reading", flush=True)
mic.close()
rec.close()
print(json.dumps([e.message for e in events]), flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")
def test_a_process_stopped_by_sigstop_notes_the_pause(tmp_path):
    """The real thing: a reader on a real-time file mic, its process stopped for 2.5 s by
    SIGSTOP and continued by SIGCONT (its mic's clock thread catches up: frames are waiting)."""
    root = Path(__file__).resolve().parents[1]
    folder, flag = tmp_path / "rec", tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), str(flag)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "reading"
        proc.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)
        flag.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    said = json.loads(out.strip().splitlines()[-1])
    entries = [json.loads(line) for line in (folder / "transcript.jsonl").read_text().splitlines()]
    pauses = [e for e in entries if e["type"] == "pause"]
    # (a loaded machine may stall the child for over PAUSED_S besides: only the signal's counts)
    long = [e for e in pauses if float(e["text"].split(" for ")[1].split(" s ")[0]) >= 2.0]
    assert len(long) == 1, pauses
    assert long[0]["text"] in said  # the user was told too
    assert 0.3 <= long[0]["t"] <= entries[-1]["t"]  # after the 5th frame, within the recording
    assert f" · {long[0]['text']}_" in (folder / "transcript.md").read_text()
