"""The JIT helpers: cache folders synced without half-written modules, the graphs shared out,
helper processes that run and end (on the CPU they compile nothing, but do all the rest)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from model.mimi.warm_parts import ENCODE_PARTS
from personaplex_tui import jit_helper, jit_workers
from personaplex_tui.jit_workers import (
    LOGS_ENV,
    CacheSync,
    JitWorkers,
    graph_workers_wanted,
    helper_tasks,
)


def _write_module(folder: Path, rel: str, payload: bytes, age_s: float = 10.0) -> None:
    stem = folder / rel
    stem.parent.mkdir(parents=True, exist_ok=True)
    old = time.time() - age_s
    for suffix, data in ((".ptx", payload), (".txt", b"k\tmangled\n"), (".cu", b"src")):
        path = stem.with_name(stem.name + suffix)
        path.write_bytes(data)
        os.utime(path, (old, old))


def test_sync_publishes_settled_modules_and_pulls_the_others(tmp_path: Path) -> None:
    own, shared = tmp_path / "own", tmp_path / "shared"
    own.mkdir()
    shared.mkdir()
    _write_module(own, "mine", b"A" * 100)
    _write_module(own, "long/nested_part", b"B" * 50)  # MLX splits long names into folders
    _write_module(own, "fresh", b"C", age_s=0.0)  # still being written by MLX
    _write_module(shared, "theirs", b"D" * 10)
    (own / "half.ptx").write_bytes(b"E")  # no .txt/.cu yet
    sync = CacheSync(own, shared)
    sync.once()
    assert (shared / "mine.ptx").read_bytes() == b"A" * 100
    assert (shared / "mine.txt").read_bytes() == b"k\tmangled\n"
    assert (shared / "long" / "nested_part.ptx").read_bytes() == b"B" * 50
    assert not (shared / "fresh.ptx").exists()
    assert not (shared / "half.ptx").exists()
    assert (own / "theirs.ptx").read_bytes() == b"D" * 10
    assert not list(shared.rglob(".part-*"))  # no temporary files left
    sync.settle_s = 0.0
    sync.once()
    assert (shared / "fresh.ptx").read_bytes() == b"C"


def test_the_ptx_is_renamed_into_place_last(tmp_path: Path, monkeypatch) -> None:
    own, shared = tmp_path / "own", tmp_path / "shared"
    own.mkdir()
    shared.mkdir()
    _write_module(own, "m", b"P")
    order: list[str] = []
    real = os.replace

    def spy(src, dst):
        order.append(Path(dst).suffix)
        return real(src, dst)

    monkeypatch.setattr(jit_workers.os, "replace", spy)
    CacheSync(own, shared).once()
    assert order == [".txt", ".cu", ".ptx"]


def test_worker_counts() -> None:
    assert graph_workers_wanted(cpus=16, device_gb=141) == 4
    assert graph_workers_wanted(cpus=16, device_gb=24) == 0  # a 7B each would not fit
    assert graph_workers_wanted(cpus=16, device_gb=80) == 3
    assert graph_workers_wanted(cpus=2, device_gb=141) == 0


def test_worker_count_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(jit_workers.WORKERS_ENV, "2")
    assert graph_workers_wanted(cpus=2, device_gb=0) == 2
    monkeypatch.setenv(jit_workers.WORKERS_ENV, "off")
    assert graph_workers_wanted(cpus=16, device_gb=141) == 0
    assert jit_workers.start_jit_workers(None, kernels_to_compile=lambda: True) is None


def test_no_helpers_while_the_cache_is_warm(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(jit_workers.ENV_VAR, str(tmp_path))
    assert jit_workers.start_jit_workers(None, kernels_to_compile=lambda: False) is None


def test_helper_tasks_share_the_graphs_out() -> None:
    tasks = helper_tasks({"small": True}, 4)
    graphs = [t for t in tasks if t[0] == "graphs"]
    assert [t[1:3] for t in graphs] == [["0", "2"], ["1", "2"]]  # the LM's graphs
    parts = [f"encode:{p}" for p in ENCODE_PARTS]
    assert [t[1] for t in tasks if t[0] == "mimi"] == [*parts, "decode"]
    app = helper_tasks({"checkpoint": "/m"}, 4)  # the app: the same helpers
    assert [t[1] for t in app if t[0] == "mimi"] == [*parts, "decode"]
    assert [t[1:3] for t in app if t[0] == "graphs"] == [["0", "2"], ["1", "2"]]
    few = helper_tasks({"small": True}, 2)  # little room: the encode graph whole
    assert [t[1] for t in few if t[0] == "mimi"] == ["encode", "decode"]
    assert [t[1:3] for t in few if t[0] == "graphs"] == [["0", "1"]]
    assert not [t for t in tasks + app if t[0] == "stt"]  # no transcript, no STT helpers
    for options in (
        {"small": True, "user_transcript": True},
        {"checkpoint": "/m", "user_transcript": True},
    ):
        stt = [t[1] for t in helper_tasks(options, 4) if t[0] == "stt"]
        assert stt == ["tail", "stream"]
    primers = [t for t in tasks if t[0] == "prime"]
    assert len(primers) == len(jit_workers.GATHERS) + len(jit_workers.SCATTERS)
    assert helper_tasks(None, 3) == primers
    assert helper_tasks({"small": True}, 0) == primers


def test_mimi_helpers_run_the_sessions_first_mimi_graphs() -> None:
    """The Mimi helpers compile the graphs the session warms first (encode and decode while
    Mimi's caches fill): same functions through the same `StepGraphs`, same arguments' shapes."""
    from model.config import mimi_tiny, tiny
    from model.conversation.persona import random_model

    model = random_model(tiny(mimi=mimi_tiny()), seed=0)
    session = model.session(model.default_settings(voice=None), voice=None, system_tokens=[5])
    first = [name for name, _ in session._warm_jobs()][:2]
    assert first == ["encode (Mimi filling)", "decode (Mimi filling)"]
    for graph in ("encode", "decode"):
        jit_helper._warm_mimi({"small": True}, graph)  # runs on the CPU too


def test_mimi_helper_reads_a_checkpoints_configuration(tmp_path: Path) -> None:
    from tests.checkpoints import write_small_checkpoint

    folder = write_small_checkpoint(tmp_path / "ckpt", voices=("NATF2",))
    jit_helper._warm_mimi({"checkpoint": str(folder)}, "encode:feed")
    jit_helper._warm_mimi({"checkpoint": str(folder)}, "decode")


def test_stt_helpers_run(tmp_path: Path) -> None:
    """The STT helpers run on the CPU too: the benchmark's random STT, and the app's with a
    PersonaPlex checkpoint and an STT folder (its config.json read as the loader reads it)."""
    for what in ("tail", "stream"):
        jit_helper._warm_stt({"small": True, "user_transcript": True}, what)
    from tests.checkpoints import write_small_checkpoint
    from tests.stt_reference import write_tiny_stt_repo

    folder = write_small_checkpoint(tmp_path / "ckpt", voices=("NATF2",))
    stt = write_tiny_stt_repo(tmp_path / "stt")
    app = {"checkpoint": str(folder), "user_transcript": True, "stt_model": str(stt)}
    for what in ("tail", "stream"):
        jit_helper._warm_stt(app, what)


def test_stt_stream_helper_warms_the_listeners_windows() -> None:
    """The "stream" helper's STT (the benchmark's shape, small) reaches the same attention
    windows as a transcribing session's listener, so it compiles the graphs that session uses."""
    from model.config import mimi_tiny, tiny
    from model.conversation.persona import random_model
    from model.stt.random_listener import random_listener, random_stt_lm, tiny_stt_config
    from model.stt.stream import SttStream

    persona = random_model(tiny(mimi=mimi_tiny()), seed=0)
    persona.listener = random_listener(persona, tiny_stt_config())
    session = persona.session(
        persona.default_settings(voice=None), voice=None, system_tokens=[5], transcribe_user=True
    )
    names = [name for name, _ in session._warm_jobs() if name.startswith("speech-to-text")]
    helper = SttStream(random_stt_lm(tiny_stt_config(), persona.lm.dtype))
    assert len(names) == len(helper.windows_to_warm()) >= 2


def test_warm_up_parts_cover_every_graph_once() -> None:
    from model.config import mimi_tiny, tiny
    from model.conversation.persona import random_model

    names: list[list[str]] = []
    all_names: list[str] = []
    for part in range(3):
        got: list[str] = []
        model = random_model(tiny(mimi=mimi_tiny()), seed=0)  # its own graphs, as in a helper
        settings = model.default_settings(voice=None)
        session = model.session(settings, voice=None, system_tokens=[5, 6])
        all_names = [n for n, _ in session._warm_jobs()]
        session.warm_up(lambda done, total, name, got=got: got.append(name), part=(part, 3))
        names.append([n for n in got if n])
    assert sorted(n for part in names for n in part) == sorted(all_names)
    assert all(names)  # each part has work


def test_helpers_run_and_end(tmp_path: Path, monkeypatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    env_path = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    )
    monkeypatch.setenv("PYTHONPATH", env_path)
    logs = tmp_path / "logs"
    monkeypatch.setenv(LOGS_ENV, str(logs))
    options = {"small": True, "steps": 5, "warmup_steps": 2, "user_transcript": True}
    tasks = helper_tasks(options, 4)
    chosen = [tasks[0]] + [t for t in tasks if t[0] != "prime"]  # a primer, Mimi's, the LM's
    helpers = JitWorkers(shared, chosen)
    deadline = time.time() + 120
    while None in helpers.finished() and time.time() < deadline:
        time.sleep(0.2)
    report = helpers.stop()
    assert report["helpers"] == len(chosen) == 1 + len(ENCODE_PARTS) + 1 + 2 + 2
    assert report["finished_ok"] == len(chosen), report
    assert helpers.stop() is report  # once
    # Each helper really ran its task to the end (a process that runs nothing also exits 0).
    for n, task in enumerate(chosen):
        lines = (logs / f"helper-{n}.log").read_text().splitlines()
        started = [line for line in lines if " start " in line]
        assert started and started[0].split(" start ", 1)[1].startswith(f"{task[0]} {task[1]}")
        assert lines[-1].endswith(" done"), lines


def test_stop_ends_a_helper_still_running(tmp_path: Path) -> None:
    import sys

    helpers = JitWorkers(tmp_path, [["prime", "gather", "float32", "int32"]], python=sys.executable)
    helpers._procs[0].kill()  # stand-in for a stuck helper: stop must not wait for it
    report = helpers.stop()
    assert report["helpers"] == 1
    assert report["finished_ok"] == 0


def test_the_engine_knows_when_the_helpers_are_done_and_whether_one_failed(
    tmp_path: Path, monkeypatch
) -> None:
    """`helpers_running` / `helpers_failed` / `defer_compile` (the engine's questions) follow the
    processes this one started: a helper with an unknown task exits 1."""
    monkeypatch.setattr(jit_workers, "_STARTED", [])
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    )
    assert not jit_workers.helpers_running() and not jit_workers.defer_compile()
    helpers = JitWorkers(tmp_path, [["no-such-task"]])
    assert jit_workers.helpers_running() and not jit_workers.helpers_failed()
    assert jit_workers.defer_compile()
    monkeypatch.setenv(jit_workers.DEFER_ENV, "off")
    assert not jit_workers.defer_compile()
    deadline = time.time() + 60
    while jit_workers.helpers_running() and time.time() < deadline:
        time.sleep(0.1)
    assert not jit_workers.helpers_running() and jit_workers.helpers_failed()
    helpers.stop()
    assert not jit_workers.helpers_running()


@pytest.mark.parametrize("kind", ["gather", "scatter"])
def test_primers_run_the_indexing_ops(kind: str) -> None:
    jit_helper._prime(kind, "float32", "int32")  # on the CPU: runs, compiles nothing


WHOLE_VS_PARTS = """
import sys
import mlx.core as mx
from model.config import mimi_tiny
from model.conversation.step_graphs import StepGraphs
from model.mimi.codec import MimiCodec
from model.mimi.warm_parts import compile_encode_part
codec = MimiCodec.random(mimi_tiny(), seed=0)
if sys.argv[1] == "whole":
    pcm = mx.zeros((codec.frame_size,))
    mx.eval(StepGraphs(None, codec).encode(False)(pcm, codec.model.init_encode_state()))
else:
    compile_encode_part(codec, sys.argv[1])
"""


LM_STEP_GRAPHS = """
import sys
from model.config import mimi_tiny, tiny
from personaplex_tui import benchmark
from personaplex_tui.benchmark import BenchOptions, bench_session, build_model
from personaplex_tui.jit_helper import _lm_graph
benchmark.random_config = lambda opts: tiny(num_layers=4, mimi=mimi_tiny())
opts = BenchOptions(small=True)
layers = int(sys.argv[1].split(":")[1])
model, voice, tokens = build_model(opts, layers=layers)
assert len(model.lm.transformer.layers) == layers
bench_session(model, voice, tokens, opts).warm_up(graphs=_lm_graph)
"""


def test_a_shallower_model_compiles_the_same_step_kernels(tmp_path: Path) -> None:
    """The LM helpers build HELPER_LAYERS layers, not the model's depth: the LM step graphs'
    fused kernels are the same (on the CPU, where the temporal transformer is MLX's ops, one
    set per layer, the strictest case; one layer would fuse differently: a mask used once)."""
    deep = _cpu_kernels(tmp_path, "layers:4", LM_STEP_GRAPHS)
    shallow = _cpu_kernels(tmp_path, f"layers:{jit_helper.HELPER_LAYERS}", LM_STEP_GRAPHS)
    assert len(deep) >= 5
    assert shallow == deep


APP_VS_HELPER = """
import sys
from personaplex_tui import jit_helper
SAMPLING = {"text_temperature": 0.45, "audio_top_k": 100}
if sys.argv[1].startswith("app"):  # the app's model and a session of its settings
    import model
    persona = model.load("FOLDER")
    settings = persona.default_settings(**(SAMPLING if sys.argv[1] == "app-sampling" else {}))
    persona.session(settings).warm_up(graphs=jit_helper._lm_graph)
elif sys.argv[1] == "helper-sampling":  # told the conversation's sampling
    jit_helper._warm_graphs({"checkpoint": "FOLDER", "sampling": SAMPLING}, 0, 1)
else:
    jit_helper._warm_graphs({"checkpoint": "FOLDER"}, 0, 1)
"""


def test_the_apps_lm_helper_compiles_the_apps_step_kernels(tmp_path: Path) -> None:
    """An LM helper for the app (random weights of the checkpoint's configuration, its default
    settings) compiles the fused kernels the app's own session does, from loading on."""
    from tests.checkpoints import write_small_checkpoint

    folder = write_small_checkpoint(tmp_path / "ckpt", voices=("NATF2",))
    script = APP_VS_HELPER.replace("FOLDER", str(folder))
    app = _cpu_kernels(tmp_path, "app", script)
    assert len(app) >= 5
    assert _cpu_kernels(tmp_path, "helper", script) == app


def test_an_lm_helper_told_the_sampling_compiles_that_sessions_kernels(tmp_path: Path) -> None:
    """Other sampling settings bake other constants into the LM step's kernels: a helper given
    the conversation's sampling (`load_model(sampling=...)`) compiles that session's kernels,
    which the checkpoint's default settings would not."""
    from tests.checkpoints import write_small_checkpoint

    folder = write_small_checkpoint(tmp_path / "ckpt", voices=("NATF2",))
    script = APP_VS_HELPER.replace("FOLDER", str(folder))
    app = _cpu_kernels(tmp_path, "app-sampling", script)
    assert _cpu_kernels(tmp_path, "helper-sampling", script) == app
    assert _cpu_kernels(tmp_path, "helper", script) != app


def _cpu_kernels(tmp: Path, what: str, script: str = WHOLE_VS_PARTS) -> set[str]:
    """The fused kernels MLX's CPU backend compiles for `what` (its JIT libraries' names, in a
    temporary folder of its own: MLX keeps them under $TMPDIR/mlx)."""
    import subprocess
    import sys

    folder = tmp / what.replace(":", "-")
    folder.mkdir()
    env = {**os.environ, "TMPDIR": str(folder), "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run([sys.executable, "-c", script, what], env=env, check=True, timeout=300)
    names = set()
    for lib in folder.rglob("lib*.so"):
        stem = lib.name[3:-3]
        for cut in ("_contiguous", "_strided_"):
            stem = stem.split(cut)[0]
        names.add(stem)
    return names


def test_the_encode_parts_compile_the_whole_graphs_kernels(tmp_path: Path) -> None:
    """Compiled alone, the parts give the fused kernels of the whole first encode graph (on the
    CPU, whose JIT names its kernels as CUDA's does): all of them but the CPU's own stand-in
    for `mx.fast.rope` (CUDA runs RoPE as one kernel of its own, no fused graph)."""
    whole = _cpu_kernels(tmp_path, "whole")
    parts = set().union(*(_cpu_kernels(tmp_path, part) for part in ENCODE_PARTS))
    assert len(whole) >= 10
    missing = whole - parts
    assert len(missing) <= 1, missing
    assert all("Add" in name and "Multiply" in name for name in missing)  # rope's positions
