"""More of what a developer can get wrong with the `model` package, each refused in one sentence
of its own error types: a session used from another thread (MLX's streams belong to one thread:
an MLX error that broke the session for good, or a crashed process), MLX arrays of the wrong
dtype (int16 heard 32768 times too loud, bfloat16 codes a NumPy error), non-numbers taken as
audio, odd options and objects of the wrong type. Found by an audit of the library's API."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest

import model
from model.array_checks import float_audio
from model.errors import (
    AudioInputError,
    CheckpointError,
    SessionThreadError,
    SettingValueError,
    UnknownPromptError,
)
from tests.test_library_inputs import pp, session

__all__ = ["pp"]  # the module-scoped random model, shared
Z = np.zeros(1920, np.float32)


def test_another_thread_is_refused_and_the_session_stays_usable(pp):
    s = session(pp)
    s.step(Z)
    raised: list[BaseException] = []

    def elsewhere() -> None:
        for call in (lambda: s.step(Z), lambda: s.step_codes(np.zeros(8)), s.reset):
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 (what it raised is the point)
                raised.append(exc)

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert [type(e) for e in raised] == [SessionThreadError] * 3
    assert "only be used on the thread that made it" in str(raised[0])
    fresh = session(pp)  # untouched: it goes on as a session that never saw the other thread
    fresh.step(Z)
    for _ in range(3):
        assert np.array_equal(s.step(Z).agent_codes, fresh.step(Z).agent_codes)


def test_mlx_audio_of_a_non_float_dtype_is_refused_everywhere(pp):
    s = session(pp)
    for dtype in (mx.int16, mx.int32, mx.bool_, mx.complex64):
        with pytest.raises(AudioInputError, match="samples; give float samples in"):
            s.step(mx.zeros(1920, dtype=dtype))
        with pytest.raises(AudioInputError, match="samples; give float samples in"):
            pp.mimi.encode(mx.zeros(3840, dtype=dtype))
        with pytest.raises(AudioInputError, match="samples; give float samples in"):
            pp.mimi.encode_step(mx.zeros(1920, dtype=dtype))  # lazy: its dtype only
        with pytest.raises(AudioInputError, match="samples; give float samples in"):
            pp.mimi.encode_numpy(mx.zeros(3000, dtype=dtype))
    with pytest.raises(AudioInputError, match="is int16 samples"):
        float_audio(mx.zeros(10, dtype=mx.int16))
    # bfloat16 is float: taken, as float32 samples
    assert float_audio(mx.ones(10, dtype=mx.bfloat16)).dtype == np.float32


def test_bfloat16_codes_are_taken_as_whole_numbers(pp):
    pcm = pp.mimi.decode(mx.zeros((8, 2), dtype=mx.bfloat16))
    assert pcm.shape == (2 * 1920,)
    assert pp.mimi.decode_numpy(mx.full((8, 1), 5, dtype=mx.bfloat16)).shape == (1920,)
    s = session(pp)
    text, agent = s.step_codes(mx.full((8,), 7, dtype=mx.bfloat16))
    assert agent.shape == (8,)
    with pytest.raises(AudioInputError, match="whole numbers"):
        s.step_codes(mx.full((8,), 7.5, dtype=mx.bfloat16))


@pytest.mark.parametrize(
    "audio",
    [None, np.array(["0.5"] * 1920), ["0.5"] * 1920, np.zeros(1920, "timedelta64[s]"),
     np.array([None] * 1920), [[0.0], [0.0, 0.0]]],
    ids=["None", "strings", "list-of-strings", "timedelta", "objects", "ragged"],
)  # fmt: skip
def test_what_is_not_numbers_is_not_audio(pp, audio):
    with pytest.raises(AudioInputError, match="is not an array of float samples"):
        session(pp).step(audio)


@pytest.mark.parametrize("steps", [8.5, "8", 0, True, 17])
def test_depformer_steps_must_be_a_whole_number_in_range(pp, steps):
    with pytest.raises(
        SettingValueError, match=r"depformer_steps must be a whole number in 8\.\.16"
    ):
        session(pp, depformer_steps=steps)


def test_depformer_steps_in_range_are_taken(pp):
    assert session(pp).depformer_steps == 8
    assert session(pp, depformer_steps=np.int64(16)).depformer_steps == 16


def test_a_complex_temperature_is_refused(pp):
    with pytest.raises(SettingValueError, match="temperature must be a number"):
        pp.default_settings(text_temperature=np.complex64(1))


def test_a_prompt_text_that_is_not_valid_unicode_is_one_sentence(pp):
    with pytest.raises(UnknownPromptError, match="not valid Unicode"):
        pp.system_tokens("custom", "a\ud800b")


def test_objects_of_the_wrong_type_are_one_sentence(pp):
    with pytest.raises(SettingValueError, match="settings must be a SessionSettings, not dict"):
        pp.session({"voice": "NATF2"}, system_tokens=[])
    with pytest.raises(SettingValueError, match="voice= takes a prepared VoicePrompt"):
        pp.session(model.SessionSettings(None, seed=1), voice="NATF2", system_tokens=[])
    with pytest.raises(CheckpointError, match="listen\\(\\) takes a loaded STT model"):
        pp.listen("stt")
    with pytest.raises(CheckpointError, match="model is empty"):
        model.load("")
