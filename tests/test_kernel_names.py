"""Fused kernels that place values into slots bake no slot index: on CUDA each distinct fused
kernel is one NVRTC compile (~5 s on an H200) on a fresh machine, so alike kernels must share a
name (checked on the CPU, whose JIT names its kernels as CUDA's does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
from dataclasses import replace
import mlx.core as mx
from model.config import MimiConfig
from model.lm.layers import stack_scalars
from model.mimi.quantizer import SplitResidualQuantizer
what, n = sys.argv[1], int(sys.argv[2])
if what == "encode":
    cfg = replace(MimiConfig(), dimension=16, codebook_dim=8, codebook_size=16, num_codebooks=n)
    quantizer = SplitResidualQuantizer(cfg)
    quantizer.codebooks = mx.random.normal(quantizer.codebooks.shape, key=mx.random.key(0))
    quantizer.prepare()
    x = mx.random.normal((1, 3, cfg.dimension), key=mx.random.key(1))
    mx.eval(mx.compile(quantizer.encode)(x))
else:
    values = [mx.array(3 * i, dtype=mx.uint32) for i in range(n)]
    mx.eval(mx.compile(lambda *v: stack_scalars(list(v)))(*values))
"""


def _fused_kernels(tmp: Path, what: str, n: int) -> set[str]:
    """Names of the fused kernels MLX's CPU backend compiles for `what` (its JIT libraries,
    which it keeps under $TMPDIR/mlx), less the contiguous/strided variant suffix."""
    folder = tmp / f"{what}-{n}"
    folder.mkdir()
    env = {**os.environ, "TMPDIR": str(folder), "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run([sys.executable, "-c", SCRIPT, what, str(n)], env=env, check=True, timeout=300)
    names = set()
    for lib in folder.rglob("lib*.so"):
        names.add(re.split("_contiguous|_strided_", lib.name[3:-3])[0])
    return names


@pytest.mark.parametrize(
    ("what", "n", "most"), [("encode", 32, 2), ("encode", 8, 1), ("stack", 16, 2)]
)
def test_no_two_fused_kernels_differ_only_by_their_hash(
    tmp_path: Path, what: str, n: int, most: int
) -> None:
    """A name is the kernel's ops and dtypes, then a hash of the rest (constants included): two
    names alike up to the hash are one kernel compiled twice for a baked constant. MLX splits
    a chain longer than its fusion depth (11 ops) into several kernels: the full ones alike,
    one more for the rest (baked indices made 8 for the encode, 3 for the stack)."""
    names = _fused_kernels(tmp_path, what, n)
    assert names  # the graph has fused kernels to check
    prefixes = [re.sub("_[0-9a-f]+$", "", name) for name in names]
    twice = {p for p in prefixes if prefixes.count(p) > 1}
    assert not twice, sorted(names)
    assert len(names) <= most, sorted(names)
