"""Which build of AEC3 the canceller runs: the library built here (`apm_build`: WebRTC 2.1 with
the double-talk tuning of audio/native/ppx_apm.cc) wherever it loads, else livekit's; and what
the tuning changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from personaplex_tui.audio import apm_native
from personaplex_tui.audio.aec import EchoCanceller, ProcessingOptions
from personaplex_tui.audio.apm_library import (
    ENV_LIBRARY,
    SHIM_VERSION,
    library_path,
    recipe_digest,
)
from personaplex_tui.audio.errors import CancellerUnavailableError
from tests.echo_paths import measure_case

ROOT = Path(__file__).resolve().parents[1]


def test_the_library_built_by_setup_is_the_canceller_in_use() -> None:
    """`./dev test` builds it (justfile: setup-test), so the suite measures what users of
    `./dev app` run; the file name carries the entry points' version."""
    assert library_path().name.startswith(f"libppx_apm-{SHIM_VERSION}-{recipe_digest()}.")
    assert apm_native.load_library() is not None, f"not built: {library_path()}"
    aec = EchoCanceller()
    assert aec.backend == "webrtc" and "2.1, built here" in aec.name


def _backend_in_a_fresh_process(env_value: str) -> dict[str, str]:
    """(EchoCanceller().backend, or the error of backend="webrtc") with PPX_APM_LIBRARY set."""
    code = (
        "import json\n"
        "from personaplex_tui.audio.aec import EchoCanceller\n"
        "from personaplex_tui.audio.errors import CancellerUnavailableError\n"
        "out = {'default': EchoCanceller().backend}\n"
        "try:\n"
        "    EchoCanceller(backend='webrtc')\n"
        "    out['webrtc'] = 'ok'\n"
        "except CancellerUnavailableError as e:\n"
        "    out['webrtc'] = str(e)\n"
        "print(json.dumps(out))\n"
    )
    env = {"PYTHONPATH": str(ROOT), ENV_LIBRARY: env_value, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_switched_off_it_is_livekits() -> None:
    got = _backend_in_a_fresh_process("off")
    assert got["default"] == "livekit"
    assert got["webrtc"].startswith("The tuned echo canceller is not built here")


@pytest.mark.parametrize("what", ["missing", "not-a-library"])
def test_a_library_that_is_not_there_or_does_not_load_falls_back_to_livekit(
    tmp_path: Path, what: str
) -> None:
    path = tmp_path / "libppx_apm-1.so"
    if what == "not-a-library":
        path.write_text("not ELF\n")
    got = _backend_in_a_fresh_process(str(path))
    assert got["default"] == "livekit"
    assert got["webrtc"] == (
        f"The tuned echo canceller is not built here ({sys.executable} -m "
        f"personaplex_tui.audio.apm_build builds it; {ENV_LIBRARY} names another file)."
    )


def test_a_library_of_other_entry_points_is_not_loaded(tmp_path: Path) -> None:
    """A library that loads and has the five entry points, but reports another version."""
    from tests.test_apm_build import compile_fake

    other, same = tmp_path / "other.so", tmp_path / "same.so"
    compile_fake(other, SHIM_VERSION + 1)
    compile_fake(same, SHIM_VERSION)
    assert apm_native.load_library(other) is None
    assert apm_native.load_library(same) is not None  # (the check itself is not what refused)


def test_a_built_library_that_cannot_start_falls_back_to_livekit(tmp_path: Path, caplog) -> None:
    """The entry points load but creating a module fails (a fake whose create returns null):
    the app's canceller is livekit's, said in the log; asked for by name, one sentence."""
    from tests.test_apm_build import compile_fake

    fake = tmp_path / "fake.so"
    compile_fake(fake, SHIM_VERSION)
    lib = apm_native.load_library(fake)
    assert lib is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("personaplex_tui.audio.aec.load_library", lambda: lib)
        aec = EchoCanceller()
        assert aec.backend == "livekit"
        assert "the built echo canceller did not start" in caplog.text
        with pytest.raises(CancellerUnavailableError, match="could not be started"):
            EchoCanceller(backend="webrtc")


def test_backend_webrtc_refuses_livekits_documented_api_and_unknown_names() -> None:
    with pytest.raises(ValueError):
        EchoCanceller(backend="speex")
    # direct_calls=False is livekit's documented API: never the built library
    assert EchoCanceller(direct_calls=False).backend == "livekit"
    with pytest.raises(ValueError, match="documented API"):
        EchoCanceller(backend="webrtc", direct_calls=False)


def test_the_tuning_keeps_more_of_the_near_end_in_double_talk_and_still_cancels() -> None:
    """The echo as loud as the talker (20 ms, gain 1.0): WebRTC 2.1's own configuration dips
    the talker by 3.5 dB, the tuned one by 2.7; both still remove over 40 dB of echo alone."""
    tuned = measure_case(0.02, 1.0, canceller=lambda: EchoCanceller(backend="webrtc"))
    stock = measure_case(0.02, 1.0, canceller=lambda: EchoCanceller(backend="webrtc", tuned=False))
    assert stock["level_vs_near_db"] < -3.0  # what the tuning is for
    assert tuned["level_vs_near_db"] >= stock["level_vs_near_db"] + 0.5
    assert min(tuned["erle_alone_db"], stock["erle_alone_db"]) >= 40.0


def test_options_reach_the_built_library() -> None:
    """Without echo cancellation, noise suppression or the high-pass filter, the module passes
    the microphone through unchanged; with the high-pass filter, a DC offset is removed."""
    rng = np.random.default_rng(5)
    mic = (rng.standard_normal(24000) * 0.05).astype(np.float32)
    off = ProcessingOptions(echo_cancellation=False, noise_suppression=False, high_pass=False)
    clean = EchoCanceller(off, backend="webrtc").process(mic, np.zeros_like(mic))
    assert np.max(np.abs(clean - np.rint(mic * 32767) / 32767)) < 1e-6
    dc = np.full(48000, 0.2, np.float32)
    hp = ProcessingOptions(echo_cancellation=False, noise_suppression=False, high_pass=True)
    out = EchoCanceller(hp, backend="webrtc").process(dc, np.zeros_like(dc))
    assert abs(float(np.mean(out[24000:]))) < 0.01


def test_the_callers_floating_point_setting_is_left_as_it_was() -> None:
    """The library flushes denormal floats to zero while WebRTC runs (ppx_apm.cc,
    FlushDenormals: a decaying echo tail took 3 ms a frame instead of 0.8 without it) and puts
    the caller's setting back: numpy on this thread still keeps a denormal after a frame."""
    tiny = np.float32(1e-40)  # below float32's smallest normal, 1.2e-38
    aec = EchoCanceller(backend="webrtc")
    far = (np.random.default_rng(2).standard_normal(1920) * 0.1).astype(np.float32)
    aec.process(far * 0.5, far)
    assert np.float32(tiny * np.float32(1.0)) == tiny
    assert np.float32(tiny * np.float32(1.0)) != 0.0
