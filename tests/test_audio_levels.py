"""Level meters: dBFS of known signals, attack/release smoothing, clipping, Levels events."""

import math

import numpy as np

from personaplex_tui.audio import LevelMeter, LevelMeters
from personaplex_tui.audio.levels import to_dbfs
from personaplex_tui.events import Levels

SR = 24000


def sine(amplitude: float, seconds: float = 0.08) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


def test_steady_sine_reads_its_true_levels():
    m = LevelMeter()
    for _ in range(20):
        m.update(sine(0.5))
    assert abs(m.peak_db - 20 * math.log10(0.5)) < 0.05  # -6.02 dBFS
    assert abs(m.rms_db - 20 * math.log10(0.5 / math.sqrt(2))) < 0.05  # -9.03 dBFS
    assert not m.clipping


def test_silence_is_the_floor():
    m = LevelMeter()
    m.update(np.zeros(1920, np.float32))
    assert m.rms_db == m.peak_db == -100.0
    assert to_dbfs(0.0) == -100.0 and to_dbfs(1.0) == 0.0


def test_fast_attack_slow_release():
    m = LevelMeter(attack_s=0.02, release_s=0.3)
    m.update(sine(0.5))  # one 80 ms frame: attack of 20 ms is almost complete
    assert m.rms_db > 20 * math.log10(0.5 / math.sqrt(2)) - 0.5
    loud = m.rms_db
    m.update(np.zeros(1920, np.float32))  # one frame of silence: release of 300 ms
    expected = 20 * math.log10(0.5 / math.sqrt(2) * math.exp(-0.08 / 0.3))
    assert abs(m.rms_db - expected) < 0.2 and m.rms_db < loud
    for _ in range(40):  # 3.2 s later it has fallen far
        m.update(np.zeros(1920, np.float32))
    assert m.rms_db < -40


def test_smoothing_does_not_depend_on_block_size():
    a, b = LevelMeter(), LevelMeter()
    a.update(sine(0.3, 0.16))
    b.update(sine(0.3, 0.08))
    b.update(sine(0.3, 0.08))
    silence = np.zeros(SR // 5, np.float32)
    a.update(silence)
    for part in np.split(silence, 4):
        b.update(part)
    assert abs(a.rms_db - b.rms_db) < 0.1


def test_clipping_flag_holds_for_a_second():
    m = LevelMeter(clip_hold_s=1.0)
    x = sine(0.5)
    x[100] = 1.0
    m.update(x)
    assert m.clipping
    for _ in range(12):  # 0.96 s
        m.update(sine(0.5))
    assert m.clipping
    m.update(sine(0.5))
    assert not m.clipping


def test_meters_produce_levels_events():
    meters = LevelMeters()
    meters.update_mic(sine(0.1))
    meters.update_agent(np.full(1920, 1.0, np.float32))
    lv = meters.snapshot()
    assert isinstance(lv, Levels)
    assert lv.agent_clipping and not lv.mic_clipping
    assert lv.agent_peak_db == 0.0 and lv.mic_peak_db < -19
    meters.reset()
    assert meters.snapshot().mic_rms_db == -100.0
