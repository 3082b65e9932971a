"""`Session.step_codes` building the next call's LM graph while the GPU runs this one: its logic on
any machine through a stand-in for the page-locked buffer, and on an NVIDIA GPU through the real one."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.backend import on_cuda
from personaplex_tui.benchmark import BenchOptions, _audio, bench_session, build_model

GPU = pytest.mark.skipif(not on_cuda(), reason="the page-locked buffer is for NVIDIA GPUs only")


class PromisedIO:
    """`PinnedIO`'s part that a session calls, on MLX's arrays (no GPU needed).

    The real buffer's input array is copied when its step runs, so a step built ahead reads the
    codes written just before its launch. Here the array is made when the step is built, from
    the codes the test will write next (`rows`, in order); `put_codes` checks that the codes
    written are those, so a step launched on other codes fails. `arm` and `written_back` keep
    the real buffer's order: the write-back that `wait_written` waits for is the last armed one.
    """

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.written = 0  # rows written so far
        self.unarmed = None  # the write-back of a step built ahead, not launched
        self.armed = None  # that of the step launched last: what the getters read

    def put_codes(self, codes: np.ndarray) -> None:
        np.testing.assert_array_equal(codes, self.rows[self.written])
        self.written += 1

    def codes_in(self, codes: np.ndarray) -> mx.array:
        self.put_codes(codes)
        return mx.array(np.asarray(codes, dtype=np.int32))

    def codes_later(self, n: int) -> mx.array:
        upcoming = self.rows[min(self.written, len(self.rows) - 1)]
        return mx.array(np.asarray(upcoming[:n], dtype=np.int32))

    def frame_in(self, pcm: np.ndarray) -> mx.array:
        return mx.array(pcm)

    def written_back(self, text, codes, user=None, pcm=None, heard=(), *, arm=True):
        back = (text, codes, user, pcm)
        if arm:
            self.armed = back
        else:
            self.unarmed = back
        return text + 0

    def arm(self) -> None:
        self.armed, self.unarmed = self.unarmed, None

    def wait_written(self) -> bool:
        mx.eval([a for a in self.armed if a is not None])
        return True

    def text(self) -> int:
        return int(self.armed[0].item())

    def codes(self) -> np.ndarray:
        return np.array(self.armed[1])

    def user(self) -> np.ndarray:
        return np.array(self.armed[2])

    def pcm(self) -> np.ndarray:
        return np.array(self.armed[3])


@pytest.mark.parametrize(
    "compiled, buffer",
    [
        (True, "stand-in"),
        (False, "stand-in"),
        pytest.param(True, "page-locked", marks=GPU),
        pytest.param(False, "page-locked", marks=GPU),
    ],
)
def test_lm_steps_built_ahead_give_the_tokens_of_steps_built_when_called(compiled, buffer):
    """The same tokens as a session without the buffer, through runs of LM steps, full steps
    (which drop the step built ahead), a reset and a replaced key; the step built ahead is
    launched whenever nothing it read changed in between, and never on other codes. Also on
    eager graphs (`compile=False`, and a fresh GPU's first minute), which write the ring states
    they are given. On an NVIDIA GPU also through the real page-locked buffer."""
    opts = BenchOptions(small=True, seed=6, user_transcript=False)
    model, voice, tokens = build_model(opts)
    ahead = bench_session(model, voice, tokens, opts, compile=compiled)
    called = bench_session(model, voice, tokens, opts, compile=compiled)
    called._io = None  # MLX's arrays (as on any machine but an NVIDIA GPU)
    assert ahead.polls_written and ahead.builds_ahead
    card = model.lm.config.card
    rows = np.random.default_rng(2).integers(0, card, (60, 8))
    if buffer == "stand-in":
        ahead._io = PromisedIO(rows)
    assert ahead._io is not None
    audio = iter(_audio(4, 3))
    launched_ahead, row = 0, 0
    for plan in (12, "step", 5, "step", "step", 1, "reset", 8, "new key", 10):
        if plan == "step":
            pcm = next(audio)
            a, b = ahead.step(pcm), called.step(pcm)
            assert a.text_id == b.text_id
            np.testing.assert_array_equal(a.agent_codes, b.agent_codes)
            np.testing.assert_array_equal(a.pcm, b.pcm)
            assert ahead._ahead is None
        elif plan == "reset":
            ahead.reset()
            called.reset()
            assert ahead._ahead is None
        elif plan == "new key":  # what the step built ahead read has changed: built anew
            ahead._key = called._key = mx.random.key(11)
        else:
            for _ in range(plan):
                built = ahead._ahead
                ta, ca = ahead.step_codes(rows[row])
                tb, cb = called.step_codes(rows[row])
                row += 1
                assert ta == tb
                np.testing.assert_array_equal(ca, cb)
                launched_ahead += built is not None and built.basis is None
                assert ahead._ahead is not None
    assert row == 36
    assert launched_ahead == 11 + 4 + 0 + 7 + 9  # each run's first call builds when called


def test_no_step_is_built_ahead_without_polling_or_when_switched_off():
    opts = BenchOptions(small=True, seed=6, user_transcript=False)
    model, voice, tokens = build_model(opts)
    rows = np.random.default_rng(3).integers(0, model.lm.config.card, (4, 8))
    for polls, builds in ((False, True), (True, False)):
        session = bench_session(model, voice, tokens, opts)
        session._io = PromisedIO(rows)
        session.polls_written, session.builds_ahead = polls, builds
        session.step_codes(rows[0])
        assert session._ahead is None


def test_a_failed_build_ahead_leaves_the_step_whole():
    """Building the next step ahead is a guess made after this step is launched: if it fails,
    this step still returns its tokens and the next call builds its own step."""
    opts = BenchOptions(small=True, seed=6, user_transcript=False)
    model, voice, tokens = build_model(opts)
    rows = np.random.default_rng(4).integers(0, model.lm.config.card, (3, 8))
    ahead = bench_session(model, voice, tokens, opts)
    called = bench_session(model, voice, tokens, opts)
    called._io = None
    ahead._io = PromisedIO(rows)

    def fails(n: int) -> mx.array:
        raise RuntimeError("out of memory")

    ahead._io.codes_later = fails
    for codes in rows:
        ta, ca = ahead.step_codes(codes)
        tb, cb = called.step_codes(codes)
        assert ta == tb
        np.testing.assert_array_equal(ca, cb)
        assert ahead._ahead is None
    assert ahead.position == called.position


def test_the_ab_script_checks_the_tokens_and_times_both_ways(capsys, monkeypatch):
    """`benchmarks/build_ahead_ab.py` on the tiny model (off CUDA both ways build when called)."""
    from benchmarks import build_ahead_ab
    from personaplex_tui import cuda_launches

    # as the script would set it, but put back after the test
    monkeypatch.setenv(cuda_launches.ENV_VAR, "0")

    assert build_ahead_ab.main(["--small", "--steps", "20", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "the same tokens each way over 200 steps: True" in out
    assert "round 0: built when called p50" in out and "built ahead p50" in out
