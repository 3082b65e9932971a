"""Compile MLX's CUDA kernels in parallel worker processes while a fresh machine warms up.

On a new machine MLX's CUDA backend JIT-compiles each kernel module at its first use, one at a
time, about 3-6 s each on an H200 (mostly NVRTC parsing MLX's headers), and every module the
step needs comes in turn: minutes before the first word. The modules land in a shared disk cache
(`$MLX_PTX_CACHE_DIR`, personaplex_tui/kernel_cache.py) that MLX reads on each in-memory miss.
So helpers started beside the main process compile modules it will need, in parallel:

- primers: one tiny process per generic indexing module (gather / scatter of each dtype pair);
- Mimi workers: each builds only the codec and compiles its first encode or decode graph, the
  longest chains of modules, which they start at once;
- STT workers (the user's transcript on): one compiles the end of Mimi's encode graph with the
  listener's quantizer (all the STT's codebooks), one the STT's load-time check and step graphs;
- graph workers: each builds the same model and session as the main process and warms up its
  share of the session's LM step graphs (`Session.warm_up(part=..., graphs=...)`).

Each helper compiles into its own folder and publishes finished modules into the shared cache by
atomic renames (`.txt` and `.cu` first, `.ptx` last: MLX looks for the `.ptx` first), and pulls
the modules others finished into its own folder the same way, so that nobody ever reads a module
half written. The main process runs unchanged and finds more and more of its modules on disk.
docs/cuda-kernels.md ("Kernels on a fresh machine") says what it saves.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personaplex_tui.kernel_cache import ENV_VAR

DEFER_ENV = "PPX_DEFER_COMPILE"  # "off": warm-ups compile before talking even while helpers run
LOGS_ENV = "PPX_JIT_LOGS"  # a folder for the helpers' stderr (unset: discarded)
WORKERS_ENV = "PPX_JIT_WORKERS"  # graph workers: a number, "off" (no helpers at all), unset: auto
MAX_GRAPH_WORKERS = 4
HELPER_MODULE = "personaplex_tui.jit_helper"  # what each helper process runs
SETTLE_S = 1.0  # a module written by MLX directly is pulled once its files are this old
SYNC_EVERY_S = 0.2

# MLX's generic indexing modules are named by dtypes only, whatever the shapes: one tiny process
# per pair compiles each. The (value dtype, index dtype) pairs the step, the loaders and the
# kernel checks use (measured on an H200: the modules a fresh bench compiled).
GATHERS = [
    ("bfloat16", "int32"),
    ("bfloat16", "uint32"),
    ("float32", "int32"),
    ("float32", "uint32"),
    ("int32", "uint32"),
    ("uint32", "uint32"),
]
SCATTERS = [("bfloat16", "int32")]
SPLIT_ENCODE_FROM = 3  # graph workers from which Mimi's encode graph is compiled in parts
GB_PER_GRAPH_WORKER = 20  # device memory each graph worker may take (a 7B model, its caches)


def graph_workers_wanted(cpus: int | None = None, device_gb: float | None = None) -> int:
    """Graph workers to start: `$PPX_JIT_WORKERS` if set, else one per two CPUs beyond the
    first two and per GB_PER_GRAPH_WORKER of device memory beyond the main process's share, at
    most MAX_GRAPH_WORKERS."""
    value = os.environ.get(WORKERS_ENV, "").strip().lower()
    if _helpers_off():
        return 0
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    device_gb = device_gb if device_gb is not None else _device_gb()
    by_memory = int(device_gb // GB_PER_GRAPH_WORKER) - 1
    return max(0, min(MAX_GRAPH_WORKERS, (cpus - 2) // 2, by_memory))


def _helpers_off() -> bool:
    """`$PPX_JIT_WORKERS` is "off": no helper at all."""
    return os.environ.get(WORKERS_ENV, "").strip().lower() == "off"


def _device_gb() -> float:
    """The accelerator's memory in GB (0 when MLX does not say)."""
    import mlx.core as mx

    try:
        info = mx.device_info()
    except Exception:  # device_info differs across backends and versions
        return 0.0
    size = info.get("memory_size") or info.get("total_memory") or 0
    return float(size) / 1e9


_STARTED: list[JitWorkers] = []  # the helpers this process started


def helpers_running() -> bool:
    """Whether helpers this process started are still compiling."""
    return any(workers.running() for workers in _STARTED)


def helpers_failed() -> bool:
    """Whether a helper this process started ended in an error (its modules are then missing
    from the cache: whoever needs them compiles them)."""
    return any(code not in (0, None) for w in _STARTED for code in w.finished())


def helpers_sampling() -> dict[str, Any] | None:
    """The sampling (`SamplingConfig` fields) whose LM step graphs the running helpers compile,
    when the app named it; None: the checkpoint's (or the bench's) default settings."""
    for workers in _STARTED:
        if workers.running() and workers.sampling is not None:
            return workers.sampling
    return None


def defer_compile() -> bool:
    """Whether a warm-up should leave the step graphs' kernels to the helpers and step eagerly
    meanwhile (`Session.warm_up(defer=True)`): helpers are running and `$PPX_DEFER_COMPILE`
    is not "off"."""
    return os.environ.get(DEFER_ENV, "").strip().lower() != "off" and helpers_running()


def log(message: str) -> None:
    """One timestamped line on a helper's stderr (kept under `$PPX_JIT_LOGS` when set)."""
    print(f"{time.time():.2f} {message}", file=sys.stderr, flush=True)


# -- the cache folders ------------------------------------------------------------------------


def _modules(folder: Path) -> set[Path]:
    """The relative path (without suffix) of every module in `folder`."""
    return {ptx.relative_to(folder).with_suffix("") for ptx in folder.rglob("*.ptx")}


def _complete(stem: Path, settle_s: float, now: float) -> bool:
    """All three files of a module exist and none changed in the last `settle_s` seconds."""
    try:
        times = [stem.with_name(stem.name + s).stat().st_mtime for s in (".txt", ".cu", ".ptx")]
    except OSError:
        return False
    return now - max(times) >= settle_s


def copy_module(src_dir: Path, dst_dir: Path, rel: Path) -> bool:
    """Copy one module's files from `src_dir` to `dst_dir` by atomic renames, the `.ptx` last.
    Returns False when a file vanished meanwhile."""
    target = dst_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        for suffix in (".txt", ".cu", ".ptx"):
            src = src_dir / rel.parent / (rel.name + suffix)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, target.parent / (rel.name + suffix))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except FileNotFoundError:
        return False
    return True


@dataclass
class CacheSync:
    """Keeps a helper's own cache folder and the shared one in step (both ways)."""

    own: Path
    shared: Path
    settle_s: float = SETTLE_S
    published: set[Path] = field(default_factory=set)
    pulled: set[Path] = field(default_factory=set)

    def once(self) -> None:
        """Publish this helper's finished modules, pull the others' finished ones."""
        now = time.time()
        mine = _modules(self.own)
        theirs = _modules(self.shared)
        for rel in sorted(mine - theirs - self.published - self.pulled):
            # MLX writes its files directly: wait until they settle.
            if _complete(self.own / rel, self.settle_s, now) and copy_module(
                self.own, self.shared, rel
            ):
                self.published.add(rel)
                log(f"published {str(rel)[:60]}")
        for rel in sorted(theirs - mine):
            # Published modules arrive complete; the main process's own need to settle.
            if _complete(self.shared / rel, self.settle_s, now) and copy_module(
                self.shared, self.own, rel
            ):
                self.pulled.add(rel)
                log(f"pulled {str(rel)[:60]}")

    def run_in_background(self, stop: threading.Event) -> threading.Thread:
        def loop() -> None:
            while not stop.wait(SYNC_EVERY_S):
                self.once()
            self.settle_s = 0.0  # the helper's MLX work is over: everything of it is written
            self.once()

        thread = threading.Thread(target=loop, name="jit-cache-sync", daemon=True)
        thread.start()
        return thread


# -- the main process's side -------------------------------------------------------------------


def helper_tasks(options: dict[str, Any] | None, graph_workers: int) -> list[list[str]]:
    """The argument lists of every helper: the primers, Mimi's, the STT's (when the user's
    transcript is on), then the LM's graph workers.

    With room for 3 graph workers or more (CPUs and device memory), Mimi's first encode graph,
    the longest chain of modules, is compiled in parts side by side (`model.mimi.warm_parts`);
    with fewer, whole."""
    tasks = [["prime", "gather", v, i] for v, i in GATHERS]
    tasks += [["prime", "scatter", v, i] for v, i in SCATTERS]
    if options is not None and graph_workers:
        from model.mimi.warm_parts import ENCODE_PARTS

        blob = json.dumps(options)
        split = graph_workers >= SPLIT_ENCODE_FROM
        encode = [f"encode:{part}" for part in ENCODE_PARTS] if split else ["encode"]
        tasks += [["mimi", graph, blob] for graph in (*encode, "decode")]
        if options.get("user_transcript"):  # the STT's graphs, and Mimi's encode tail with it
            tasks += [["stt", what, blob] for what in ("tail", "stream")]
        lm_workers = max(1, graph_workers - 2)
        tasks += [["graphs", str(p), str(lm_workers), blob] for p in range(lm_workers)]
    return tasks


class JitWorkers:
    """Helper processes compiling kernels into the shared cache; `stop()` ends them."""

    def __init__(
        self,
        shared: Path,
        tasks: Iterable[list[str]],
        *,
        python: str | None = None,
        sampling: dict[str, Any] | None = None,
    ):
        self.started = time.perf_counter()
        self._root = Path(tempfile.mkdtemp(prefix="ppx-jit-"))
        self._procs: list[subprocess.Popen] = []
        self._report: dict[str, Any] | None = None
        self.sampling = sampling  # the sampling the LM helpers compile, when the app named one
        atexit.register(self.stop)
        _STARTED.append(self)
        for n, task in enumerate(tasks):
            own = self._root / str(n)
            own.mkdir()
            env = {**os.environ, ENV_VAR: str(own), WORKERS_ENV: "0"}
            cmd = [
                python or sys.executable,
                "-m",
                HELPER_MODULE,
                str(shared),
                *task,
            ]
            self._procs.append(
                subprocess.Popen(
                    cmd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=self._log_file(n),
                )
            )

    @staticmethod
    def _log_file(n: int) -> Any:
        folder = os.environ.get(LOGS_ENV)
        if not folder:
            return subprocess.DEVNULL
        Path(folder).mkdir(parents=True, exist_ok=True)
        return open(Path(folder) / f"helper-{n}.log", "w")  # noqa: SIM115  # the child keeps it

    def running(self) -> bool:
        """Whether a helper is still at work (False once stopped)."""
        return self._report is None and any(c is None for c in self.finished())

    def finished(self) -> list[int | None]:
        """Each helper's exit code (None: still running)."""
        return [p.poll() for p in self._procs]

    def stop(self) -> dict[str, Any]:
        """End every helper still running, remove their folders; what they did (once)."""
        if self._report is not None:
            return self._report
        codes = self.finished()
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self._root, ignore_errors=True)
        self._report = {
            "helpers": len(codes),
            "finished_ok": sum(1 for c in codes if c == 0),
            "failed": sum(1 for c in codes if c not in (0, None)),
            "stopped_running": sum(1 for c in codes if c is None),
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        return self._report


def start_jit_workers(
    options: dict[str, Any] | None,
    *,
    kernels_to_compile: Callable[[], bool] | None = None,
) -> JitWorkers | None:
    """Start the helpers when MLX's CUDA backend is about to compile most kernels (an empty
    cache); None otherwise. `options`: the benchmark's options for graph workers, or
    the app's {"checkpoint": folder, ...} (`jit_helper`), or None for the primers only."""
    from personaplex_tui.kernel_cache import kernels_to_compile as default_check

    if _helpers_off():
        return None
    if not (kernels_to_compile or default_check)():
        return None
    shared = os.environ.get(ENV_VAR)
    if not shared:
        return None
    Path(shared).mkdir(parents=True, exist_ok=True)
    n = graph_workers_wanted()
    sampling = (options or {}).get("sampling") if n else None
    return JitWorkers(Path(shared), helper_tasks(options if n else None, n), sampling=sampling)
