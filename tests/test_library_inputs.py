"""The `model` package refuses what a caller can get wrong, in one sentence of its own error
types, instead of a crash (codes or token ids past a table), a poisoned stream (NaN) or a
silently wrong answer (int16 samples taken as floats, NaN temperatures). Found by an audit of the
library as a developer would use it."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import model
from model.config import MimiConfig, SamplingConfig, mimi_tiny
from model.errors import AudioInputError, SettingValueError, UnknownPromptError
from model.mimi import MimiCodec
from tests.checkpoints import small_config


@pytest.fixture(scope="module")
def pp():
    return model.random_model(small_config(context=40), seed=3)


def session(pp, **kw):
    kw.setdefault("system_tokens", [])  # a random model has no tokenizer
    return pp.session(model.SessionSettings(None, seed=1), **kw)


def test_a_step_refuses_int_and_non_finite_samples_and_takes_mlx_arrays(pp):
    s = session(pp)
    frame = np.zeros(1920, np.float32)
    with pytest.raises(AudioInputError, match="is int16 samples; give float samples"):
        s.step(np.zeros(1920, np.int16))
    for bad in (math.nan, math.inf):
        poisoned = frame.copy()
        poisoned[100] = bad
        with pytest.raises(AudioInputError, match="contains NaN or infinite samples"):
            s.step(poisoned)
    with pytest.raises(AudioInputError, match="not an array of float samples"):
        s.step(["a"] * 1920)
    # nothing reached the stream: it hears as a fresh one does
    fresh = session(pp)
    a = s.step(mx.zeros((1920,), dtype=mx.bfloat16))  # bfloat16 has no NumPy dtype
    assert np.array_equal(a.user_codes, fresh.step(frame).user_codes)


def test_user_codes_must_be_whole_numbers_in_range(pp):
    s = session(pp)
    for codes in (np.full(8, 2048), np.full(8, -1), np.full(8, np.nan), np.full(8, 1.5)):
        with pytest.raises(AudioInputError, match=r"must be whole numbers in \[0, 2048\)"):
            s.step_codes(codes)
    with pytest.raises(AudioInputError, match="takes the user's 8 codes"):
        s.step_codes(np.arange(5))
    text, agent = s.step_codes(np.full(8, 7))
    assert agent.shape == (8,)


def test_system_prompt_token_ids_are_checked(pp):
    text_card = pp.lm.config.text_card
    with pytest.raises(UnknownPromptError, match=rf"must be in \[0, {text_card}\)"):
        session(pp, system_tokens=[10**6])  # past the embedding: a crash before the check
    with pytest.raises(UnknownPromptError, match="must be in"):
        session(pp, system_tokens=[-1])
    with pytest.raises(UnknownPromptError, match="whole numbers"):
        session(pp, system_tokens=["abc"])
    with pytest.raises(UnknownPromptError, match="phase would be 12013 positions, more than"):
        session(pp, system_tokens=[5] * 12001)  # the prefill's mask grows as its square
    assert session(pp, system_tokens=[5] * 60).position > 40  # longer than the context: taken


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("audio_temperature", math.nan, "audio temperature must be a finite number"),
        ("text_temperature", math.inf, "text temperature must be a finite number"),
        ("text_temperature", -1.0, "text temperature must be a finite number of at least 0"),
        ("text_temperature", "0.7", "text temperature must be a number"),
        ("audio_top_k", 2.5, "audio top-k must be a whole number"),
        ("audio_top_k", -5, "audio top-k must be a whole number of at least 0"),
        ("text_top_k", "25", "text top-k must be a whole number"),
    ],
)
def test_sampling_settings_are_checked_when_made(field, value, message):
    with pytest.raises(SettingValueError, match=message):
        SamplingConfig(**{field: value})
    assert SamplingConfig(audio_top_k=0).audio_top_k == 0  # 0: no cut


def test_seeds_and_settings_types(pp):
    for seed in (-1, 2**70, "abc", 1.5):
        with pytest.raises(SettingValueError, match="seed must be"):
            pp.session(model.SessionSettings(None, seed=seed), system_tokens=[])
    with pytest.raises(SettingValueError, match="seed must be"):
        model.random_model(small_config(), seed=-1)
    with pytest.raises(SettingValueError, match="seed must be"):
        MimiCodec.random(mimi_tiny(), seed=-1)
    with pytest.raises(SettingValueError, match="sampling must be a SamplingConfig"):
        pp.session(
            model.SessionSettings(None, sampling={"text_temperature": 0.1}), system_tokens=[]
        )
    with pytest.raises(
        ValueError, match="depformer_steps must be a whole number in"
    ):  # a SettingValueError
        session(pp, depformer_steps=3)


def test_session_settings_check_their_values_where_they_are_made():
    """Values given by position or of the wrong kind are refused by SessionSettings itself, and
    `replace` names an unknown setting instead of Python's keyword TypeError."""
    with pytest.raises(SettingValueError, match="voice must be a voice preset's name"):
        model.SessionSettings(1)
    with pytest.raises(SettingValueError, match="setting prompt must be text"):
        model.SessionSettings("NATF2", 3)
    with pytest.raises(SettingValueError, match="seed must be"):
        model.SessionSettings(seed=-1)
    with pytest.raises(SettingValueError, match="There is no setting 'foo'; the settings are"):
        model.SessionSettings().replace(foo=1)
    assert model.SessionSettings(seed=np.int64(4)).seed == 4
    assert type(model.SessionSettings(seed=np.int64(4)).seed) is int
    changed = model.SessionSettings().replace(seed=3, text_temperature=0.5)
    assert (changed.seed, changed.sampling.text_temperature) == (3, 0.5)


def test_mimi_refuses_codes_and_samples_it_cannot_take():
    codec = MimiCodec.random(mimi_tiny(), seed=0)
    with pytest.raises(AudioInputError, match="whole numbers"):
        codec.decode_numpy(np.full((8, 3), np.nan))  # cast to INT_MIN, it crashed the process
    with pytest.raises(AudioInputError, match="whole numbers"):
        codec.decode_numpy(np.full((8, 3), 3.7))
    with pytest.raises(AudioInputError, match=r"not 5000\.\.5000"):
        codec.decode_step(np.full(8, 5000))  # host codes are checked
    with pytest.raises(AudioInputError, match=r"not -7\.\.-7"):
        codec.decode(mx.full((8, 2), -7, dtype=mx.int32))  # a whole signal: checked too
    with pytest.raises(AudioInputError, match="NaN or infinite"):
        codec.encode_step(np.full(1920, np.nan, np.float32))
    with pytest.raises(AudioInputError, match="is int16 samples"):
        codec.encode(np.zeros(1920, np.int16))
    codes = codec.encode_numpy(np.zeros(3840, np.float32))
    assert codec.decode_numpy(codes).shape == (3840,)
    assert MimiConfig().codebook_size == 2048


def test_reply_lengths_dtypes_and_model_names_are_checked(pp, tmp_path):
    from model.errors import CheckpointError

    audio = np.zeros(1920 * 3, np.float32)
    s = session(pp)
    for steps in (None, "x", 2.5):
        with pytest.raises(AudioInputError, match="max_steps must be a whole number"):
            model.conversation.replies.respond(s, audio, max_steps=steps)
    for chunk in (math.nan, math.inf, 0, "2"):
        with pytest.raises(AudioInputError, match="chunk length must be a number of seconds"):
            list(model.conversation.replies.respond_stream(s, audio, 3, chunk_s=chunk))
    for dtype in (mx.int32, np.float16, "half"):
        with pytest.raises(CheckpointError, match="activation dtype must be one of"):
            model.load(tmp_path, dtype=dtype)  # said before anything is read
    with pytest.raises(CheckpointError, match="a folder or a repo id"):
        model.load(123)


def test_reply_helpers_take_sampling_fields_by_name_and_voices_are_text(pp):
    """`respond(..., text_temperature=0.1)` reached Session and failed with a TypeError; a voice
    given as a number failed inside str.strip."""
    from model.checkpoints.voice_presets import canonical_voice
    from model.errors import UnknownVoiceError

    audio = np.full(1920 * 2, 0.01, np.float32)
    options = {"voice": None, "max_steps": 3, "system_tokens": []}

    def reply(seed: int, **sampling: float) -> list:
        return pp.respond(audio, seed=seed, **sampling, **options).tokens

    greedy = {"text_temperature": 0.0, "audio_temperature": 0.0}
    assert reply(4, **greedy) == reply(5, **greedy)  # argmax: the seed no longer matters
    assert reply(4) != reply(5)  # (it does when sampling)
    with pytest.raises(UnknownVoiceError, match="named by text"):
        canonical_voice(3)


def test_quantization_bits_stt_codes_and_warm_up_shares_are_one_sentence(pp):
    """`random_model(bits=7)`, an STT step given 5 codes and `warm_up(part=(0, 0))` each say what
    they take, in the library's error types (not a bare ValueError or a slicing error)."""
    from model.stt.random_listener import random_listener, tiny_stt_config

    with pytest.raises(SettingValueError, match="Quantization takes 2, 3, 4, 5, 6 or 8 bits"):
        model.random_model(small_config(), bits=7)
    listener = random_listener(pp, tiny_stt_config(), seed=0)
    stream = listener.stream()
    with pytest.raises(AudioInputError, match="reads 32 codes per frame, not an array of"):
        stream.step(mx.zeros((5,), dtype=mx.int32))
    for part in ((0, 0), (2, 2), (-1, 3), (0.5, 2)):
        with pytest.raises(SettingValueError, match="part=\\(i, n\\) takes"):
            session(pp).warm_up(part=part)
