"""A step's I/O through page-locked memory (model/cuda/host_io.py): the same frames and tokens as through MLX's arrays."""

from __future__ import annotations

import sys
import threading
import time

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda
from model.cuda import cubins, host_io, precompiled
from personaplex_tui.benchmark import (
    BenchOptions,
    _audio,
    bench_session,
    build_model,
    transcribing_session,
)
from tests.test_precompiled import NVRTC

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


def _same_steps(first, second, card: int, seed: int, frames: int = 40):
    """Step both sessions through the same audio, each full step followed by a `step_codes`
    with the same random user codes, and require the same frames and tokens bit for bit;
    the first session's last frame."""
    rng = np.random.default_rng(seed)
    for i, pcm in enumerate(_audio(frames, 1)):
        a, b = first.step(pcm), second.step(pcm)
        assert a.text_id == b.text_id, i
        np.testing.assert_array_equal(a.agent_codes, b.agent_codes)
        np.testing.assert_array_equal(a.user_codes, b.user_codes)
        assert a.pcm.dtype == b.pcm.dtype and a.pcm.shape == b.pcm.shape
        np.testing.assert_array_equal(a.pcm, b.pcm)
        codes = rng.integers(0, card, 8)
        ta, ca = first.step_codes(codes)
        tb, cb = second.step_codes(codes)
        assert ta == tb, i
        np.testing.assert_array_equal(ca, cb)
    return a


@GPU
def test_pinned_steps_give_the_managed_steps_frames_bit_for_bit():
    opts = BenchOptions(small=True, seed=3, user_transcript=False)
    model, voice, tokens = build_model(opts)
    pinned = bench_session(model, voice, tokens, opts)
    managed = bench_session(model, voice, tokens, opts)
    assert pinned._io is not None
    managed._io = None
    a = _same_steps(pinned, managed, model.lm.config.card, seed=0)
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


@NVRTC
@pytest.mark.parametrize("key", [(8, 8, 1920, 0, 0), (8, 0, 0, 0, 0), (8, 32, 1920, 1, 4)])
def test_the_write_back_compiles_with_nvrtc_as_one_block(tmp_path, monkeypatch, key):
    """The write-back (the full step's, `step_codes`' and a transcribing step's) compiles for an
    H200 and an A100; it loops over its words in one block, then raises the flag after a fence."""
    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(cubins, "_memory", {})
    monkeypatch.setattr(precompiled, "usable", lambda: True)
    kernel = host_io.write_back_kernel(key, 80 + 1920, 80 + 2 * 1920)
    assert isinstance(kernel, precompiled.PrecompiledKernel)
    ptr, text, codes = mx.zeros((1,), mx.int64), mx.zeros((1,), mx.int32), mx.zeros((8,), mx.int32)
    pcm, eot = mx.zeros((1920,), mx.float32), mx.zeros((4,), mx.float32)
    inputs = [ptr, text, codes, codes, pcm, text, eot]
    symbol, source = kernel.unit(inputs, [mx.int32], None)
    assert "#define DONE_OUT 3920" in source and "#define N_ALL " in source
    assert source.index("__syncthreads()") < source.index("[DONE_OUT] = 1")
    for arch in ("sm_90a", "sm_80"):
        binary = cubins.compiled(symbol, source, arch, True)
        assert binary[:4] == b"\x7fELF" and symbol.encode() in binary


def _flagged(words: int = 8) -> host_io.PinnedIO:
    """A PinnedIO over ordinary memory: only its flag word, for the polling logic."""
    io = object.__new__(host_io.PinnedIO)
    io._i32 = np.zeros(words, dtype=np.int32)
    io._done = words - 1
    return io


def test_the_wait_returns_once_the_flag_is_raised_and_lets_other_threads_run():
    """While it polls, a thread that sleeps a millisecond at a time gets the GIL back at once:
    the poll gives it up between polls (a poll that held it would make that thread wait out
    the interpreter's switch interval, here 0.2 s)."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.2)
    io = _flagged()
    io.arm()
    late = []

    def other() -> None:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.1:
            s = time.perf_counter()
            time.sleep(0.001)
            late.append(time.perf_counter() - s)
        io._i32[io._done] = 1

    thread = threading.Thread(target=other)
    try:
        start = time.perf_counter()
        thread.start()
        assert io.wait_written(limit_s=5.0)
        waited = time.perf_counter() - start
    finally:
        thread.join()
        sys.setswitchinterval(switch)
    assert 0.1 <= waited < 2.0
    assert len(late) > 10 and max(late) < 0.05


def test_the_wait_gives_up_after_its_limit_and_an_armed_flag_is_low():
    io = _flagged()
    io._i32[io._done] = 1
    assert io.wait_written(limit_s=0.0)  # raised already: no poll at all
    io.arm()
    start = time.perf_counter()
    assert not io.wait_written(limit_s=0.05)
    assert 0.05 <= time.perf_counter() - start < 1.0


def test_polling_is_switched_by_the_environment(monkeypatch):
    for value in ("block", "mlx", "off"):
        monkeypatch.setenv(host_io.ENV_WAIT, value)
        assert not host_io.polls_written()
    for value in ("", "poll", "spin"):
        monkeypatch.setenv(host_io.ENV_WAIT, value)
        assert host_io.polls_written()


@GPU
@pytest.mark.parametrize("limit", [None, 0.0])
def test_polled_steps_give_the_waited_steps_frames_bit_for_bit(monkeypatch, limit):
    """A session that polls for its steps' ends and one that waits as MLX does: the same frames
    and tokens; with a poll that gives up at once, the fallback to MLX's wait is as good."""
    opts = BenchOptions(small=True, seed=4, user_transcript=False)
    model, voice, tokens = build_model(opts)
    polled = bench_session(model, voice, tokens, opts)
    waited = bench_session(model, voice, tokens, opts)
    assert polled._io is not None and polled.polls_written
    waited.polls_written = False
    if limit is not None:
        wait = polled._io.wait_written
        monkeypatch.setattr(polled._io, "wait_written", lambda: wait(limit_s=limit))
    _same_steps(polled, waited, model.lm.config.card, seed=1)
