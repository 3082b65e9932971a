"""Replies, streams, full duplex and diagnostics on a small model; bad input; memory over a long session."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model import AudioInputError, SessionSettings, UnknownPromptError, UnknownVoiceError, load
from model.conversation.replies import respond
from tests.checkpoints import small_config, write_small_checkpoint
from tests.textdata import load_wav_24k


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load(write_small_checkpoint(tmp_path_factory.mktemp("ckpt")), dtype=mx.float32)


@pytest.fixture(scope="module")
def question():
    return load_wav_24k("weather.wav")


def test_respond_returns_the_frames_after_the_utterance(model, question):
    reply = model.respond(question, "VARF2", "assistant", max_steps=10, seed=1)
    heard = -(-question.size // 1920)
    assert reply.audio.shape == (10 * 1920,) and reply.audio.dtype == np.float32
    assert np.isfinite(reply.audio).all()
    assert len(reply.frames) == 10 and len(reply.tokens) == heard + 10
    assert reply.text == model.tokenizer.decode(reply.tokens)
    again = model.respond(question, "VARF2", "assistant", max_steps=10, seed=1)
    np.testing.assert_array_equal(reply.audio, again.audio)


def test_a_second_turn_continues_the_same_session(model, question):
    session = model.session(SessionSettings("NATF2", "casual", seed=2))
    first = respond(session, question, max_steps=5)
    pos = session.position
    second = respond(session, question[:24000], max_steps=5)
    assert session.position == pos + 13 + 5
    fresh = respond(
        model.session(SessionSettings("NATF2", "casual", seed=2)), question[:24000], max_steps=5
    )
    assert first.audio.size == second.audio.size
    assert not np.array_equal(second.tokens, fresh.tokens) or not np.allclose(
        second.audio, fresh.audio
    )


@pytest.mark.parametrize("max_steps, expected_chunks", [(60, 3), (50, 2), (7, 1)])
def test_stream_chunks_and_the_final_flag(model, question, max_steps, expected_chunks):
    chunks = list(model.respond_stream(question, "VARF2", max_steps=max_steps, chunk_s=2.0, seed=5))
    assert len(chunks) == expected_chunks
    assert [c.final for c in chunks] == [False] * (expected_chunks - 1) + [True]
    assert [c.index for c in chunks] == list(range(expected_chunks))
    assert sum(c.audio.size for c in chunks) == max_steps * 1920
    assert all(c.audio.size == 25 * 1920 for c in chunks[:-1])
    whole = model.respond(question, "VARF2", max_steps=max_steps, seed=5)
    np.testing.assert_array_equal(np.concatenate([c.audio for c in chunks]), whole.audio)
    assert chunks[-1].transcript == whole.text
    assert all(c.transcript == "" for c in chunks[:-1])


def test_realtime_gives_one_frame_per_frame(model, question):
    frames = [question[i * 1920 : (i + 1) * 1920] for i in range(8)]
    out = list(model.respond_realtime(iter(frames), "NATM0", seed=3))
    assert [f.index for f in out] == list(range(8))
    assert all(f.pcm.shape == (1920,) for f in out)


def test_diagnose_reports_per_step_figures(model, question):
    diag = model.diagnose(question[:48000], "VARF2", max_steps=6, seed=1)
    steps = 25 + 6
    assert len(diag.stats) == len(diag.step_ms) == steps
    assert all(s.text_entropy >= 0 and s.hidden_norm > 0 for s in diag.stats)
    assert all(0 < sum(s.top_probs) <= 1 + 1e-5 for s in diag.stats)
    assert all(s.top_probs == sorted(s.top_probs, reverse=True) for s in diag.stats)
    assert all(len(s.top_tokens) == 5 for s in diag.stats)
    assert set(diag.phases_ms) == {"encode", "temporal", "depformer", "decode"}
    summary = diag.summary()
    assert summary["steps"] == steps and summary["step_ms_p50"] > 0


def test_bad_input_gets_one_sentence(model):
    with pytest.raises(AudioInputError, match="The audio is empty."):
        model.respond(np.zeros(0, np.float32))
    with pytest.raises(AudioInputError, match="must be mono"):
        model.respond(np.zeros((2, 1920), np.float32))
    with pytest.raises(AudioInputError, match="NaN or infinite"):
        model.respond(np.full(1920, np.nan, np.float32))
    with pytest.raises(AudioInputError, match="max_steps must be between 1 and 3000, not 0"):
        model.respond(np.zeros(1920, np.float32), max_steps=0)
    with pytest.raises(UnknownVoiceError, match="Unknown voice 'BOB'"):
        model.respond(np.zeros(1920, np.float32), voice="BOB")
    with pytest.raises(UnknownPromptError, match="Unknown system prompt preset 'x'"):
        model.respond(np.zeros(1920, np.float32), prompt="x")
    with pytest.raises(AudioInputError, match="one frame of 1920 samples"):
        model.session().step(np.zeros(100, np.float32))


def test_too_long_audio_is_refused(tmp_path):
    small = load(write_small_checkpoint(tmp_path / "c", config=small_config(context=20)))
    with pytest.raises(
        AudioInputError, match=r"1.7 s long, longer than the model's 1.6 s context; cut it"
    ):
        small.respond(np.zeros(21 * 1920, np.float32))


def test_memory_stays_flat_once_the_context_is_full(tmp_path):
    """5000 steps through a 100-frame context: nothing grows after the ring has filled."""
    small = load(write_small_checkpoint(tmp_path / "c", config=small_config(context=100)))
    session = small.session(SessionSettings("NATF2", "casual", seed=0))
    silence = np.zeros(1920, np.float32)
    samples = {}
    for i in range(5000):
        session.step(silence)
        if i in (300, 2500, 4999):
            mx.clear_cache()
            samples[i] = mx.get_active_memory()
    assert samples[2500] <= samples[300] * 1.01 + 65536
    assert samples[4999] <= samples[300] * 1.01 + 65536
