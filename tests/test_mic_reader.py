"""How a run's mic reader tells a slow start from a lost device (personaplex_tui/conversation/run.py)."""

from __future__ import annotations

import time

import numpy as np

from personaplex_tui.conversation.run import MicReader, RunContext
from tests.test_pause_note import Noted


class SlowMic:
    """A device stream whose frames start `delay_s` after it was opened, then stop after
    `frames` of them (a device unplugged)."""

    device_name = "slow"
    finished = False
    active = True

    def __init__(self, delay_s: float, frames: int) -> None:
        self.opened = time.monotonic()
        self.delay_s, self.left = delay_s, frames

    def read_frame(self, timeout: float) -> np.ndarray | None:
        if self.left and time.monotonic() - self.opened >= self.delay_s:
            self.left -= 1
            return np.zeros(1920, np.float32)
        time.sleep(timeout)
        return None


def reader(mic: SlowMic, stall_s: float, start_s: float) -> MicReader:
    noted = Noted()  # (the engine and the recording: a pause is noted)
    ctx = RunContext(
        engine=noted, mic=mic, speaker=None, recording=noted, telemetry=None, config=None,
        stall_s=stall_s, start_s=start_s, poll_s=0.02,
    )  # fmt: skip
    return MicReader(ctx, should_stop=lambda: False)


def test_a_stream_slow_to_start_is_not_a_lost_device():
    """The first frame may come later than `stall_s` (a PulseAudio mic reopened on a mode switch
    took 2.03 s against the 2 s of `stall_s`, and showed "stopped delivering audio")."""
    r = reader(SlowMic(delay_s=0.5, frames=3), stall_s=0.2, start_s=2.0)
    assert r.read() is not None and r.end is None
    assert r.read() is not None and r.read() is not None


def test_once_frames_came_a_silent_device_is_lost_after_stall_s():
    r = reader(SlowMic(delay_s=0.0, frames=1), stall_s=0.2, start_s=5.0)
    assert r.read() is not None
    t0 = time.monotonic()
    assert r.read() is None
    assert r.end is not None and r.end.reason == "input_lost"
    assert 0.2 <= time.monotonic() - t0 < 1.0  # stall_s, not start_s


def test_a_device_that_never_starts_is_lost_after_start_s():
    r = reader(SlowMic(delay_s=99.0, frames=1), stall_s=0.1, start_s=0.5)
    t0 = time.monotonic()
    assert r.read() is None and r.end.reason == "input_lost"
    assert 0.5 <= time.monotonic() - t0 < 2.0


class PausedMic(SlowMic):
    """Frames as they come, but one poll returns `pause_s` late with nothing: the process was
    stopped meanwhile (SIGSTOP, a suspended terminal), and the device with it."""

    def __init__(self, pause_s: float) -> None:
        super().__init__(delay_s=0.0, frames=10)
        self.pause_s, self.polls = pause_s, 0

    def read_frame(self, timeout: float) -> np.ndarray | None:
        self.polls += 1
        if self.polls == 2:
            time.sleep(self.pause_s)
            return None
        return super().read_frame(timeout)


def test_a_paused_process_is_not_a_lost_device():
    """A poll that returns over a second late means this process was stopped, not the device:
    the reader waits again as for a stream's start (a 10 s SIGSTOP showed "stopped delivering
    audio" and ended the conversation)."""
    r = reader(PausedMic(pause_s=1.2), stall_s=0.2, start_s=2.0)
    assert r.read() is not None
    assert r.read() is not None and r.end is None  # after the pause, the frames go on
    assert [kind for _, _, kind in r.ctx.recording.notes] == ["pause"]
