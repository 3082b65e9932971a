"""Our kernels compiled by us (`model/cuda/precompiled.py`, `units.py`, `cubins.py`, `nvrtc.py`, `ahead.py`) and
`personaplex_tui/kernels_ahead.py`, on any machine.

The translation units are written and, where NVIDIA's runtime compiler is installed (the test
extra installs it on Linux x86_64: it needs no GPU), compiled for an H100/H200 (sm_90a); the
disk cache, its lock and the fall-back to MLX's JIT run with a stand-in compiler. Running the
cubins needs an NVIDIA GPU: the kernels' GPU tests (tests/test_temporal_kernel.py,
test_depformer_kernel.py, test_matvec.py) run them through this path there.
"""

from __future__ import annotations

import threading
import time
from unittest import mock

import mlx.core as mx
import pytest

from model.backend import on_cuda
from model.checkpoints.random_weights import random_lm
from model.config import config_7b
from model.cuda import DEPFORMER, MATVEC, TEMPORAL, ahead, cubins, nvrtc, precompiled, units
from model.cuda import kernel as kernel_module
from model.quantized import of_linear
from model.sampling import SamplingParams
from tests.lm_helpers import small_config


def _nvrtc_here() -> bool:
    try:
        nvrtc.library()
        return bool(cubins.include_dirs())
    except nvrtc.NvrtcError:
        return False


NVRTC = pytest.mark.skipif(not _nvrtc_here(), reason="NVIDIA's runtime compiler is not installed")


def compiles_for_an_h200(tmp_path, monkeypatch, kernel, call) -> None:
    """`call()` (a run of `kernel`, switched on) names exactly one unit under `fake_cuda`, and
    NVRTC compiles it to a cubin for an H200 with the kernel's symbol (for other test modules)."""
    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(cubins, "_memory", {})
    monkeypatch.setenv(kernel.env_var, "")
    monkeypatch.setattr(kernel, "_kernels", {})
    monkeypatch.setattr(kernel, "disabled_reason", None)
    with fake_cuda(), precompiled.collecting() as found:
        call()
        arch, cubin = cubins.device_target()
    assert len(found) == 1
    symbol, unit = found[0]
    binary = cubins.compiled(symbol, unit, arch, cubin)
    assert binary[:4] == b"\x7fELF" and symbol.encode() in binary


class fake_cuda:
    """Our kernels switched on as on an H200 (132 SMs, compute capability 9.0), kernels
    compiled ahead: enough to name their units on the CPU (nothing is launched)."""

    def __enter__(self) -> None:
        self.patches = [
            mock.patch.object(kernel_module, "on_cuda", lambda: True),
            mock.patch("model.cuda.persistent.sm_count", lambda: 132),
            mock.patch("model.cuda.temporal.shared_memory_optin", lambda: 232448),
            mock.patch.object(precompiled, "usable", lambda: True),
            mock.patch.object(cubins, "compute_capability", lambda: (9, 0)),
        ]
        for p in self.patches:
            p.start()
        for k in (TEMPORAL, DEPFORMER, MATVEC):
            k._saved = (k.disabled_reason, dict(getattr(k, "_kernels", {})))  # type: ignore[attr-defined]
            k.disabled_reason = None  # whatever an earlier test's check decided
            if hasattr(k, "_kernels"):
                k._kernels = {}  # kernels an earlier test made (a recorder's, say)
        self.matvec, MATVEC._kernel = MATVEC._kernel, None
        for var in ("PPX_TEMPORAL", "PPX_DEPFORMER", "PPX_MATVEC", precompiled.ENV_SWITCH):
            self.patches.append(mock.patch.dict("os.environ", {var: ""}))
            self.patches[-1].start()

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.patches):
            p.stop()
        for k in (TEMPORAL, DEPFORMER, MATVEC):
            k.disabled_reason, kernels = k._saved  # type: ignore[attr-defined]
            if hasattr(k, "_kernels"):
                k._kernels = kernels
        MATVEC._kernel = self.matvec


def test_the_unit_declares_what_mlx_would_and_passes_shapes_as_ints():
    symbol, source = units.translation_unit(
        "k",
        "// header\n",
        "  out[0] = x[w_shape[1]];",
        [("x", mx.bfloat16, 1), ("w", mx.uint32, 2), ("r", mx.float16, 1)],
        [("out", mx.float32)],
        [("T", mx.bfloat16), ("BITS", 4), ("ON", True)],
    )
    assert symbol == "custom_kernel_k_bfloat16_4_t"  # MLX's name for these template arguments
    assert f'extern "C" __global__ void {symbol}(' in source
    assert "const __nv_bfloat16* x" in source and "const uint32_t* w" in source
    assert "float* out" in source
    assert "int w_shape_0,\n    int w_shape_1)" in source  # after the outputs, w's only
    assert "const int w_shape[2] = {w_shape_0, w_shape_1};" in source
    assert "using T = __nv_bfloat16;" in source and "constexpr int BITS = 4;" in source
    assert "constexpr bool ON = true;" in source
    assert source.index("// header") < source.index("extern")
    with pytest.raises(ValueError, match="strides"):
        units.translation_unit(
            "k", "", "x_strides[0];", [("x", mx.float32, 1)], [("o", mx.float32)], []
        )


def test_kernels_name_their_units_ahead_as_the_real_weights_would():
    """`ahead.units` (stand-ins of a configuration) gives the units that the kernels ask for
    when they run on a real model's stacked weights."""
    config = small_config(
        d_model=256, num_heads=4, context=40, dep_dim=64, dep_dim_feedforward=192, bits=4
    )
    lm = random_lm(config, dtype=mx.bfloat16, seed=0)
    with fake_cuda():
        named = ahead.units(config.lm, mx.bfloat16, 4, 64)
        with precompiled.collecting() as real:
            states = [[mx.zeros((1,), dtype=lm.dtype)] * 2 for _ in lm.transformer.layers]
            x = mx.zeros((1, 1, 256), dtype=lm.dtype)
            TEMPORAL.run(lm, TEMPORAL.stack(lm), x, mx.array(3), states)
            dep_in = mx.zeros((config.lm.dep_q * 64,), dtype=lm.dtype)
            params = SamplingParams(0.0, 0)
            DEPFORMER.run(lm, DEPFORMER.stack(lm), dep_in, mx.array(1), 2, params, None)
            q = of_linear(lm.transformer.layers[0].self_attn.out_proj)
            MATVEC.run(x, q, q.rows, mx.zeros((1,), dtype=lm.dtype))
    kinds = [s.split("_")[3] for s, _ in named]
    assert kinds == ["temporal", "depformer", "matvec"]
    assert sorted(named) == sorted(set(real))


def test_units_include_exactly_the_headers_their_cache_key_fingerprints():
    """Every unit's #includes are `cubins.HEADERS` (the cache key's fingerprint covers them
    all), none of the heavy ones NVRTC parses for a second or more (cooperative groups,
    `cuda/std/limits`: no kernel uses them)."""
    import re

    with fake_cuda():
        found = ahead.units(config_7b().lm, mx.bfloat16, 4, 64)
    assert len(found) == 3
    for _, source in found:
        included = re.findall(r"^#include <([^>]+)>", source, re.MULTILINE)
        assert sorted(included) == sorted(cubins.HEADERS)


def test_the_stt_units_are_named_ahead_as_its_real_weights_would():
    """`ahead.stt_units` of an STT's transformer configuration gives the units that the
    temporal kernel and the mat-vec ask for on a real (quantized) STT's weights;
    `compile_stt_ahead` compiles exactly those."""
    from model.config import TransformerConfig
    from model.stt.config import SttConfig
    from model.stt.random_listener import random_stt_lm
    from personaplex_tui import kernels_ahead

    t = TransformerConfig(d_model=128, num_heads=4, num_layers=2, dim_feedforward=256, context=16)
    config = SttConfig(transformer=t, n_q=4, text_card=400)
    stt = random_stt_lm(config, mx.bfloat16, bits=8)
    with fake_cuda():
        named = ahead.stt_units(t, mx.bfloat16, 8, 64)
        with precompiled.collecting() as real:
            states = [[mx.zeros((1,), dtype=stt.dtype)] * 2 for _ in stt.transformer.layers]
            x = mx.zeros((1, 1, 128), dtype=stt.dtype)
            TEMPORAL.run(stt, TEMPORAL.stack(stt), x, mx.array(3), states)
            q = of_linear(stt.transformer.layers[0].self_attn.out_proj)
            MATVEC.run(x, q, q.rows, mx.zeros((1,), dtype=stt.dtype))
        started: list[list[tuple[str, str]]] = []
        with mock.patch.object(kernels_ahead, "AheadCompile", side_effect=started.append):
            kernels_ahead.compile_stt_ahead(t, mx.bfloat16, 8)
            assert kernels_ahead.compile_stt_ahead(t, mx.bfloat16, None) is None  # floats
    assert [s.split("_")[3] for s, _ in named] == ["temporal", "matvec"]
    assert sorted(named) == sorted(set(real))
    assert started == [named]


def test_the_listeners_quantizer_unit_is_named_ahead_with_the_stt_units(monkeypatch):
    """With PersonaPlex's Mimi config and the STT's codebooks, `ahead.stt_units` also names the
    unit the listener's quantizer (our codebooks, then the STT's: `model/stt/listener.py`) asks
    for; a float STT still gets it, and without the Mimi config it is not named."""
    from model.config import MimiConfig, TransformerConfig
    from model.cuda import MIMI_QUANTIZER
    from model.mimi import MimiCodec
    from model.stt.random_listener import random_listener_quantizer
    from personaplex_tui import kernels_ahead

    t = TransformerConfig(d_model=128, num_heads=4, num_layers=2, dim_feedforward=256, context=16)
    codec = MimiCodec.random(MimiConfig(), seed=2)
    listener_q = random_listener_quantizer(codec, 32)  # here: not prepared (no CUDA)
    monkeypatch.setenv(MIMI_QUANTIZER.env_var, "")
    monkeypatch.setattr(MIMI_QUANTIZER, "disabled_reason", None)  # an earlier check's verdict
    with fake_cuda():
        with precompiled.collecting() as real:
            MIMI_QUANTIZER.run(
                listener_q, MIMI_QUANTIZER.stack(listener_q), mx.zeros((512,), dtype=mx.float32)
            )
        named = ahead.stt_units(t, mx.bfloat16, 8, 64, codec.cfg, 32)
        without = ahead.stt_units(t, mx.bfloat16, 8, 64)
        floats = ahead.stt_units(t, mx.bfloat16, None, 64, codec.cfg, 32)
        started: list[list[tuple[str, str]]] = []
        with mock.patch.object(kernels_ahead, "AheadCompile", side_effect=started.append):
            kernels_ahead.compile_stt_ahead(t, mx.bfloat16, None, 64, codec.cfg, 32)
    assert len(real) == 1 and real[0] in named and real[0] not in without
    assert len(named) == len(without) + 1
    assert floats == [real[0]] and started == [floats]


@pytest.mark.skipif(on_cuda(), reason="on CUDA the units are named")
def test_units_are_named_only_where_kernels_are_compiled_ahead():
    assert ahead.units(config_7b().lm, mx.bfloat16, 4, 64) == []  # not CUDA here


@NVRTC
@pytest.mark.parametrize("bits", [4, 8])
def test_nvrtc_compiles_every_unit_of_the_7b_for_an_h200(tmp_path, monkeypatch, bits):
    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(cubins, "_memory", {})  # not what this process compiled before
    with fake_cuda():
        found = ahead.units(config_7b().lm, mx.bfloat16, bits, 64)
        arch, cubin = cubins.device_target()
    assert (arch, cubin) == ("sm_90a", True)
    assert len(found) == 3
    for symbol, source in found:
        binary = cubins.compiled(symbol, source, arch, cubin)
        assert binary[:4] == b"\x7fELF"  # a cubin, machine code for the device
        assert symbol.encode() in binary  # the unmangled name MLX looks up
        assert list(tmp_path.glob(f"{symbol}-*.cubin"))
        stand_in, empty = units.stand_in_unit(symbol, 3, 2, 1)
        assert cubins.compiled(stand_in, empty, arch, cubin)[:4] == b"\x7fELF"


@NVRTC
@pytest.mark.parametrize(
    ("bits", "plan", "widths"),
    [
        (4, (2, 4, 1), (4096, 32, 11264)),  # the 7B's temporal transformer
        (8, (2, 4, 1), (4096, 32, 11264)),
        (4, (5, 2, 0), (4096, 32, 11264)),
        (8, (2, 4, 1), (2048, 16, 5632)),  # the STT's: a partial chunk column at 4 bits
        (4, (3, 3, 1), (2048, 16, 5632)),
    ],
)
def test_nvrtc_compiles_the_temporal_kernels_weight_stream(
    tmp_path, monkeypatch, bits, plan, widths
):
    """With stages asked for (at 8 bits too, where the shipped plan has none), the temporal unit
    asks for the dynamic shared memory and its PTX copies with cp.async; NVRTC builds it for an
    H200."""
    from dataclasses import replace

    from model.cuda import temporal

    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(cubins, "_memory", {})
    for name, value in zip(("STREAM_STAGES", "STREAM_CHUNKS", "STREAM_AHEAD"), plan, strict=True):
        monkeypatch.setattr(temporal, name, value)
    monkeypatch.setattr(temporal, "STREAM_BITS", (4, 8))
    monkeypatch.delenv(temporal.STREAM_ENV_VAR, raising=False)
    d, layers, hidden = widths
    lm_config = config_7b().lm
    t = replace(lm_config.temporal, d_model=d, num_layers=layers, dim_feedforward=hidden)
    with fake_cuda():
        found = ahead.units(replace(lm_config, temporal=t), mx.bfloat16, bits, 64)
        arch, cubin = cubins.device_target()
        kernel = next(iter(TEMPORAL._kernels.values()))
        planned = temporal.stream_plan(d, hidden, d // t.num_heads, mx.bfloat16, bits, 64)
    symbol, source = next((s, u) for s, u in found if "temporal" in s)
    assert planned[0] >= 2 and f"constexpr int NS = {planned[0]};" in source
    assert kernel.shared_memory == planned[3] > 48 * 1024
    ptx = nvrtc.compile_source(source, f"{symbol}.cu", cubins.options("compute_90a"), False)
    assert b"cp.async.cg.shared.global" in ptx and b"cp.async.wait_group" in ptx
    assert cubins.compiled(symbol, source, arch, cubin)[:4] == b"\x7fELF"


@NVRTC
def test_nvrtc_reports_what_it_rejects():
    with pytest.raises(nvrtc.NvrtcError, match="could not compile"):
        nvrtc.compile_source(
            'extern "C" __global__ void k() { undeclared(); }', "k.cu", ["-arch=sm_90a"], True
        )


@pytest.fixture
def slow_compiler(monkeypatch):
    """NVRTC replaced by a slow stand-in that counts its calls."""
    calls: list[str] = []

    def compile_source(source: str, name: str, options: list[str], cubin: bool) -> bytes:
        calls.append(name)
        time.sleep(0.3)
        return b"\x7fELF" + source.encode()

    monkeypatch.setattr(nvrtc, "compile_source", compile_source)
    monkeypatch.setattr(nvrtc, "version", lambda: (13, 0))
    monkeypatch.setattr(cubins, "_memory", {})
    monkeypatch.setattr(cubins, "include_dirs", lambda: [])
    cubins.headers_fingerprint.cache_clear()
    yield calls
    cubins.headers_fingerprint.cache_clear()


def test_a_unit_compiles_once_per_machine_and_later_processes_read_it(
    tmp_path, monkeypatch, slow_compiler
):
    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path / "cache"))
    got: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: got.append(cubins.compiled("k", "src", "sm_90a", True)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slow_compiler == ["k.cu"]  # the others waited on the lock and read the file
    assert got == [b"\x7fELFsrc"] * 3
    (path,) = (tmp_path / "cache").glob("k-*.cubin")
    assert path.read_bytes() == b"\x7fELFsrc"
    monkeypatch.setattr(cubins, "_memory", {})  # a new process
    assert cubins.compiled("k", "src", "sm_90a", True) == b"\x7fELFsrc"
    assert slow_compiler == ["k.cu"]
    cubins.compiled("k", "src", "sm_80", True)  # another device: another unit
    cubins.compiled("k", "src 2", "sm_90a", True)  # another source
    assert len(slow_compiler) == 3


def test_a_unit_cached_against_other_headers_is_compiled_again(
    tmp_path, monkeypatch, slow_compiler
):
    """Same NVRTC, same source, but the CUDA headers beside it changed (a new toolkit or CCCL):
    the cached unit is not used."""
    headers = tmp_path / "include"
    (headers / "cuda" / "std").mkdir(parents=True)
    for name in cubins.HEADERS:
        (headers / name).write_text("// version 1\n")
    monkeypatch.setattr(cubins, "include_dirs", lambda: [str(headers)])
    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path / "cache"))
    cubins.compiled("k", "src", "sm_90a", True)
    monkeypatch.setattr(cubins, "_memory", {})  # a new process, the same headers: read from disk
    cubins.compiled("k", "src", "sm_90a", True)
    assert slow_compiler == ["k.cu"]
    (headers / "cuda_bf16.h").write_text("// version 2, longer\n")  # the toolkit was updated
    monkeypatch.setattr(cubins, "_memory", {})  # the next process
    cubins.headers_fingerprint.cache_clear()
    cubins.compiled("k", "src", "sm_90a", True)
    assert slow_compiler == ["k.cu", "k.cu"]
    assert len(list((tmp_path / "cache").glob("k-*.cubin"))) == 2


def test_the_app_compiles_the_units_on_other_threads(tmp_path, monkeypatch, slow_compiler):
    from personaplex_tui.kernels_ahead import AheadCompile

    monkeypatch.setenv(cubins.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(cubins, "device_target", lambda: ("sm_90a", True))
    t0 = time.perf_counter()
    job = AheadCompile([(f"k{i}", f"src {i}") for i in range(4)])
    for thread in job._threads:
        thread.join()
    assert time.perf_counter() - t0 < 1.0  # side by side: 4 x 0.3 s one after the other
    report = job.report()
    assert report["units"] == 4 and not report["errors"]
    assert all(s is not None for s in report["seconds"].values())
    assert len(list(tmp_path.glob("k*-*.cubin"))) == 4


def test_without_nvrtc_a_kernel_falls_back_to_mlx_jit(monkeypatch):
    made: list[dict] = []

    def cuda_kernel(**kw):
        made.append(kw)
        return lambda **call: ["mlx"]

    def broken(*a, **k):
        raise nvrtc.NvrtcError("NVIDIA's runtime compiler (libnvrtc) could not be loaded")

    monkeypatch.setattr(mx.fast, "cuda_kernel", cuda_kernel, raising=False)
    monkeypatch.setattr(cubins, "compiled", broken)
    monkeypatch.setattr(cubins, "device_target", lambda: ("sm_90a", True))
    monkeypatch.setattr(precompiled, "unavailable_reason", None)
    k = precompiled.PrecompiledKernel("k", ["x"], ["out"], "out[0] = x[0];")
    call = dict(
        inputs=[mx.zeros((4,))], output_shapes=[(4,)], output_dtypes=[mx.float32],
        grid=(32, 1, 1), threadgroup=(32, 1, 1),
    )  # fmt: skip
    assert k(**call) == ["mlx"] and k(**call) == ["mlx"]
    assert len(made) == 1 and made[0]["name"] == "k"
    assert "libnvrtc" in precompiled.unavailable_reason
    if on_cuda():
        return
    # and on a machine without CUDA kernels are MLX's from the start
    assert (
        precompiled.make_kernel(name="j", input_names=["x"], output_names=["o"], source="")
        is not None
    )
    assert made[-1]["name"] == "j"
