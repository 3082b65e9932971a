"""The app's audio format is the model's: the same sample rate and the same frame of samples.

`personaplex_tui.audio` may not import `model` (pyproject's import contracts), so the frame size
is stated twice, once on each side; this test keeps the two equal.
"""

from model.config import FRAME_SAMPLES as MODEL_FRAME_SAMPLES
from model.config import MimiConfig, config_7b, mimi_tiny
from personaplex_tui.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE


def test_the_app_frames_audio_as_every_mimi_it_runs_does():
    for mimi in (MimiConfig(), config_7b().mimi, mimi_tiny()):
        assert (mimi.sample_rate, mimi.frame_size) == (SAMPLE_RATE, FRAME_SAMPLES)
        assert FRAME_SECONDS == 1 / mimi.frame_rate
    assert MODEL_FRAME_SAMPLES == FRAME_SAMPLES
