"""benchmarks/gpu_timeline.py's reading of a CUPTI trace: steps split at the anchor kernel, busy
time as the union of kernel intervals (kernels of several streams overlap), idle the rest."""

from __future__ import annotations

import json

from benchmarks.gpu_timeline import kernels_of, report, split_steps


def write_trace(path, kernels):
    events = [{"ph": "X", "cat": "kernel", "name": n, "ts": ts, "dur": d} for n, ts, d in kernels]
    events.append({"ph": "X", "cat": "cpu_op", "name": "not a kernel", "ts": 0.0, "dur": 5.0})
    path.write_text(json.dumps({"traceEvents": events}))


def test_steps_split_at_the_anchor_with_busy_and_idle_time(tmp_path, capsys):
    kernels = []
    for step in range(4):  # a step every 1000 µs: anchor 500, two overlapping 100s, idle 300
        t = 1000.0 * step
        kernels += [
            ("custom_kernel_ppx_temporal_ab12", t, 500.0),
            ("copy_s", t + 600, 100.0),
            ("gemm(a, b)", t + 650, 100.0),  # overlaps the copy by 50 µs
        ]
    path = tmp_path / "trace.json"
    write_trace(path, list(reversed(kernels)))  # out of order, as a trace may hold them

    read = kernels_of(str(path))
    assert [k[1] for k in read] == sorted(k[1] for k in kernels)  # kernels only, by start
    steps = split_steps(read, "temporal")
    assert len(steps) == 3  # the last step has no following anchor
    assert all(len(s) == 3 and nxt - s[0][1] == 1000.0 for s, nxt in steps)

    report("test", steps, sequence=True)
    out = capsys.readouterr().out
    # busy: 500 + the union of [600, 700) and [650, 750) = 650; idle 350 of the 1000 µs
    assert "anchor to anchor 1.000 ms, GPU busy 0.650 ms, idle 0.350 ms" in out
    assert "3 kernels per step" in out
    assert "gemm" in out and "(a, b)" not in out  # names shortened at their arguments
    # one step in order, with the gap before each (negative: it overlaps the one before)
    assert "   100.0    100.0  copy_s\n   -50.0    100.0  gemm\n" in out
