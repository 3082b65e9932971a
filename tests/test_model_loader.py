"""The engine's model loader: download progress from huggingface_hub's own code (a stand-in hub
on 127.0.0.1), loading from the hub cache offline, the offline-no-model sentence, and the
tracker's arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from personaplex_tui.download_progress import DownloadTracker
from personaplex_tui.events import LoadProgress
from tests.fake_hub import fake_hub

ROOT = Path(__file__).resolve().parents[1]
LOAD = """
import json, sys
from model.errors import PersonaPlexError
from personaplex_tui.model_loader import load_model
events = []
try:
    model, info = load_model(sys.argv[1], events.append)
except PersonaPlexError as e:
    print(json.dumps({"error": str(e)}))
    raise SystemExit(0)
for e in events:
    print(json.dumps({"event": e.__dict__}))
print(json.dumps({"info": {**info.__dict__, "voices": list(info.voices)}}))
"""


def load_in_subprocess(spec: str, **env: str) -> list[dict]:
    """`load_model(spec)` in a fresh interpreter (the hub reads HF_* variables on import)."""
    run_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    out = subprocess.run(
        [sys.executable, "-c", LOAD, spec],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_a_download_reports_bytes_rate_and_time_left_then_loads(small_checkpoint, tmp_path):
    cache = str(tmp_path / "hub")
    total = sum(p.stat().st_size for p in small_checkpoint.rglob("*") if p.is_file())
    with fake_hub("someone/small", small_checkpoint, bytes_per_s=5e6) as url:
        lines = load_in_subprocess("someone/small", HF_ENDPOINT=url, HF_HUB_CACHE=cache)
    events = [LoadProgress(**x["event"]) for x in lines if "event" in x]
    downloads = [e for e in events if e.stage == "download"]
    assert downloads[0].message == "Looking for someone/small on the Hugging Face hub"
    moving = [e for e in downloads if 0 < e.done_bytes < e.total_bytes]
    assert moving, downloads  # seen part way, with a rate and the time left
    assert all(e.rate_bytes_s > 0 and e.eta_s is not None and e.eta_s > 0 for e in moving)
    assert [e.done_bytes for e in downloads] == sorted(e.done_bytes for e in downloads)
    last = downloads[-1]
    assert last.done_bytes == last.total_bytes == total and "9 of 9 files" in last.message
    assert events[-1].stage == "load" and "Reading the weights" in events[-1].message
    info = lines[-1]["info"]
    assert info["source"] == "someone/small" and info["voices"] == ["NATF2", "NATM0", "VARF2"]
    assert (info["device"], info["quantization"]) == ("cpu", "float32") and info["load_s"] > 0

    # later, offline: the cached copy loads without the hub
    lines = load_in_subprocess("someone/small", HF_HUB_OFFLINE="1", HF_HUB_CACHE=cache)
    assert lines[-1]["info"]["voices"] == ["NATF2", "NATM0", "VARF2"]
    first = LoadProgress(**lines[0]["event"])
    assert first.message == "Looking for someone/small in the Hugging Face cache"


def test_offline_with_nothing_cached_is_one_sentence_naming_the_ways_out(tmp_path):
    lines = load_in_subprocess("someone/missing", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path))
    assert lines == [
        {
            "error": "someone/missing is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            "unset HF_HUB_OFFLINE to download it, or pass --model PATH with a local checkpoint "
            "folder."
        }
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_tracker_sums_byte_bars_and_smooths_the_rate():
    events: list[LoadProgress] = []
    clock = Clock()
    tracker = DownloadTracker(events.append, "org/model", every_s=0.25, clock=clock)
    bar_class = tracker.bar_class()
    files = bar_class(range(2), desc="Fetching 2 files")  # like hf_thread_map's bar
    transfer = bar_class(total=0, unit="B", desc="Downloading bytes")
    written = bar_class(total=0, unit="B", desc="Reconstructing")
    transfer.total = written.total = 10_000_000  # the hub grows the totals as files start
    for _ in range(8):  # 1 MB every half second: 2 MB/s
        clock.now += 0.5
        transfer.update(1_000_000)
        written.update(1_000_000)
    p = tracker.progress()
    assert (p.done_bytes, p.total_bytes) == (8_000_000, 10_000_000)
    assert p.rate_bytes_s == pytest.approx(2e6) and p.eta_s == pytest.approx(1.0)
    assert p.message == "org/model · 0 of 2 files"
    assert list(files) == [0, 1] and tracker.progress().message == "org/model · 2 of 2 files"
    assert files.format_dict["rate"] == pytest.approx(2e6)  # what the hub's postfix reads

    # throttled: updates within `every_s` of the last report are folded into the next one
    reported = len(events)
    clock.now += 0.1
    written.update(1)
    assert len(events) == reported
    clock.now += 0.2
    written.update(1)
    assert len(events) == reported + 1
    written.close()  # closing always reports
    assert len(events) == reported + 2 and events[-1].stage == "download"


def test_an_old_hub_without_byte_bars_still_shows_files():
    events: list[LoadProgress] = []
    tracker = DownloadTracker(events.append, "org/model")
    with tracker.bar_class()(total=4, desc="Fetching 4 files") as files:
        files.update(3)
    p = events[-1]
    assert (p.done_bytes, p.total_bytes, p.eta_s) == (0, 0, None)
    assert p.message == "org/model · 3 of 4 files"


def test_quitting_during_a_download_stops_it_at_the_next_progress_report():
    import asyncio
    import threading
    import time

    from personaplex_tui.conversation import create_conversation
    from personaplex_tui.events import StateChanged

    reached = threading.Event()
    updates: list[int] = []

    def slow_download(progress):  # the hub's byte bar, one chunk every 20 ms for 50 s
        tracker = DownloadTracker(progress, "org/huge", every_s=0.0)
        with tracker.bar_class()(total=2500 * 10**6, unit="B") as bar:
            for _ in range(2500):
                time.sleep(0.02)
                bar.update(10**6)
                updates.append(1)
                reached.set()
        raise AssertionError("the download was not stopped")

    async def main():
        events: list[object] = []
        conv = create_conversation(slow_download, events.append)
        start = asyncio.create_task(conv.start())
        await asyncio.to_thread(reached.wait, 10)
        asked = time.perf_counter()
        await conv.shutdown()
        await start
        return events, time.perf_counter() - asked

    events, took = asyncio.run(main())
    assert took < 1.0 and len(updates) < 100
    assert not any(isinstance(e, StateChanged) and e.state == "error" for e in events)


EARLY = """
import json, sys
from pathlib import Path
from personaplex_tui import model_loader
model_loader.kernels_to_compile = lambda: True  # as on a fresh CUDA machine
seen = []
def before(folder):
    seen.append(sorted(p.name for p in Path(folder).iterdir()))
folder = model_loader.fetch_model(sys.argv[1], lambda e: None, before_weights=before)
started = []
model_loader.start_jit_workers = started.append
model_loader.load_model(sys.argv[1], lambda e: None)
after = sorted(p.name for p in folder.iterdir())
print(json.dumps({"before": seen, "after": after, "started": started, "folder": str(folder)}))
"""


def test_on_a_fresh_gpu_the_helpers_start_before_the_weights_download(small_checkpoint, tmp_path):
    """The kernels compile during the download: `before_weights` sees config.json alone, and
    `load_model` starts the helpers once, from that folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(tmp_path / "hub")}
    with fake_hub("someone/small", small_checkpoint) as url:
        out = subprocess.run(
            [sys.executable, "-c", EARLY, "someone/small"],
            env={**env, "HF_ENDPOINT": url},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["before"] == [["config.json"]]
    assert "config.json" in result["after"] and len(result["after"]) > 2
    (started,) = result["started"]  # once, though the second load found the weights cached
    assert started == {"checkpoint": result["folder"], "quantize": None}
