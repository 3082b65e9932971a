"""`benchmarks/peers.py` end to end on tiny shapes: ours, PyTorch moshi, moshi_mlx or its absence."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from tests.import_probe import modules_loaded_by

ROOT = Path(__file__).resolve().parents[1]


def peers_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def peers(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "benchmarks/peers.py", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=peers_env(),
    )  # fmt: skip


def the_row(rows: list[dict], measure: str, impl: str, what: str = "") -> dict:
    found = [r for r in rows if r["measure"] == measure and r["impl"] == impl and what in r["what"]]
    assert len(found) == 1, (measure, impl, what, rows)
    return found[0]


def test_one_table_with_ours_the_pytorch_peer_and_ratios_of_the_measured_numbers(tmp_path):
    out = tmp_path / "peers.json"
    proc = peers("--small", "--steps", "6", "--warmup-steps", "2", "--depformer-steps", "8",
                 "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    rows, results = data["rows"], data["results"]
    table = proc.stdout.splitlines()

    for measure, ours_key, peer_key, source in (
        ("LM step", "ours", "torch-8", lambda r: r["bench"]["lm_step_ms"]),
        ("full-duplex step", "ours", "torch-8", lambda r: r["bench"]["step_ms"]),
        ("Mimi encode", "ours-mimi", "torch-mimi", lambda r: r["measures"]["encode"]),
        ("Mimi decode", "ours-mimi", "torch-mimi", lambda r: r["measures"]["decode"]),
    ):
        ours = the_row(rows, measure, "ppx-tui")
        torch = the_row(rows, measure, "torch")
        # the rows carry what the processes measured
        assert ours["p50"] == source(results[ours_key])["p50"] and ours["n"] == 6
        assert torch["p50"] == results[peer_key]["measures"][measure_key(measure)]["p50"]
        assert 0 < torch["p50"] <= torch["p90"] <= torch["p99"] <= torch["max"]
        # the ratios are the peer's numbers over ours, and the printed table shows them
        assert torch["ratio_p50"] == round(torch["p50"] / ours["p50"], 2)
        assert torch["ratio_p99"] == round(torch["p99"] / ours["p99"], 2)
        assert "ratio_p50" not in ours
        printed = [line for line in table if line.startswith(measure) and "PyTorch moshi" in line]
        assert len(printed) == 1 and f"{torch['ratio_p50']:.2f}x" in printed[0], printed
        assert f"{torch['p50']:.2f}" in printed[0]
        assert any(line.startswith(measure) and "ppx-tui" in line for line in table)

    mlx = [r for r in rows if r["impl"] == "mlx"]
    assert {r["measure"] for r in mlx} >= {"LM step", "Mimi encode"}
    if importlib.util.find_spec("moshi_mlx") is None:
        assert all("moshi_mlx is not installed" in r["status"] for r in mlx)
        assert sum("moshi_mlx is not installed" in line for line in table) == len(mlx)
    else:
        assert all(r["status"] == "ok" and r["ratio_p50"] > 0 for r in mlx)


def test_ours_also_and_fresh_caches_add_rows_without_moving_the_ratios(tmp_path):
    out = tmp_path / "peers.json"
    proc = peers("--small", "--steps", "4", "--warmup-steps", "1", "--depformer-steps", "8",
                 "--peers", "torch", "--fresh-cache", "--ours-also", "mlx-ops",
                 "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    rows, results = data["rows"], data["results"]
    assert list(results) == ["ours", "ours-cached", "ours-mimi", "ours-mlx-ops", "torch-8",
                             "torch-mimi"]  # fmt: skip

    # the first bench compiled into new, empty caches, which are gone afterwards
    fresh = Path(results["ours"]["bench"]["warmup"]["kernel_cache"]["dir"])
    assert fresh.name == "mlx_ptx_cache_dir" and fresh.parent.name.startswith("ppx-peers-kernels-")
    assert results["ours-cached"]["bench"]["warmup"]["kernel_cache"]["dir"] == str(fresh)
    assert not fresh.parent.exists()
    # MLX's ops: every kernel of ours off, no transcript
    mlx_ops = results["ours-mlx-ops"]
    assert mlx_ops["env"] == {f"PPX_{k}": "mlx" for k in
                              ("TEMPORAL", "DEPFORMER", "MATVEC", "MIMI", "SEANET")}  # fmt: skip
    assert mlx_ops["bench"]["options"]["user_transcript"] is False
    assert "full_stt" in results["ours"]["measures"] and "full_stt" not in mlx_ops["measures"]

    for measure, key in (("LM step", "lm_step_ms"), ("full-duplex step", "step_ms")):
        first = the_row(rows, measure, "ppx-tui", "empty kernel caches")
        cached = the_row(rows, measure, "ppx-tui", "cached")
        ops = the_row(rows, measure, "ppx-tui", "MLX's ops only")
        for row, job in ((first, "ours"), (cached, "ours-cached"), (ops, "ours-mlx-ops")):
            assert row["p50"] == results[job]["bench"][key]["p50"] and "ratio_p50" not in row
        torch = the_row(rows, measure, "torch")
        assert torch["ratio_p50"] == round(torch["p50"] / first["p50"], 2)  # over the first only
    stt = the_row(rows, "full-duplex step, user transcript on", "ppx-tui", "empty kernel caches")
    assert stt["p50"] == results["ours"]["bench"]["transcript"]["step_ms_on"]["p50"]

    # the second table: each bench's load + warm-up, in the jobs' order (Mimi's worker loads none)
    whats = [the_row(rows, "LM step", "ppx-tui", w)["what"]
             for w in ("empty kernel caches", "cached", "MLX's ops only")]  # fmt: skip
    assert [r["what"] for r in data["ready"]] == whats
    for r, job in zip(data["ready"], ("ours", "ours-cached", "ours-mlx-ops"), strict=True):
        bench = results[job]["bench"]
        assert r["ready_s"] == round(bench["load_s"] + bench["warmup_s"], 2)
    assert "load + warm-up" in proc.stdout


def measure_key(title: str) -> str:
    from benchmarks.peers import MEASURES

    return {v: k for k, v in MEASURES.items()}[title]


def test_a_process_that_runs_out_of_time_is_a_row_and_a_failed_exit():
    proc = peers("--small", "--steps", "1", "--peers", "torch", "--timeout", "0.01", timeout=120)
    assert proc.returncode == 1
    rows = [line for line in proc.stdout.splitlines() if "timed out after" in line]
    assert len(rows) == 5, proc.stdout  # ours' two processes, torch's 8 and 16 steps and Mimi
    assert "Traceback" not in proc.stderr


def test_a_stop_signal_ends_the_run_with_the_tables_of_what_finished(tmp_path):
    """`timeout 600 peers.py ...` that runs out used to lose every finished process's numbers."""
    out = tmp_path / "peers.json"
    proc = subprocess.Popen(
        [sys.executable, "benchmarks/peers.py", "--small", "--steps", "4", "--warmup-steps", "1",
         "--peers", "torch", "--depformer-steps", "8", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=peers_env(),
    )  # fmt: skip
    seen = []
    for line in proc.stderr:  # ours' bench, then ours' Mimi: stop the run once the second starts
        seen.append(line)
        if line.startswith("peers: [2/"):
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=120)
    stderr = "".join(seen) + stderr
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # 143, as ppx-tui's commands exit
    assert "Traceback" not in stderr and "peers: stopped during [2/" in stderr
    assert "by SIGTERM" in stderr and "benchmark failed" not in stderr  # stopped, not failed
    data = json.loads(out.read_text())
    results = data["results"]
    assert results["ours"]["status"] == "ok"  # finished before the signal: in the tables
    lm = the_row(data["rows"], "LM step", "ppx-tui")
    assert lm["p50"] == results["ours"]["bench"]["lm_step_ms"]["p50"] and lm["n"] == 4
    assert any(
        line.startswith("LM step") and f"{lm['p50']:.2f}" in line for line in stdout.splitlines()
    )
    assert [r["load_s"] for r in data["ready"]] == [results["ours"]["bench"]["load_s"]]
    for key in ("ours-mimi", "torch-8", "torch-mimi"):  # stopped, or never started
        assert results[key]["status"] == "not run", results[key]
    assert stdout.count("not run: the command was stopped") == 3, stdout


@pytest.mark.parametrize(
    "args, sentence",
    [
        (["--steps", "0"], "--steps must be 1 to 100000"),
        (["--json", "/no/such/folder/peers.json"], "the folder of /no/such/folder/peers.json"),
        (["--peers", "onnx"], "invalid choice: 'onnx'"),
        (["--small", "--ours-also", "8bit"], "--ours-also 8bit needs the 7B shapes"),
        (["--timeout", "nan"], "--timeout must be a positive number"),  # a traceback, at the end
        (["--timeout", "1e309"], "--timeout must be a positive number"),
        (["--steps", "200000"], "--steps must be 1 to 100000"),  # ours' bench refused it, late
        (["--seed", "-1"], "--seed must be between 0 and"),
        (["--json", "/tmp"], "--json: /tmp is a folder"),  # a traceback after every benchmark
    ],
)
def test_a_bad_option_is_one_sentence_and_exit_2(args, sentence):
    proc = peers(*args, timeout=60)
    assert proc.returncode == 2
    assert sentence in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # nothing was run


def test_the_percentiles_are_those_of_ppx_tui_bench():
    from benchmarks.peers_common import percentiles
    from personaplex_tui.benchmark import Stats

    ms = list(np.random.default_rng(0).gamma(2.0, 3.0, 137))
    assert percentiles(ms) == asdict(Stats.of(ms))


def test_the_command_and_its_workers_import_no_ui_or_audio():
    loaded = modules_loaded_by(
        "import benchmarks.peers, benchmarks.peers_ours, benchmarks.peers_torch, "
        "benchmarks.peers_mlx"
    )
    assert ("textual" in loaded, "sounddevice" in loaded) == (False, False)
