"""An eager step (no `mx.compile`) builds no fused kernel: on CUDA each would be an NVRTC compile
(seconds on a fresh machine) before the first eager use, which the load-time checks and eager
steps then wait for (checked on the CPU, whose JIT builds a library per fused kernel)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import numpy as np
import mlx.core as mx
from model.conversation.persona import random_model
from model.config import mimi_tiny, tiny
model = random_model(tiny(mimi=mimi_tiny()), bits=None, seed=0)
settings = model.default_settings(voice=None, seed=0)
session = model.session(settings, system_tokens=[5, 6, 7], compile=False)
rng = np.random.default_rng(0)
for _ in range(3):
    session.step((0.1 * rng.standard_normal(session.frame_size)).astype(np.float32))
print("stepped")
"""


def test_eager_steps_build_no_fused_kernel(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "stepped" in run.stdout
    fused = sorted(lib.name for lib in tmp_path.rglob("lib*.so"))
    assert fused == [], fused
