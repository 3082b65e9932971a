"""Kyutai STT on the project's layers against PyPI `moshi` (PyTorch): a tiny random model built by
moshi's own classes in the real repositories' layout, read by moshi's `CheckpointInfo` and by
`model.stt.load_stt`, run greedily in float32 on shared speech with moshi's `LMGen` as the oracle.

Frame convention: `LMGen`'s (see `model.stt.stream`): the text token returned for frame n has seen
frames 1..n, frame 0 being replaced by the initial tokens.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from model.stt import SttStream, load_stt
from tests.mimi_reference import load_test_audio
from tests.stt_reference import run_reference, tiny_lm_kwargs, write_tiny_stt_repo

CONTEXT = tiny_lm_kwargs()["context"]


def speech() -> np.ndarray:
    """greeting.wav then the 7 silent frames that flush the last words (Kyutai's scripts)."""
    return np.concatenate([load_test_audio("greeting.wav"), np.zeros(7 * 1920, np.float32)])


def transcribe_codes(stream: SttStream, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tokens, heads = [], []
    for column in codes:
        step = stream.step(mx.array(column))
        mx.eval(step.text_token, step.head_probs, stream.state_arrays())
        tokens.append(int(step.text_token.item()))
        heads.append(np.array(step.head_probs))
    return np.array(tokens), np.array(heads)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_stt_repo(tmp_path_factory.mktemp("stt") / "stt-1b-en_fr-tiny")


@pytest.fixture(scope="module")
def reference(repo: Path):
    return run_reference(repo, speech())


@pytest.fixture(scope="module")
def stt(repo: Path):
    return load_stt(repo, dtype=mx.float32)


def test_the_clip_exercises_the_model(reference) -> None:
    frames = len(reference.text)
    assert frames > 3 * CONTEXT  # the ring KV cache wraps several times
    assert len(set(reference.text.tolist())) >= frames // 2  # the text depends on the audio
    assert reference.heads.shape == (frames, 4, 6)
    assert reference.heads.std(axis=0).max() > 1e-2  # the heads' outputs move


@pytest.mark.parametrize("compile", [True, False])
def test_text_tokens_and_extra_heads_match_moshi(stt, reference, compile: bool) -> None:
    tokens, heads = transcribe_codes(SttStream(stt.lm, compile=compile), reference.codes)
    assert np.array_equal(tokens, reference.text)
    assert np.abs(heads - reference.heads).max() <= 1e-4


def test_end_of_turn_is_each_heads_first_class(stt, reference) -> None:
    stream = SttStream(stt.lm)
    step = stream.step(mx.array(reference.codes[0]))
    mx.eval(step.end_of_turn, step.head_probs)
    assert np.array_equal(np.array(step.end_of_turn), np.array(step.head_probs)[:, 0])
    assert np.allclose(np.array(step.head_probs).sum(axis=-1), 1.0, atol=1e-5)


def test_our_mimi_codes_all_32_codebooks_like_moshi(stt, reference) -> None:
    assert stt.mimi.num_codebooks == 32
    codes = []
    pcm = speech()
    for start in range(0, len(pcm) - 1919, 1920):
        c = stt.mimi.encode_step(mx.array(pcm[start : start + 1920]))
        mx.eval(c, stt.mimi.state_arrays())
        codes.append(np.array(c))
    codes = np.array(codes)
    assert codes.shape == reference.codes.shape
    assert np.array_equal(codes[:, 0], reference.codes[:, 0])  # the semantic codebook
    assert np.mean(codes == reference.codes) >= 0.99  # as tests/test_mimi_parity.py


def test_reset_starts_the_stream_again(stt, reference) -> None:
    stream = SttStream(stt.lm)
    transcribe_codes(stream, reference.codes[:20])
    stream.reset()
    tokens, _ = transcribe_codes(stream, reference.codes)
    assert np.array_equal(tokens, reference.text)


def test_memory_stays_flat(stt, reference) -> None:
    stream = SttStream(stt.lm)
    shapes = [tuple(a.shape) for a in stream.state_arrays()]
    transcribe_codes(stream, np.concatenate([reference.codes] * 2))
    assert [tuple(a.shape) for a in stream.state_arrays()] == shapes
    assert all(a.shape[2] == CONTEXT for c in stream.caches for a in c.state)
