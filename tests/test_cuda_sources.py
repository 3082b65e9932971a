"""The CUDA kernels' sources as MLX would compile them, checked on any machine.

`benchmarks.kernel_sources` records what each kernel hands `mx.fast.cuda_kernel` (nothing is
compiled by MLX). Each kernel's header carries the shared `common.cuh` once, so the quantized
dot product, the grid barrier and RMSNorm's scale are defined once per kernel; no placeholder is
left for string surgery; and where nvcc is installed, each kernel compiles to PTX as MLX's CUDA
backend would build it (`tests/nvcc_ptx.py`).
"""

from __future__ import annotations

import re

import pytest

from benchmarks.kernel_sources import dump
from model.cuda import source
from tests.nvcc_ptx import nvcc, ptx


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return dump()


def _kind(record: dict) -> str:
    return record["case"].split()[0]


def test_every_kernel_and_shape_is_recorded(records):
    kinds = {_kind(r) for r in records}
    assert kinds == {"temporal", "depformer", "matvec"}
    assert any("7b/bf16/4" in r["case"] for r in records if _kind(r) == "temporal")


def test_the_shared_header_comes_once_first_in_every_kernel(records):
    common = source.read(source.COMMON)
    for r in records:
        text = r["header"] + r["source"]
        assert r["header"].startswith(common), r["case"]
        assert text.count(common) == 1, r["case"]
        for helper in ("ppx_word_dot(", "ppx_chunk_dot(", "ppx_grid_sync(", "ppx_rms_scale("):
            assert len(re.findall(r"\w+\s+" + re.escape(helper), text)) == 1, (r["case"], helper)


def test_the_quantized_dot_product_is_the_shared_one(records):
    for r in records:
        body = r["header"][len(source.read(source.COMMON)) :] + r["source"]
        assert re.search(r"ppx_chunk_dot<BITS(, \w+)?>", body), r["case"]
        assert "ppx_word_dot<BITS" not in body, r["case"]  # no copy of the chunk's dot product


def test_persistent_kernels_are_bounded_and_fully_expanded(records):
    for r in records:
        if _kind(r) == "matvec":
            assert r["template"] and "__launch_bounds__" not in r["header"]
            continue
        assert not r["template"]
        name = f"custom_kernel_{r['name']}"
        assert f"#define {name} __launch_bounds__(512, 1) {name}" in r["header"]
        assert r["source"].rstrip().endswith(f"#undef {name}")
        assert "constexpr int NT = 512;" in r["source"]
    temporal = [r for r in records if _kind(r) == "temporal"]
    for r in temporal:
        layers = int(re.search(r"constexpr int NL = (\d+);", r["source"]).group(1))
        assert "PPX_KV_POINTERS" in r["source"]
        pointers = re.search(r"#define PPX_KV_POINTERS (.*)", r["header"]).group(1)
        assert pointers.count("const_cast<T*>(k") == layers == pointers.count("const_cast<T*>(v")


@pytest.mark.skipif(nvcc() is None, reason="nvcc is not installed")
@pytest.mark.parametrize(
    "case",
    [
        "matvec bf16/4/g64/r2",
        "temporal temporal-test/bf16/8",
        "depformer depformer-test/fp16/4 SamplingParams(temperature=0.8, top_k=250)",
    ],
)
def test_each_kernel_compiles_to_ptx(records, case):
    (record,) = [r for r in records if r["case"] == case]
    text = ptx(record)
    assert ".visible .entry KERNEL" in text
    if _kind(record) != "matvec":
        assert ".maxntid 512, 1, 1" in text  # the launch bounds reached the compiler
