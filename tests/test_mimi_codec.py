"""MimiCodec on its own (tiny config, random weights): round trips, streaming state, bad input."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.config import FRAME_SAMPLES, mimi_tiny
from model.errors import AudioInputError
from model.mimi import MimiCodec, random_mimi_weights
from tests.mimi_reference import load_test_audio


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return random_mimi_weights(mimi_tiny(), seed=5)


@pytest.fixture(scope="module")
def codec(weights) -> MimiCodec:
    c = MimiCodec(mimi_tiny())
    c.load_weights(weights)
    return c


@pytest.fixture(scope="module")
def shipping() -> np.ndarray:
    return load_test_audio("shipping.wav")


def _stream(codec: MimiCodec, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, out = [], []
    for i in range(len(pcm) // FRAME_SAMPLES):
        c = codec.encode_step(mx.array(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]))
        o = codec.decode_step(c)
        mx.eval(c, o, codec.state_arrays())
        codes.append(np.array(c))
        out.append(np.array(o))
    return np.stack(codes, axis=1), np.concatenate(out)


def test_whole_file_round_trip(codec, shipping):
    n = -(-len(shipping) // FRAME_SAMPLES)  # the tail is zero-padded to a whole frame
    codes = codec.encode_numpy(shipping)
    assert codes.shape == (8, n) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 2048
    pcm = codec.decode_numpy(codes)
    assert pcm.shape == (n * FRAME_SAMPLES,) and pcm.dtype == np.float32
    assert np.isfinite(pcm).all() and pcm.std() > 1e-3


def test_streaming_round_trip_and_reset(codec, shipping):
    pcm = shipping[: 30 * FRAME_SAMPLES]
    codec.reset()
    codes, out = _stream(codec, pcm)
    assert codes.shape == (8, 30) and out.shape == (30 * FRAME_SAMPLES,)
    assert np.isfinite(out).all()
    again_codes, again_out = _stream(codec, pcm)  # no reset: the state carries on
    assert not np.array_equal(again_out, out)
    codec.reset()
    reset_codes, reset_out = _stream(codec, pcm)
    assert np.array_equal(reset_codes, codes)
    assert np.array_equal(reset_out, out)


def test_steps_take_numpy_and_return_lazy_arrays(codec, shipping):
    codec.reset()
    codes = codec.encode_step(shipping[:FRAME_SAMPLES])
    pcm = codec.decode_step(np.array(codes))
    assert isinstance(codes, mx.array) and codes.shape == (8,) and codes.dtype == mx.int32
    assert isinstance(pcm, mx.array) and pcm.shape == (FRAME_SAMPLES,) and pcm.dtype == mx.float32


def test_compiled_steps_equal_eager(weights, shipping):
    pcm = shipping[: 12 * FRAME_SAMPLES]
    results = []
    for compile in (True, False):
        c = MimiCodec(mimi_tiny(), compile=compile)
        c.load_weights(weights)
        results.append(_stream(c, pcm))
    (codes_c, out_c), (codes_e, out_e) = results
    assert np.array_equal(codes_c, codes_e)
    np.testing.assert_allclose(out_c, out_e, atol=1e-4 * np.abs(out_e).max())


def test_batch_calls_leave_the_stream_alone(codec, shipping):
    pcm = shipping[: 10 * FRAME_SAMPLES]
    codec.reset()
    whole_codes, whole_out = _stream(codec, pcm)
    codec.reset()
    first_codes, first_out = _stream(codec, pcm[: 5 * FRAME_SAMPLES])
    codec.decode_numpy(codec.encode_numpy(shipping))
    rest_codes, rest_out = _stream(codec, pcm[5 * FRAME_SAMPLES :])
    assert np.array_equal(np.concatenate([first_codes, rest_codes], axis=1), whole_codes)
    assert np.array_equal(np.concatenate([first_out, rest_out]), whole_out)


def test_silence_codes_are_stable(codec):
    """Digital silence (what a turn-based reply feeds) codes to the same frame once settled."""
    codes = codec.encode_numpy(np.zeros(20 * FRAME_SAMPLES, np.float32))
    assert (codes[:, -1:] == codes[:, -6:]).all()


@pytest.mark.parametrize(
    "call,arg,message",
    [
        ("encode_step", np.zeros(FRAME_SAMPLES - 1, np.float32), "frames of 1920 samples"),
        ("encode_step", np.zeros((1, FRAME_SAMPLES), np.float32), "frames of 1920 samples"),
        ("decode_step", np.zeros(7, np.int32), "8 codes per frame"),
        ("encode", mx.zeros(FRAME_SAMPLES + 5), "whole number of 1920-sample frames"),
        ("decode", mx.zeros((7, 3), dtype=mx.int32), "codes shaped [8, frames]"),
        ("encode_numpy", np.zeros(0, np.float32), "non-empty mono audio"),
        ("encode_numpy", np.zeros((2, FRAME_SAMPLES), np.float32), "non-empty mono audio"),
        ("encode_numpy", np.full(FRAME_SAMPLES, np.nan, np.float32), "NaN or infinite"),
        (
            "decode_numpy",
            np.full((8, 2), 2048),
            "must be whole numbers in [0, 2048), not 2048..2048.",
        ),
        ("decode_numpy", np.zeros((8, 0), np.int32), "codes shaped [8, frames]"),
    ],
)
def test_bad_input_is_one_sentence(codec, call, arg, message):
    with pytest.raises(AudioInputError) as info:
        getattr(codec, call)(arg)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"ratios": (8, 6, 5, 3)}, "not a whole number of encoder hops"),
        ({"num_heads": 5}, "not a multiple of its 5 heads"),
        ({"num_codebooks": 12}, "uses 12 codebooks but stores 10"),
        ({"context": 1}, "shorter than one frame"),
    ],
)
def test_unusable_config_is_one_sentence(change, message):
    from dataclasses import replace

    from model.errors import CheckpointError

    with pytest.raises(CheckpointError, match=message):
        MimiCodec(replace(mimi_tiny(), **change))


def test_full_caches_attend_without_a_mask_array_and_equal_the_masked_path(codec, shipping):
    pcm = shipping[: 12 * FRAME_SAMPLES]  # context 7, two steps a frame: full from the 4th frame on
    model = codec.model
    assert [model.full_after(f) for f in range(5)] == [False, False, False, True, True]
    codec.reset()
    codes, out = _stream(codec, pcm)
    enc, dec = model.init_encode_state(), model.init_decode_state()
    masked_codes, masked_out = [], []
    for i in range(12):
        c, enc = model.encode_step(
            mx.array(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]), enc, False
        )
        o, dec = model.decode_step(c, dec, False)
        masked_codes.append(np.array(c))
        masked_out.append(np.array(o))
    assert np.array_equal(np.stack(masked_codes, axis=1), codes)
    np.testing.assert_allclose(np.concatenate(masked_out), out, atol=1e-6 * np.abs(out).max())
