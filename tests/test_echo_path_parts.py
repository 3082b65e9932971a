"""The pieces around the canceller: the far-end timeline, the cancelling mic's thread, and
the recording of raw and processed mic tracks."""

from __future__ import annotations

import threading
import time
import wave

import numpy as np

from personaplex_tui.audio.cancelling_mic import CancellingMic, ReferencingSpeaker
from personaplex_tui.audio.far_end import FarEndTimeline
from personaplex_tui.conversation.recording import ConversationRecording


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_jittery_pushes_are_laid_end_to_end_and_taken_once():
    clock = Clock()
    timeline = FarEndTimeline(clock=clock)
    frames = [np.full(1920, i + 1, np.float32) for i in range(4)]
    for i, frame in enumerate(frames):
        jitter = (0.0, 0.03, -0.05, 0.01)[i]
        timeline.push(frame, 0.2 + jitter)
        clock.t += 0.08
    got = timeline.take(int(0.2 * 24000), 4 * 1920)
    assert np.array_equal(got, np.concatenate(frames))  # no tear, no gap
    assert not timeline.take(int(0.2 * 24000), 4 * 1920).any()  # taken once


def test_a_late_push_leaves_a_gap_and_dropped_audio_is_forgotten():
    clock = Clock()
    timeline = FarEndTimeline(clock=clock)
    timeline.push(np.ones(1920, np.float32), 0.0)
    timeline.push(np.full(1920, 2, np.float32), 0.5)  # an underrun: it plays 0.5 s from now
    got = timeline.take(0, int(0.6 * 24000))
    assert got[:1920].min() == 1 and not got[1920:12000].any() and got[12000:13920].min() == 2
    timeline.push(np.full(1920, 3, np.float32), 1.0)
    timeline.drop_future()  # an interruption dropped it before it played
    assert not timeline.take(int(0.6 * 24000), 24000).any()


class ListMic:
    sample_rate, frame_samples, device_name = 24000, 1920, "fake"
    overruns = dropped_samples = 0

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = list(frames)

    def start(self) -> None: ...

    def read_frame(self, timeout=None):
        if self.frames:
            return self.frames.pop(0)
        time.sleep(0.01)
        return None

    @property
    def finished(self) -> bool:
        return not self.frames

    def clear(self) -> None: ...

    def close(self) -> None: ...


class Halving:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls, self.fail_after = 0, fail_after
        self.threads: set[int] = set()

    def process(self, mic, far):
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("native failure")
        return mic * 0.5


def _read_all(mic: CancellingMic) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    while not mic.finished:
        clean = mic.read_frame(timeout=0.5)
        if clean is not None:
            out.append((clean, mic.last_raw))
    return out


def test_frames_are_processed_on_the_mics_own_thread_with_the_raw_frame_kept():
    raw = [np.full(1920, 0.1 * (i + 1), np.float32) for i in range(5)]
    canceller = Halving()
    mic = CancellingMic(ListMic(raw), FarEndTimeline(), canceller)  # type: ignore[arg-type]
    mic.start()
    pairs = _read_all(mic)
    mic.close()
    assert len(pairs) == 5
    for (clean, kept), r in zip(pairs, raw, strict=True):
        assert np.array_equal(kept, r) and np.allclose(clean, r * 0.5)
    assert threading.get_ident() not in canceller.threads and len(canceller.threads) == 1


def test_a_failing_canceller_lets_the_raw_mic_through_and_says_so():
    raw = [np.full(1920, 0.2, np.float32) for _ in range(4)]
    mic = CancellingMic(ListMic(raw), FarEndTimeline(), Halving(fail_after=2))  # type: ignore[arg-type]
    mic.start()
    pairs = _read_all(mic)
    mic.close()
    assert np.allclose([c[0] for c, _ in pairs], [0.1, 0.1, 0.2, 0.2])
    assert mic.failure.startswith("The echo canceller failed (native failure)")


def test_the_speaker_places_what_it_plays_after_its_queue():
    class Speaker:
        device_rate = 24000

        class player:
            queued_samples = 4800  # 200 ms queued

        def write_frame(self, pcm, timeout=0.0):
            return True

        def clear(self):
            return 0

    clock = Clock()
    timeline = FarEndTimeline(clock=clock)
    ReferencingSpeaker(Speaker(), timeline).write_frame(np.ones(1920, np.float32))  # type: ignore[arg-type]
    got = timeline.take(0, 9600)
    assert not got[:4800].any() and got[4800:6720].min() == 1


def test_the_recording_keeps_raw_and_processed_mic_on_one_timeline(tmp_path):
    rec = ConversationRecording.begin(tmp_path, {})
    rec.write_mic(np.full(1920, 0.5, np.float32))  # before the canceller ran
    rec.write_agent(np.zeros(3840, np.float32))
    rec.write_mic(np.full(1920, 0.5, np.float32), np.full(1920, 0.25, np.float32))
    rec.write_agent(np.zeros(1920, np.float32))
    folder = rec.close()
    with wave.open(str(folder / "mic.wav")) as m, wave.open(str(folder / "mic_processed.wav")) as p:
        raw = np.frombuffer(m.readframes(m.getnframes()), np.int16) / 32768
        done = np.frombuffer(p.readframes(p.getnframes()), np.int16) / 32768
    assert len(raw) == len(done) == 3 * 1920
    assert np.allclose(raw[:3840], 0.5, atol=1e-3) and not raw[3840:].any()
    assert not done[:1920].any() and np.allclose(done[1920:3840], 0.25, atol=1e-3)


class StubMeter:
    def __init__(self, residual_s: float | None) -> None:
        self.residual_s, self.restarts, self.base_delay_s = residual_s, 0, 0.0

    def update(self, *args) -> None: ...

    def restart_delay(self) -> None:
        self.restarts += 1
        self.residual_s = None


def test_a_measured_delay_out_of_the_cancellers_window_moves_the_alignment():
    frames = [np.zeros(1920, np.float32) for _ in range(2)]
    for residual, shift in ((0.45, -0.30), (-0.05, 0.20), (0.15, 0.0)):
        meter, clock = StubMeter(None), Clock()
        timeline = FarEndTimeline(clock=clock)
        mic = CancellingMic(ListMic(frames), timeline, Halving(), meter)  # type: ignore[arg-type]
        mic._process(frames[0])
        before = mic._cursor
        meter.residual_s = residual  # the far end leads its echo by this much
        clock.t += 0.08  # the next frame comes on time
        mic._process(frames[1])
        moved = (mic._cursor - before - 1920) / 24000
        assert abs(moved - shift) < 0.002, (residual, moved)
        assert meter.restarts == (1 if shift else 0)


def test_the_players_tap_lays_what_was_played_end_to_end_at_24_khz():
    from personaplex_tui.audio.far_end import PlayedTap
    from personaplex_tui.audio.player import Player

    timeline = FarEndTimeline()
    tap = PlayedTap(timeline, 48000, output_latency_s=0.05)
    player = Player(3840, prebuffer_frames=1)
    player.tap = tap
    t = np.arange(3 * 3840) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    player.write(tone)
    for _ in range(4):  # three blocks of the tone, then one of silence (an underrun)
        player.fill(np.empty(3840, np.float32))
    tap.drain()
    assert timeline.written == 4 * 1920  # every played sample, silence included, at 24 kHz
    far = timeline.take(0, 4 * 1920)
    lag = round(tap.latency_s * 24000) - round(0.05 * 24000)  # the resampler's fixed delay
    expected = np.sin(2 * np.pi * 440 * np.arange(3 * 1920) / 24000) * 0.5
    assert (
        np.abs(far[lag + 100 : 3 * 1920 - 100] - expected[100 : 3 * 1920 - 100 - lag]).max() < 0.02
    )
    assert tap.latency_s > 0.05
