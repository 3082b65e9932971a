"""The GPU probes behind the kernels' next forms: `benchmarks/weight_layout.py` (its packed items
hold what the kernel's split stream copies, and every variant of its kernel compiles) and
`benchmarks/cluster_probe.py` (its kernel compiles with and without a cluster size)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from benchmarks import weight_layout as wl
from model.cuda import cubins, nvrtc, units
from tests.test_precompiled import NVRTC

PRELUDE = units.PRELUDE + "using cuda::std::uint16_t;\n"  # as the project's units start


def test_packed_items_hold_what_the_split_stream_copies(monkeypatch):
    monkeypatch.setattr(wl, "LAYERS", 2)
    monkeypatch.setattr(wl, "HID", 6)
    rows = wl.LAYERS * 2 * wl.HID
    w, s, b = wl.random_words(rows)
    items = np.array(wl.packed_items(w, s, b)).reshape(-1, wl.ITEM_WORDS, 4)
    codes = np.array(w).reshape(rows, 128, 4)  # 16-byte chunks of each row
    scales, biases = np.array(s), np.array(b)
    assert items.shape[0] == wl.LAYERS * wl.HID * 2
    for pr in range(wl.LAYERS * wl.HID):  # as the kernel's MODE 0 addresses them
        layer, r = divmod(pr, wl.HID)
        row0 = layer * 2 * wl.HID + r
        row1 = row0 + wl.HID
        for ii in range(2):
            item = items[2 * pr + ii]
            k0 = 2 * ii
            for u in range(2):
                chunks = 32 * (k0 + u) + np.arange(32)
                np.testing.assert_array_equal(item[u * 32 : u * 32 + 32], codes[row0, chunks])
                np.testing.assert_array_equal(
                    item[(2 + u) * 32 : (3 + u) * 32], codes[row1, chunks]
                )
            for j in range(16):
                u, a, half = j // 8, (j // 2) % 4, j % 2
                g = (k0 + u) * 16 + half * 8
                src = (biases if a & 1 else scales)[row1 if a & 2 else row0, g : g + 8]
                np.testing.assert_array_equal(item[128 + j].view(np.uint16), src)


def test_random_words_have_the_shapes_of_the_7b_linear_in():
    w, s, b = wl.random_words(3)
    assert (w.shape, w.dtype) == ((3, wl.ROW_BYTES // 4), mx.uint32)
    assert (s.shape, s.dtype) == ((3, wl.GROUPS), mx.uint16)
    assert (b.shape, b.dtype) == ((3, wl.GROUPS), mx.uint16)


@NVRTC
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_every_variant_of_the_kernel_compiles(mode):
    for ns, lpp in ((2, 32), (6, 1)):
        source = (
            PRELUDE
            + wl.HEADER
            + 'extern "C" __global__ void k(const uint32_t* w, const uint16_t* s,'
            " const uint16_t* b, const uint32_t* wp, uint32_t* out, uint32_t* sync) {\n"
            f"  constexpr int MODE = {mode};\n  constexpr int NS = {ns};\n"
            f"  constexpr int LPP = {lpp};\n" + wl.BODY + "\n}\n"
        )
        ptx = nvrtc.compile_source(source, "k.cu", cubins.options("compute_90a"), False)
        text = ptx.decode(errors="replace")
        assert ("cp.async.cg.shared.global" in text) == (mode != 2)
        assert "ld.global.cs" in text or mode != 2
        # the project's grid barrier (src/common.cuh) between phases, none with one phase
        assert ("ld.acquire.gpu" in text) == (lpp < wl.LAYERS)


@NVRTC
@pytest.mark.parametrize("cl", [1, 8])
def test_the_cluster_probe_compiles_with_its_cluster_size(cl):
    """`benchmarks/cluster_probe.py`'s kernel, declared as MLX declares it with the probe's
    macro in front, asks PTX for its cluster size (none for 1) and uses the cluster's barrier
    and distributed shared memory only then."""
    from benchmarks import cluster_probe

    full = f"custom_kernel_cluster_probe_{cl}"
    dims = f"__cluster_dims__({cl}, 1, 1) " if cl > 1 else ""
    source = (
        PRELUDE
        + f"#define CL {cl}\n#define ITERS {cluster_probe.ITERS}\n"
        + cluster_probe.HEADER
        + f"\n#define {full} {dims}__launch_bounds__(512, 1) {full}\n"
        + f'extern "C" __global__ void {full}(const uint32_t* dummy, uint32_t* out,'
        " uint32_t* sync) {\n" + cluster_probe.BODY + "\n}\n"
    )
    ptx = nvrtc.compile_source(source, "k.cu", cubins.options("compute_90a"), False).decode()
    assert (f".reqnctapercluster {cl}, 1, 1" in ptx) == (cl > 1)
    assert ("barrier.cluster.arrive" in ptx) == (cl > 1)
    assert ("ld.shared::cluster" in ptx) == (cl > 1)
    assert "ld.acquire.gpu" in ptx  # the project's grid barrier (src/common.cuh)
