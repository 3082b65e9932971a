"""Shared fixtures: a small checkpoint of random weights in the real on-disk layout, and the
models (fake and tiny real) the conversation tests run against, and private PulseAudio servers
for the real-device tests."""

from __future__ import annotations

import os

# The suite checks float32 arithmetic at full float32 on every backend. MLX's CUDA backend (and,
# by reports, Apple's M5 GPUs) runs float32 matrix products of many rows as TF32 by default, inputs
# rounded to 10 mantissa bits: a batched prefill then differs from the same positions stepped one
# at a time (mat-vecs, full float32) by about 1e-3, where the tests' bounds are 1e-5 to catch a
# wrong formula. MLX reads this variable at its first matrix product, so it is set before any.
# What users run, TF32 on: tests/test_float32_precision.py (docs/cuda-kernels.md §TF32 on CUDA).
os.environ.setdefault("MLX_ENABLE_TF32", "0")

import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from personaplex_tui.stop_signals import POLICY, SignalPolicy
from tests.checkpoints import write_small_checkpoint
from tests.conversation_fakes import MODEL_FACTORIES
from tests.pulse_server import NULL_SINK, ROOM, private_pulse


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl+C reaches the commands the tests start, however pytest itself was started. A
    background job of a script begins with SIGINT ignored, every child inherits that, and the
    app keeps an ignored stop signal ignored (stop_signals: nohup's convention), so each test
    that sends one SIGINT failed there (test_download_stop: the reply was written in full).
    A signal Python handles is reset to the default in the children (exec)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete small checkpoint (voices NATF2, VARF2, NATM0), written once per test run."""
    return write_small_checkpoint(tmp_path_factory.mktemp("small-ckpt"))


@pytest.fixture
def commands_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The commands' own POLICY, installed as `main` installs it, put back as it was after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for name, fresh in vars(SignalPolicy()).items():
        monkeypatch.setattr(POLICY, name, fresh)
    POLICY.install()
    yield POLICY
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(params=sorted(MODEL_FACTORIES))
def make_model(request: pytest.FixtureRequest, small_checkpoint: Path) -> Callable[[], object]:
    """A function making the model; `Probe` calls it in the loader, on the engine thread."""
    return lambda: MODEL_FACTORIES[request.param](small_checkpoint)


@pytest.fixture
def pulse_null_sink() -> Iterator[dict[str, str]]:
    """A private PulseAudio daemon whose default sink is a null sink; yields the client env."""
    with private_pulse(NULL_SINK) as env:
        yield env


@pytest.fixture
def pulse_room() -> Iterator[dict[str, str]]:
    """A private PulseAudio daemon whose microphone hears its speaker through a loopback."""
    with private_pulse(ROOM, prefix="ppx-pa-room-") as env:
        yield env


def pytest_terminal_summary(terminalreporter) -> None:
    """Lists the Mimi parity tests' accepted ties (tests/test_mimi_parity.py), when any ran."""
    reference = sys.modules.get("tests.mimi_reference")  # imported only if those tests ran
    if reference is None or not reference.TIE_REPORT:
        return
    TIE_REPORT, SNR_REPORT = reference.TIE_REPORT, reference.SNR_REPORT
    ties = sum(len(t) for _, t, _ in TIE_REPORT)
    compared = sum(n for _, _, n in TIE_REPORT)
    terminalreporter.write_line(
        f"Mimi parity: {ties} tie(s) accepted in {compared} codes compared over {len(TIE_REPORT)} runs"
    )
    for name, found, _ in TIE_REPORT:
        for frame, codebook, gap in found:
            terminalreporter.write_line(
                f"  {name}: frame {frame}, codebook {codebook}, distances {gap:.1e} apart"
            )
    if SNR_REPORT:
        snrs = [snr for _, snr in SNR_REPORT]
        terminalreporter.write_line(
            f"Mimi parity: decoded audio {min(snrs):.1f}-{max(snrs):.1f} dB SNR over {len(snrs)} runs"
        )
