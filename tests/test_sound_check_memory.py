"""`ppx-tui sound-check --far --mic --output` on 3-minute recordings: its peak resident memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.echo_paths import echo, far_talk, impulse_response, noise

ROOT = Path(__file__).resolve().parents[1]

# A fresh interpreter: the sound check on a 1-second pair (the floor: numpy, soundfile, the CLI,
# the canceller's library), then on the 3-minute pair; its peak resident set size after each.
CHILD = """
import contextlib, io, json, resource, sys
from personaplex_tui.cli import main

def peak_mb():
    try:  # Linux: this process's own peak (ru_maxrss can be its parent's, kept across exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1e3
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1e6 if sys.platform == "darwin" else 1e3)

def check(far, mic):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["sound-check", "--far", far, "--mic", mic, "--output", sys.argv[5], "--json"]) == 0
    return json.loads(out.getvalue()), peak_mb()

_, floor = check(sys.argv[1], sys.argv[2])
report, peak = check(sys.argv[3], sys.argv[4])
print(json.dumps({"floor_mb": floor, "peak_mb": peak, "report": report}))
"""


@pytest.mark.slow
def test_three_minutes_cost_little_memory_over_the_import_floor(tmp_path):
    """The delay search over the first 2 minutes took whole-length FFTs of both (complex128,
    4 arrays of 8M points): 360 MB resident at the peak, 290 MB over the floor of ~70 MB. It
    keeps a few short rows of the spectrum now: ~45 MB over the floor, half of it the two
    2-minute windows of float32 samples."""
    rng = np.random.default_rng(11)
    far = far_talk(10.0)
    mic = echo(far, 0.15, 0.5, impulse_response(rng)) + noise(len(far), rng)
    paths = [tmp_path / name for name in ("far1.wav", "mic1.wav", "far.wav", "mic.wav")]
    pcms = (far[:24000], mic[:24000], np.tile(far, 18), np.tile(mic, 18))  # 1 s, 3 minutes
    for path, pcm in zip(paths, pcms, strict=True):
        sf.write(path, pcm, 24000, "PCM_16")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, paths), str(tmp_path / "clean.wav")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["report"]["seconds"] == pytest.approx(180.0, abs=0.02)
    assert abs(got["report"]["delay_ms"] - 150) <= 3 and got["report"]["erle_db"] >= 25
    growth = got["peak_mb"] - got["floor_mb"]
    assert growth < 120, f"{growth:.0f} MB over the floor of {got['floor_mb']:.0f} MB"
