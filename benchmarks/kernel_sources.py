"""Dump the exact strings each CUDA kernel hands to `mx.fast.cuda_kernel`, on any machine.

`mx.fast.cuda_kernel` is replaced by a recorder (nothing is compiled) and the CUDA checks are
faked, so the kernels' `run` functions build their sources for the 7B's shapes and the tests'
small ones, at 4 and 8 bits, bfloat16 and float16. Each record: name, source, header, input and
output names, template, launch grid. Used to show that a refactor changes no compiled text
(`python -m benchmarks.kernel_sources out.json`, before and after; then compare, or compile both
with nvcc, see docs/cuda-kernels.md §How they are tested).
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace
from typing import Any
from unittest import mock

import mlx.core as mx

from model.config import config_7b
from tests.lm_helpers import small_config

DTYPES = {"bf16": mx.bfloat16, "fp16": mx.float16}


def _configs() -> dict[str, Any]:
    return {
        "7b": config_7b().lm,
        "temporal-test": small_config(
            d_model=256, num_heads=4, context=40, dep_dim=64, dep_dim_feedforward=192
        ).lm,
        "depformer-test": small_config(
            d_model=256, dep_dim=64, dep_heads=2, dep_dim_feedforward=192, card=256
        ).lm,
    }


class Recorder:
    """Stands in for `mx.fast.cuda_kernel`: records the kernel and its launches."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> Any:
        record = {k: v for k, v in kw.items()}

        def launch(**call: Any) -> list[mx.array]:
            record["template"] = [[k, str(v)] for k, v in call.get("template", None) or []]
            record["input_types"] = [str(a.dtype) for a in call["inputs"]]
            record["input_ndims"] = [a.ndim for a in call["inputs"]]
            record["output_types"] = [str(d) for d in call["output_dtypes"]]
            record["grid"] = list(call["grid"])
            record["threadgroup"] = list(call["threadgroup"])
            self.records.append(dict(record))
            return [
                mx.zeros(s, dtype=d)
                for s, d in zip(call["output_shapes"], call["output_dtypes"], strict=True)
            ]

        return launch


def _weights(bits: int, hidden: int, dtype: mx.Dtype) -> SimpleNamespace:
    """Stand-ins of a kernel's stacked weights, of the real dtypes (one row each)."""
    qa = mx.zeros((1, 1), dtype=mx.uint32)
    qb = mx.zeros((1, hidden * bits // 32), dtype=mx.uint32)
    z = mx.zeros((1,), dtype=dtype)
    return SimpleNamespace(
        bits=bits, group_size=64, eps=1e-8, projections=(qa, z, z, qb, z, z), qb=qb,
        norms=z, heads=z, emb=z,
    )  # fmt: skip


def dump() -> list[dict[str, Any]]:
    """The records of every kernel for every configuration."""
    from model.sampling import SamplingParams

    recorder = Recorder()
    kernels = _kernels()
    with _faked(recorder):
        for cname, cfg in _configs().items():
            for dname, dtype in DTYPES.items():
                lm = SimpleNamespace(
                    config=cfg, dtype=dtype, transformer=SimpleNamespace(config=cfg.temporal)
                )
                for bits in (4, 8):
                    tag = f"{cname}/{dname}/{bits}"
                    t = cfg.temporal
                    states = [[mx.zeros((1,), dtype=dtype)] * 2 for _ in range(t.num_layers)]
                    kernels["temporal"](
                        lm, _weights(bits, t.dim_feedforward, dtype), mx.zeros((1, 1, t.d_model)),
                        mx.array(0), states,
                    )  # fmt: skip
                    recorder.records[-1]["case"] = f"temporal {tag}"
                    d = cfg.depformer
                    for params in (SamplingParams(0.0, 0), SamplingParams(0.8, 250)):
                        kernels["depformer"](
                            lm, _weights(bits, d.dim_feedforward, dtype), mx.zeros((cfg.dep_q * d.d_model,)),
                            mx.array(3), cfg.dep_q, params, None,
                        )  # fmt: skip
                        recorder.records[-1]["case"] = f"depformer {tag} {params}"
        for dname, dtype in {**DTYPES, "fp32": mx.float32}.items():
            for bits in (4, 8):
                for group in (32, 64, 128):
                    k = 512
                    q = SimpleNamespace(
                        weight=mx.zeros((64, k * bits // 32), dtype=mx.uint32),
                        scales=mx.zeros((64, k // group), dtype=dtype),
                        biases=mx.zeros((64, k // group), dtype=dtype),
                        bits=bits, group_size=group, rows=64, inputs=k,
                    )  # fmt: skip
                    for n, r in ((64, 1), (32, 2), (64, 64)):
                        kernels["matvec"](
                            mx.zeros((1, 1, k), dtype=dtype), q, n, mx.zeros((r,), dtype=dtype)
                        )
                        recorder.records[-1]["case"] = f"matvec {dname}/{bits}/g{group}/r{r}"
    return recorder.records


def _kernels() -> dict[str, Any]:
    from pathlib import Path

    import model

    if not (Path(model.__file__).parent / "cuda").is_dir():  # before the move to model/cuda/
        from model import depformer_kernel, matvec, temporal_kernel

        return {"temporal": temporal_kernel.run, "depformer": depformer_kernel.run,
                "matvec": matvec._run}  # fmt: skip
    from model.cuda import DEPFORMER, MATVEC, TEMPORAL

    return {"temporal": TEMPORAL.run, "depformer": DEPFORMER.run, "matvec": MATVEC.run}


class _faked:
    """CUDA faked: the recorder as `mx.fast.cuda_kernel`, 132 SMs, the kernels' caches empty."""

    def __init__(self, recorder: Recorder) -> None:
        self.patches = [
            mock.patch.object(mx.fast, "cuda_kernel", recorder, create=True),
        ]
        fakes = {
            "model.backend.on_cuda": lambda: True,
            "model.backend.sm_count": lambda: 132,
            "model.persistent_kernel.sm_count": lambda: 132,
            "model.cuda.persistent.sm_count": lambda: 132,
            "model.cuda.temporal.shared_memory_optin": lambda: 232448,
            # on a real GPU the kernels would compile ahead (model/cuda/precompiled.py): record
            # what they hand `mx.fast.cuda_kernel` instead
            "model.cuda.precompiled.usable": lambda: False,
        }
        for target, fake in fakes.items():  # the names this tree has (older trees: fewer)
            try:
                self.patches.append(mock.patch(target, fake))
                self.patches[-1].start()
                self.patches[-1].stop()
            except (AttributeError, ModuleNotFoundError):
                self.patches.pop()

    def __enter__(self) -> None:
        for p in self.patches:
            p.start()
        # the kernels' caches start empty and get their contents back after: the recorder's
        # kernels must not serve a real launch later, nor a real kernel go unrecorded
        self.saved = [(k, dict(k.__dict__)) for k in _kernel_objects()]
        for k, _ in self.saved:
            if isinstance(getattr(k, "_kernels", None), dict):
                k._kernels = {}
            if hasattr(k, "_kernel"):
                k._kernel = None

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.patches):
            p.stop()
        for k, state in self.saved:
            k.__dict__.clear()
            k.__dict__.update(state)


def _kernel_objects() -> list[Any]:
    """The kernel objects whose caches hold compiled kernels."""
    return [
        getattr(run, "__self__", None) for run in _kernels().values() if hasattr(run, "__self__")
    ]


def main() -> None:
    records = dump()
    for r in records:
        for k in list(r):
            if isinstance(r[k], (tuple,)):
                r[k] = list(r[k])
    with open(sys.argv[1], "w") as f:
        json.dump(records, f, indent=1, default=str)
    print(f"{len(records)} kernel launches recorded in {sys.argv[1]}")


if __name__ == "__main__":
    main()
