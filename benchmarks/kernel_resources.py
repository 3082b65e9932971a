"""Registers, spills and shared memory of the temporal kernel's unit, per weight-stream plan.

`python -m benchmarks.kernel_resources [--bits 4 8] [--plans 0,0,0 2,4,1 ...]` names the 7B's
temporal unit as an H200 would build it (132 SMs, 227 KiB of shared memory per block; no GPU
needed), has NVRTC write its PTX for sm_90a and runs `ptxas -v` on it: `ptxas` from the PATH or
from the `nvidia-cuda-nvcc` wheel (`pip install nvidia-cuda-nvcc`). A plan is stages, chunks,
ahead (`model.cuda.temporal.STREAM_*`; 0,0,0: no stream). docs/cuda-kernels.md §The weight stream.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from importlib import util
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402

from model.config import config_7b  # noqa: E402
from model.cuda import TEMPORAL, ahead, cubins, nvrtc, precompiled, temporal  # noqa: E402
from model.cuda import kernel as kernel_module  # noqa: E402


def ptxas() -> str | None:
    """The nvidia-cuda-nvcc wheel's ptxas (of NVRTC's release, as the wheels come together), else
    the one on the PATH (it may be too old for NVRTC's PTX); None: neither."""
    spec = util.find_spec("nvidia")
    for root in spec.submodule_search_locations if spec else []:
        for path in sorted(Path(root).glob("*/bin/ptxas")):
            return str(path)
    return shutil.which("ptxas")


def unit(bits: int, plan: tuple[int, int, int]) -> tuple[str, str]:
    """(symbol, source) of the 7B's temporal unit at `bits` with the weight stream's `plan`."""
    patches = [
        mock.patch.object(kernel_module, "on_cuda", lambda: True),
        mock.patch("model.cuda.persistent.sm_count", lambda: 132),
        mock.patch.object(temporal, "shared_memory_optin", lambda: 232448),
        mock.patch.object(precompiled, "usable", lambda: True),
        mock.patch.object(temporal, "STREAM_STAGES", plan[0]),
        mock.patch.object(temporal, "STREAM_CHUNKS", plan[1]),
        mock.patch.object(temporal, "STREAM_AHEAD", plan[2]),
        mock.patch.object(temporal, "STREAM_BITS", (4, 8)),
        mock.patch.object(TEMPORAL, "_kernels", {}),
        mock.patch.object(TEMPORAL, "disabled_reason", None),
        mock.patch.dict(
            "os.environ",
            {TEMPORAL.env_var: "", precompiled.ENV_SWITCH: "", temporal.STREAM_ENV_VAR: ""},
        ),
    ]
    for p in patches:
        p.start()
    try:
        with precompiled.collecting() as found:
            ahead._temporal(SimpleLM(), mx.bfloat16, bits, 64)
    finally:
        for p in reversed(patches):
            p.stop()
    return found[0]


class SimpleLM:
    """What `ahead._temporal` reads of a model: the 7B's temporal configuration and dtype."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.config = config_7b().lm
        self.dtype = mx.bfloat16
        self.transformer = SimpleNamespace(config=self.config.temporal)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--plans", nargs="+", default=["0,0,0", "2,4,1", "3,2,1", "5,2,1"])
    args = ap.parse_args(argv)
    tool = ptxas()
    if tool is None:
        print("No ptxas: pip install nvidia-cuda-nvcc, or put CUDA's bin folder on the PATH.")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            for text in args.plans:
                plan = tuple(int(v) for v in text.split(","))
                symbol, source = unit(bits, plan)  # type: ignore[arg-type]
                ptx = nvrtc.compile_source(
                    source, f"{symbol}.cu", cubins.options("compute_90a"), False
                )
                path = Path(tmp) / "unit.ptx"
                path.write_bytes(ptx.rstrip(b"\0"))
                out = subprocess.run(
                    [tool, "-v", "-arch=sm_90a", str(path), "-o", str(Path(tmp) / "unit.cubin")],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                lines = [ln.split(":", 1)[-1].strip() for ln in out.stderr.splitlines()]
                useful = [ln for ln in lines if "registers" in ln or "spill" in ln]
                print(f"{bits}-bit, plan {text}: " + " | ".join(useful or lines[-2:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
