"""Ctrl+C during a command-line download of the model ends it: huggingface_hub fetches the files
on a pool of threads that read each file's body to its end, and a raised `Stopped` waited for
them (minutes on a real model; a second Ctrl+C was ignored). `POLICY.abrupt` ends the process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fake_hub import fake_hub

ROOT = Path(__file__).resolve().parents[1]
QUESTION = ROOT / "tests" / "data" / "audio" / "weather.wav"


def test_ctrl_c_ends_a_download_at_once(small_checkpoint, tmp_path):
    with fake_hub("someone/small", small_checkpoint, bytes_per_s=3e5) as url:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": url,
               "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip
        args = ["respond", "--model", "someone/small", "--input", str(QUESTION),
                "--output", str(tmp_path / "o.wav"), "--no-user-transcript"]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "personaplex_tui", *args],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        blobs = tmp_path / "hub" / "models--someone--small" / "blobs"
        deadline = time.monotonic() + 60
        while not (blobs.exists() and any(blobs.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.05)  # the download has begun (its first parts are on disk)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().endswith("interrupted.")
    assert took < 5.0, f"{took:.1f} s after Ctrl+C (the download at 300 kB/s takes ~20 s)"
