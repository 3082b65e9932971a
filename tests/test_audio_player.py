"""The player: 3-frame pre-buffer, underrun -> silence and re-buffer, counters, echo suppression."""

import os
import threading
import time

import numpy as np

from personaplex_tui.audio import FRAME_SAMPLES, EchoSuppressor, Player
from personaplex_tui.events import PlaybackStats


def frame(value: float) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, np.float32)


def pull(player: Player) -> np.ndarray:
    """One device callback; the block starts full of stale garbage, as PortAudio's may."""
    out = np.full(FRAME_SAMPLES, 0.777, np.float32)
    player.fill(out)
    return out


def test_playback_starts_only_after_three_frames():
    p = Player()
    p.write(frame(0.1))
    p.write(frame(0.2))
    for _ in range(3):
        assert not pull(p).any()  # silence, not stale samples
        assert not p.playing
    p.write(frame(0.3))
    assert p.stats() == PlaybackStats(3, 3, False, 0, 0, 0)
    out = pull(p)
    assert p.playing and np.all(out == np.float32(0.1))
    assert np.all(pull(p) == np.float32(0.2))
    assert np.all(pull(p) == np.float32(0.3))


def test_stall_counts_an_underrun_outputs_silence_and_rebuffers():
    p = Player()
    for v in (0.1, 0.2, 0.3):
        p.write(frame(v))
    for _ in range(3):
        pull(p)
    # The engine stalls: the next callback finds nothing queued.
    out = pull(p)
    assert not out.any(), "an underrun must output zeros, never the last frame again"
    assert p.underruns == 1 and not p.playing
    # One or two fresh frames are not enough: it waits for the pre-buffer again.
    p.write(frame(0.4))
    p.write(frame(0.5))
    assert not pull(p).any()
    assert p.underruns == 1  # waiting to re-buffer is not another underrun
    p.write(frame(0.6))
    assert np.all(pull(p) == np.float32(0.4))
    stats = p.stats()
    assert stats.playing and stats.underruns == 1 and stats.buffered_frames == 2


def test_partial_block_then_silence():
    p = Player(frame_samples=FRAME_SAMPLES)
    p.write(np.full(3 * FRAME_SAMPLES + 100, 0.5, np.float32))
    for _ in range(3):
        pull(p)
    out = pull(p)
    assert np.all(out[:100] == np.float32(0.5)) and not out[100:].any()
    assert p.underruns == 1


def test_flush_plays_a_short_tail_without_counting_an_underrun():
    p = Player()
    p.write(frame(0.2))  # a one-frame reply: under the pre-buffer
    assert not pull(p).any()
    p.flush()
    assert np.all(pull(p) == np.float32(0.2))
    assert not pull(p).any()
    assert p.underruns == 0 and not p.playing


def test_overrun_drops_whole_frames_and_counts_them():
    p = Player(capacity_frames=4)
    for v in range(4):
        assert p.write(frame(v / 10))
    assert not p.write(frame(0.9))
    assert not p.write(frame(0.9))
    pull(p)  # room again: the episode ends
    assert p.write(frame(0.5))
    assert not p.write(frame(0.9))
    s = p.stats()
    assert s.overruns == 2 and s.dropped_frames == 3
    # What was dropped never plays: the queue holds 0.1, 0.2, 0.3, 0.5.
    played = [pull(p)[0] for _ in range(4)]
    np.testing.assert_allclose(played, [0.1, 0.2, 0.3, 0.5])


def test_clear_drops_queued_audio():
    p = Player()
    for _ in range(5):
        p.write(frame(0.3))
    pull(p)
    assert p.clear() == 4
    assert not pull(p).any() and p.underruns == 0 and p.buffered_frames == 0


def test_audible_while_queued_playing_and_for_a_tail():
    p = Player(echo_tail_s=0.15)
    assert not p.audible()
    p.write(frame(0.0))  # silence is not audible
    assert not p.audible()
    for _ in range(3):
        p.write(frame(0.2))
    assert p.audible()  # queued, not yet playing
    for _ in range(4):
        pull(p)
    assert p.audible()  # just played: the tail
    time.sleep(0.2)
    assert not p.audible()


def test_echo_suppression_silences_the_mic_while_the_agent_is_audible():
    p = Player(echo_tail_s=0.1)
    gate = EchoSuppressor(p.audible, enabled=True)
    mic = frame(0.4)
    assert gate.process(mic) is mic  # agent quiet: the mic passes untouched
    for _ in range(3):
        p.write(frame(0.3))
    out = gate.process(mic)
    assert out.shape == mic.shape and not out.any() and mic.any()
    assert gate.suppressed_frames == 1
    gate.enabled = False  # off (the default): never suppresses
    assert gate.process(mic) is mic
    assert EchoSuppressor(p.audible).enabled is False
    gate.enabled = True
    for _ in range(4):
        pull(p)
    time.sleep(0.15)
    assert gate.process(mic) is mic


def test_a_write_without_a_timeout_waits_for_room_instead_of_dropping():
    """`timeout=None` was taken as no wait: `respond` dropped every frame past the 30 s queue."""
    p = Player(capacity_frames=4)
    for i in range(4):
        assert p.write(frame(0.1 * (i + 1)), timeout=0.0)
    assert not p.write(frame(0.5), timeout=0.0)  # full: dropped at once
    taker = threading.Timer(0.2, lambda: pull(p))
    taker.start()
    started = time.monotonic()
    assert p.write(frame(0.6), timeout=None)  # waited for the frame the device took
    assert time.monotonic() - started >= 0.15
    taker.join()
    played = [float(pull(p)[0]) for _ in range(4)]
    assert played == [np.float32(v) for v in (0.2, 0.3, 0.4, 0.6)]


class _StoppedSpeaker:
    """A speaker whose device stopped after `plays` frames: it never makes room again."""

    def __init__(self, plays: int) -> None:
        self.left, self.active, self.closed = plays, True, False

    def start(self) -> None: ...

    def flush(self) -> None: ...

    def write_frame(self, pcm: np.ndarray, timeout: float | None = 0.0) -> bool:
        if self.left > 0:
            self.left -= 1
            return True
        self.active = False
        time.sleep(0.01 if timeout is None else min(timeout, 0.01))
        return False

    def drain(self, timeout: float | None = None) -> bool:
        self.active = False  # it stops while what was queued plays out
        return False

    def close(self) -> None:
        self.closed = True

    def stats(self) -> PlaybackStats:
        return PlaybackStats(buffered_frames=self.queued, prebuffer_frames=3, playing=self.active)

    queued = 7  # frames the fake's queue reports


def test_respond_playing_to_a_device_that_stopped_is_one_sentence_not_a_hang(monkeypatch):
    """Its drain waited forever for a ring that a dead stream never empties."""
    import pytest

    import personaplex_tui.audio as audio
    from personaplex_tui.audio import AudioDeviceError
    from personaplex_tui.commands.respond import _Sink

    for plays, reply_frames in ((3, 10), (10, 10)):  # stopped while writing; while draining
        speaker = _StoppedSpeaker(plays)
        monkeypatch.setattr(audio, "make_speaker", lambda speaker=speaker: speaker)
        sink = _Sink(None)
        started = time.monotonic()
        with pytest.raises(AudioDeviceError, match="The output device stopped playing"):
            try:
                sink.write(np.zeros(reply_frames * FRAME_SAMPLES, np.float32))
            finally:
                sink.close()
        assert time.monotonic() - started < 5 and speaker.closed


class _NoisySpeaker(_StoppedSpeaker):
    """A speaker whose library writes to fd 2 as PortAudio and ALSA do."""

    def start(self) -> None:
        os.write(2, b"ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred\n")


def test_respond_keeps_the_sound_librarys_lines_off_the_terminal(monkeypatch, tmp_path, capfd):
    """PortAudio's and ALSA's lines reached `respond`'s terminal (the chat sends them to its log)."""
    import personaplex_tui.audio as audio
    from personaplex_tui.commands.common import status
    from personaplex_tui.commands.respond import _Sink

    log = tmp_path / "logs" / "ppx-tui.log"
    monkeypatch.setenv("PPX_TUI_LOG", str(log))
    speaker = _NoisySpeaker(plays=100)
    monkeypatch.setattr(audio, "make_speaker", lambda: speaker)
    sink = _Sink(None)
    status("ours, while playing")
    sink.write(np.zeros(3 * FRAME_SAMPLES, np.float32))
    sink.close(drain=False)
    err = capfd.readouterr().err
    assert "ALSA lib" not in err and "ours, while playing" in err
    assert "underrun occurred" in log.read_text()
    os.write(2, b"after\n")  # fd 2 is the terminal's again
    assert "after" in capfd.readouterr().err


class _HungSpeaker(_StoppedSpeaker):
    """A speaker whose sound server hangs (SIGSTOP): its stream still runs, takes nothing, and
    its close (PortAudio's Pa_StopStream) never returns."""

    def __init__(self, plays: int) -> None:
        super().__init__(plays)
        self.release = threading.Event()

    def write_frame(self, pcm: np.ndarray, timeout: float | None = 0.0) -> bool:
        if self.left > 0:
            self.left -= 1
            return True
        time.sleep(0.01 if timeout is None else min(timeout, 0.01))
        return False  # still `active`: no room, ever

    def drain(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        self.release.wait()
        self.closed = True


def test_respond_playing_to_a_sound_server_that_hangs_is_one_sentence_not_a_hang(monkeypatch):
    """The reply waited for room in a queue that a running but stuck stream never empties, and
    the speaker's close hung in PortAudio for good; now both give up, and the process leaves
    the close behind (`stuck_exit`)."""
    import pytest

    import personaplex_tui.audio as audio
    from personaplex_tui import stuck_exit
    from personaplex_tui.audio import AudioDeviceError
    from personaplex_tui.commands import respond

    monkeypatch.setattr(respond, "WRITE_LIMIT_S", 0.3)
    monkeypatch.setattr(respond, "CLOSE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(stuck_exit, "_asked", False)
    speaker = _HungSpeaker(plays=3)
    monkeypatch.setattr(audio, "make_speaker", lambda: speaker)
    sink = respond._Sink(None)
    started = time.monotonic()
    try:
        with pytest.raises(AudioDeviceError) as raised:
            try:
                sink.write(np.zeros(10 * FRAME_SAMPLES, np.float32))
            finally:
                sink.close()
    finally:
        speaker.release.set()
    assert str(raised.value).startswith(
        "The output device or its sound server stopped responding: its stream could not be "
        "closed within "
    )
    assert isinstance(raised.value.__context__, AudioDeviceError)  # the write gave up first
    assert "stopped playing" in str(raised.value.__context__)
    assert time.monotonic() - started < 5 and stuck_exit._asked


class _FrozenSpeaker(_StoppedSpeaker):
    """Takes the whole reply, then plays none of it while its stream stays active: a sound
    server that hangs after the reply was queued."""

    def write_frame(self, pcm: np.ndarray, timeout: float | None = 0.0) -> bool:
        return True

    def drain(self, timeout: float | None = None) -> bool:
        time.sleep(0.01)
        return False


def test_respond_draining_into_a_stream_that_plays_nothing_gives_up_in_seconds(monkeypatch):
    """The drain waited DRAIN_LIMIT_S (35 s) for a queue that did not shrink; now a queue that
    has not moved for WRITE_LIMIT_S is stuck."""
    import pytest

    import personaplex_tui.audio as audio
    from personaplex_tui.audio import AudioDeviceError
    from personaplex_tui.commands import respond

    monkeypatch.setattr(respond, "WRITE_LIMIT_S", 0.3)
    speaker = _FrozenSpeaker(plays=0)
    monkeypatch.setattr(audio, "make_speaker", lambda: speaker)
    sink = respond._Sink(None)
    sink.write(np.zeros(10 * FRAME_SAMPLES, np.float32))
    started = time.monotonic()
    with pytest.raises(AudioDeviceError, match="The output device stopped playing"):
        sink.close()
    assert time.monotonic() - started < 5 and speaker.closed
