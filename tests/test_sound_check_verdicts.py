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
