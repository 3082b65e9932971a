"""A step's I/O through page-locked memory (model/cuda/host_io.py): the same frames and tokens as through MLX's arrays."""

from __future__ import annotations

import numpy as np
import pytest

from model.backend import on_cuda
from model.cuda import host_io
from personaplex_tui.benchmark import (
    BenchOptions,
    _audio,
    bench_session,
    build_model,
    transcribing_session,
)

GPU = pytest.mark.skipif(not on_cuda(), reason="page-locked I/O is for NVIDIA GPUs only")


@pytest.mark.skipif(on_cuda(), reason="on CUDA the sessions use it")
def test_off_cuda_sessions_use_mlx_arrays():
    assert host_io.pinned_io(1920) is None


def test_switched_off_by_the_environment(monkeypatch):
    for value in ("managed", "off", "0"):
        monkeypatch.setenv(host_io.ENV_SWITCH, value)
        assert not host_io.switched_on()
        assert host_io.pinned_io(1920) is None
    monkeypatch.setenv(host_io.ENV_SWITCH, "")
    assert host_io.switched_on()


@GPU
def test_pinned_steps_give_the_managed_steps_frames_bit_for_bit():
    opts = BenchOptions(small=True, seed=3, user_transcript=False)
    model, voice, tokens = build_model(opts)
    pinned = bench_session(model, voice, tokens, opts)
    managed = bench_session(model, voice, tokens, opts)
    assert pinned._io is not None
    managed._io = None
    rng = np.random.default_rng(0)
    for i, pcm in enumerate(_audio(40, 1)):
        a, b = pinned.step(pcm), managed.step(pcm)
        assert a.text_id == b.text_id, i
        np.testing.assert_array_equal(a.agent_codes, b.agent_codes)
        np.testing.assert_array_equal(a.user_codes, b.user_codes)
        assert a.pcm.dtype == b.pcm.dtype and a.pcm.shape == b.pcm.shape
        np.testing.assert_array_equal(a.pcm, b.pcm)
        codes = rng.integers(0, model.lm.config.card, 8)
        ta, ca = pinned.step_codes(codes)
        tb, cb = managed.step_codes(codes)
        assert ta == tb, i
        np.testing.assert_array_equal(ca, cb)
    # a frame handed out is a copy: the next step does not change it
    kept = a.pcm.copy()
    pinned.step(np.zeros(pinned.frame_size, dtype=np.float32))
    np.testing.assert_array_equal(a.pcm, kept)


@GPU
def test_transcribing_steps_read_what_the_stt_heard_through_the_buffer():
    opts = BenchOptions(small=True, seed=5)
    model, _, _ = build_model(opts)
    audio = _audio(30, 2)
    pinned = transcribing_session(model, opts, audio, warm=0)
    managed = transcribing_session(model, opts, audio, warm=0)
    assert pinned._io is not None
    managed._io = None
    heads = None
    for i, pcm in enumerate(audio):
        a, b = pinned.step(pcm), managed.step(pcm)
        assert a.text_id == b.text_id, i
        assert a.user_text_id == b.user_text_id, i
        assert a.user_text == b.user_text
        assert a.end_of_turn == b.end_of_turn, i
        heads = len(a.end_of_turn)
        np.testing.assert_array_equal(a.user_codes, b.user_codes)
        np.testing.assert_array_equal(a.pcm, b.pcm)
    assert heads  # the tiny STT has end-of-turn heads, so they were compared
