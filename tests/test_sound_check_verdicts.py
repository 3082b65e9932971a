"""sound-check's live verdicts, from `echo_check.analyse` on made-up recordings."""

from __future__ import annotations

import numpy as np

from personaplex_tui.audio.echo_check import analyse, check_signal


def test_a_silent_microphone_is_not_told_that_duplex_will_work():
    """A muted or dead mic "did not hear the test signal", and the check said duplex would work."""
    played = check_signal()
    silent = np.zeros_like(played)
    report = analyse(played, played, silent, silent)
    assert not report.works and report.mic_peak_dbfs < -90
    assert "delivered only silence" in report.verdict[-1]
    assert "Duplex will work" not in " ".join(report.verdict)


def test_a_quiet_microphone_that_hears_no_echo_says_duplex_will_work():
    """The same recording with a room's noise in it: a live mic with no echo (headphones)."""
    played = check_signal()
    room = (np.random.default_rng(1).standard_normal(len(played)) * 1e-3).astype(np.float32)
    report = analyse(played, played, room, room)
    assert report.works and "Duplex will work as it is" in report.verdict[-1]


def _room_with_echo(played: np.ndarray, gain: float) -> np.ndarray:
    rng = np.random.default_rng(2)
    echo = np.concatenate([np.zeros(1200, np.float32), played[:-1200]]) * gain  # 50 ms later
    return (echo + rng.standard_normal(len(played)) * 1e-4).astype(np.float32)


def test_a_clipping_microphone_is_not_told_only_90_db_were_removed():
    """With the mic clipping, a canceller that removed 90 dB was said to have removed "only
    90 dB", after the advice to lower the volume."""
    played = check_signal()
    raw = np.clip(_room_with_echo(played, 8.0), -1, 1)  # the echo clips the mic
    clean = (raw * 1e-4).astype(np.float32)  # what a canceller leaves: 80 dB less
    report = analyse(played, played, raw, clean)
    words = " ".join(report.verdict)
    assert report.clipped_samples > 0 and not report.works
    assert "removed only" not in words and "lower the speaker or input volume" in words
    assert report.verdict[0] == (
        f"The microphone clipped ({report.clipped_samples} samples at full scale) while the "
        "speaker played: lower the speaker or input volume; clipped echo cannot be removed."
    )
    assert "run the check again" in report.verdict[-1]


def test_an_echo_that_stops_mid_check_is_not_reported_as_a_measurement():
    """The echo path gone after the start (a loopback unloaded): the check printed "-127 dB
    removed" and said the echo was out of the canceller's reach."""
    played = check_signal()
    raw = _room_with_echo(played, 0.5)
    raw[int(1.6 * 24000) :] = 0.0  # nothing more from the mic
    clean = np.full_like(raw, 1e-5)  # the canceller's own floor
    report = analyse(played, played, raw, clean)
    assert not report.works
    assert "not through the whole check" in report.verdict[-1]
    assert "longer than the canceller can reach" not in " ".join(report.verdict)
