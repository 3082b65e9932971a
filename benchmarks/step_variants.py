"""Step-time variants side by side in one process: warm-up split, attention windows and masks, KV
writes, quantized mat-vecs, the step's phases, LM-only and full steps, kernels per graph.

Headless (no textual/sounddevice), random weights of the 7B's exact shape (or the tiny test model
with --small, for a CPU smoke run). Prints tables of milliseconds (p50 / p90 / p99 of repeated,
individually evaluated calls; the rings are put back to the same position before each call).
Every section runs on its own: one that fails prints its error and the rest go on. The variants
are the backend-dependent choices: how unwritten ring slots are hidden while the ring fills
(`PPX_RING_MASK`: bool or far_keys) and how the FFN's wide projection is multiplied.

    python benchmarks/step_variants.py --bits 8        # ~2-3 min on an H200, cold JIT included
    python benchmarks/step_variants.py --small         # CPU smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import kernel_count  # noqa: E402
from model import random_model  # noqa: E402
from model.config import config_7b, mimi_tiny, tiny  # noqa: E402
from model.ring_mask import BOOL, FAR_KEYS, default_mode, hide_unwritten  # noqa: E402
from model.step_graphs import StepGraphs, input_column  # noqa: E402
from personaplex_tui.kernel_cache import cached_kernels, persistent_kernel_cache  # noqa: E402

FRAME = 1920


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    """Run one part; a failure is printed (with where it happened) and the script goes on."""
    t0 = time.perf_counter()
    try:
        yield
    except Exception as exc:  # any backend error: report it, measure the rest
        print(f"\n!! {title} FAILED after {time.perf_counter() - t0:.1f} s: {type(exc).__name__}")
        print("   " + str(exc).strip().replace("\n", "\n   ")[:2000])
        traceback.print_exc(limit=-3)
    sys.stdout.flush()


def timed(fn: Callable[[], object], iters: int, warm: int = 3) -> np.ndarray:
    """Milliseconds of `iters` calls of fn (each evaluated), after `warm` untimed ones."""
    for _ in range(warm):
        mx.eval(fn())
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        mx.eval(fn())
        out.append(1000 * (time.perf_counter() - t))
    return np.array(out)


def fmt(ms: np.ndarray | None) -> str:
    if ms is None or len(ms) == 0:
        return "-"
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return f"{p50:.3f} / {p90:.3f} / {p99:.3f}"


def table(title: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> None:
    """Rows of cells under `columns`, each column as wide as its widest cell."""
    width = max([24] + [len(name) for name, _ in rows])
    cells = [
        max([len(c)] + [len(r[1][i]) for r in rows if i < len(r[1])]) for i, c in enumerate(columns)
    ]
    print(f"\n== {title}")
    print(f"{'':{width}s} " + " ".join(f"{c:>{w}s}" for c, w in zip(columns, cells, strict=True)))
    for name, row in rows:
        print(
            f"{name:{width}s} " + " ".join(f"{c:>{w}s}" for c, w in zip(row, cells, strict=False))
        )
    sys.stdout.flush()


# ---- micro-benchmarks ----------------------------------------------------------------------


def attention_micro(layers: int, heads: int, context: int, dh: int, iters: int) -> None:
    """One query over a window of the ring, for every layer: no mask, bool mask, far keys."""
    dtype = mx.bfloat16 if mx.default_device() == mx.gpu else mx.float32
    rings = [mx.random.normal((1, heads, context, dh)).astype(dtype) for _ in range(2 * layers)]
    q = mx.random.normal((1, heads, 1, dh)).astype(dtype)
    mx.eval(rings, q)
    scale = dh**-0.5
    rows = []
    for n in sorted({n for n in (256, 512, 1024, 2048, context) if n <= context}):
        pos = mx.array(n // 2, dtype=mx.int32)  # half the window written

        def run(mode: str | None, n: int = n, pos: mx.array = pos) -> np.ndarray:
            def f(pos):
                written = mx.arange(n) <= pos
                outs = []
                for i in range(layers):
                    k, v = rings[2 * i][:, :, :n], rings[2 * i + 1][:, :, :n]
                    k, mask = (k, None) if mode is None else hide_unwritten(q, k, written, mode)
                    outs.append(
                        mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
                    )
                return outs

            g = mx.compile(f)
            return timed(lambda: g(pos), iters)

        rows.append((f"window {n}", [fmt(run(m)) for m in (None, BOOL, FAR_KEYS)]))
    table(
        f"{layers} x attention of one query over a window of the ring (ms p50 / p90 / p99)",
        ["no mask (ideal)", "bool mask", "far keys"],
        rows,
    )

    new = mx.random.normal((1, heads, 1, dh)).astype(dtype)
    slot = mx.array(5, dtype=mx.int32).reshape(1, 1, 1, 1)

    def put(slot):
        index = mx.broadcast_to(slot, new.shape)
        for i in range(len(rings)):
            rings[i] = mx.put_along_axis(rings[i], index, new, axis=2)
        return rings[0][0, 0, 0, 0]

    def slice_update(slot):
        for i in range(len(rings)):
            rings[i] = mx.slice_update(rings[i], new, slot.reshape(1), axes=(2,))
        return rings[0][0, 0, 0, 0]

    rows = []
    for name, f in (("put_along_axis (used)", put), ("slice_update, dynamic start", slice_update)):
        g = mx.compile(f, inputs=rings, outputs=rings)
        rows.append((name, [fmt(timed(lambda g=g: (g(slot), rings), iters))]))
    table(f"{len(rings)} KV writes of one position into the rings", ["ms p50 / p90 / p99"], rows)


def _project(linear, x: mx.array, rows: slice | None = None) -> mx.array:
    """x times `linear`'s weight (rows `rows` of it), quantized or not, as one matmul."""
    rows = rows or slice(None)
    if hasattr(linear, "scales"):
        return mx.quantized_matmul(
            x,
            linear.weight[rows],
            linear.scales[rows],
            linear.biases[rows],
            transpose=True,
            group_size=linear.group_size,
            bits=linear.bits,
        )
    return x @ linear.weight[rows].T


def matvec_micro(model, iters: int) -> None:
    """The temporal transformer's four projections of every layer on one position, with the FFN
    input projection as one matmul over both halves (gate, value) or one matmul per half. On
    CUDA, MLX multiplies one vector by more than 16384 quantized rows with a GEMM (CUTLASS,
    JIT-compiled, copying the scales and biases each call); up to 16384 with its mat-vec kernel.
    """
    layers = model.lm.transformer.layers
    d = model.lm.config.temporal.d_model
    x = mx.random.normal((1, 1, d)).astype(model.lm.dtype)
    hidden = model.lm.config.temporal.dim_feedforward
    mx.eval(x)

    def projections(split: bool):
        def f(x):
            out = []
            for layer in layers:
                attn, ffn = layer.self_attn, layer.gating
                out += [_project(attn.in_proj, x), _project(attn.out_proj, x)]
                if split:
                    out += [_project(ffn.linear_in, x, slice(0, hidden))]
                    out += [_project(ffn.linear_in, x, slice(hidden, 2 * hidden))]
                else:
                    out += [_project(ffn.linear_in, x)]
                out += [_project(ffn.linear_out, mx.zeros((1, 1, hidden), x.dtype))]
            return out

        return mx.compile(f)

    def ffn_in(split: bool):
        def f(x):
            if not split:
                return [_project(layer.gating.linear_in, x) for layer in layers]
            return [
                _project(layer.gating.linear_in, x, rows)
                for layer in layers
                for rows in (slice(0, hidden), slice(hidden, 2 * hidden))
            ]

        return mx.compile(f)

    rows = []
    for split in (False, True):
        name = "two halves" if split else "one matmul"
        one, four = ffn_in(split), projections(split)
        rows.append((f"FFN input, {name}", [fmt(timed(lambda f=one: f(x), iters))]))
        rows.append((f"all 4, FFN input {name}", [fmt(timed(lambda f=four: f(x), iters))]))
    table(
        f"{len(layers)} layers' projections of one position, {model.quantization} (ms)",
        ["p50 / p90 / p99"],
        rows,
    )


# ---- the model's step ----------------------------------------------------------------------


def set_position(session, position: int, mimi_frames: int | None = None) -> None:
    """Move the session's rings (and Mimi's fill count) there; contents stay: timing does not
    depend on them."""
    for cache in session._caches:
        cache.offset = position
    if mimi_frames is not None:
        session._mimi_frames = mimi_frames


def positions_for(context: int, windows: tuple[int, ...]) -> dict[str, int]:
    """A ring position inside each window (masked ones while filling, then the full ring)."""
    out, low = {}, 0
    for n in windows:
        out[f"window {n}" + (" (masked)" if n == context else "")] = max(low, n // 2 + low // 2)
        low = n
    out[f"full ring {context}"] = context + 10
    return out


def temporal_call(session, position: int) -> Callable[[], object]:
    """One temporal step of `session` at `position` (the rings put back there each call)."""
    g = session._graphs
    pos = mx.array(position, dtype=mx.int32)
    column = input_column(
        session._text, session._agent, mx.zeros((8,), mx.int32), session._user_acoustic
    )

    def call():
        set_position(session, position)
        fn = g.temporal(session._spec, session._caches[0].step_window())
        return session._with_rings(fn, column, pos), [c.state for c in session._caches]

    return call


def lm_call(session, position: int) -> Callable[[], object]:
    codes = np.zeros(8, np.int32)

    def call():
        set_position(session, position)
        return session.step_codes(codes)

    return call


def full_steps(session, position: int, mimi_full: bool, iters: int) -> np.ndarray:
    """Session.step at `position`, Mimi's caches filling (first 10 s) or full."""
    pcm = (0.1 * np.random.default_rng(0).standard_normal(FRAME)).astype(np.float32)
    out = []
    for i in range(iters + 3):
        set_position(session, position, 10**6 if mimi_full else 0)
        ms = session.step(pcm).timings.total_ms
        if i >= 3:
            out.append(ms)
    return np.array(out)


def fixed_phases(session, iters: int) -> dict[str, np.ndarray]:
    """Depformer (text sampling + 8 agent steps), Mimi encode and decode: window-independent."""
    g = session._graphs
    logits, h = session._dummy_temporal_out()
    key = mx.random.key(1)
    pcm = mx.array((0.1 * np.random.default_rng(1).standard_normal(FRAME)).astype(np.float32))
    codes = mx.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=mx.int32)
    dep = g.depformer(session._spec)
    out = {"depformer + sampling": timed(lambda: dep(logits, h, key), iters)}
    for full, when in ((False, "first 10 s"), (True, "caches full")):
        enc, dec = g.encode(full), g.decode(full)
        out[f"Mimi encode ({when})"] = timed(lambda e=enc: e(pcm, session._enc_state), iters)
        out[f"Mimi decode ({when})"] = timed(lambda d=dec: d(codes, session._dec_state), iters)
    return out


def same_logits(sessions: list, positions: list[int]) -> list[list[str]]:
    """Per session after the first: max |logits diff| / max |logits| against the first, at each
    of `positions` (all sessions ran the same steps: same rings)."""
    out = [[] for _ in sessions[1:]]
    for position in positions:
        results = []
        for s in sessions:
            (logits, _), _ = temporal_call(s, position)()
            results.append(np.array(logits.astype(mx.float32)).reshape(-1))
        scale = max(np.abs(results[0]).max(), 1e-9)
        for cells, other in zip(out, results[1:], strict=True):
            cells.append(f"{np.abs(results[0] - other).max() / scale:.2e}")
    return out


def kernel_counts(model, session) -> list[tuple[str, list[str]]]:
    """Kernels per graph, traced afresh (estimated on the CPU, see benchmarks/kernel_count.py)."""
    g = StepGraphs(model.lm, model.mimi)
    spec = replace(session._spec, hide=FAR_KEYS)  # CUDA's default (on a GPU, also counted)
    set_position(session, session.prompt_positions)
    pos = mx.array(session.position, dtype=mx.int32)
    user = mx.zeros((8,), dtype=mx.int32)
    pcm = mx.zeros((FRAME,), dtype=mx.float32)
    key = mx.random.key(0)
    lm = (session._text, session._agent, session._user_acoustic)
    states = [list(c.state) for c in session._caches]
    column = input_column(session._text, session._agent, user, session._user_acoustic)
    windows = [session._caches[0].window_at(session.position), session._caches[0].window_at(10**6)]
    graphs: list[tuple[str, Callable[[], object]]] = []
    for w in windows:
        where = f"window {w.length}{' masked' if w.masked else ''}"
        graphs.append((f"temporal ({where})", lambda w=w: g.temporal(spec, w)(column, pos, states)))
        graphs.append(
            (f"LM step ({where})", lambda w=w: g.lm_step(spec, w)(user, *lm, pos, key, states))
        )
    logits, h = session._dummy_temporal_out()
    graphs.append(("depformer + sampling", lambda: g.depformer(spec)(logits, h, key)))
    for full in (False, True):
        mimi = "full" if full else "filling"
        graphs.append(
            (f"Mimi encode ({mimi})", lambda f=full: g.encode(f)(pcm, session._enc_state)[0])
        )
        graphs.append(
            (f"Mimi decode ({mimi})", lambda f=full: g.decode(f)(user, session._dec_state)[0])
        )
    rows = []
    for name, call in graphs:
        with kernel_count.estimating() as fast:
            counts = kernel_count.breakdown(call(), fast=fast)
        top = ", ".join(f"{k}:{v}" for k, v in counts.most_common(6))
        rows.append((name, [str(sum(counts.values())), top[:110]]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=8, help="4, 8 or 16 (bfloat16)")
    parser.add_argument("--small", action="store_true", help="tiny model (CPU smoke test)")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--skip-micro", action="store_true")
    args = parser.parse_args()
    iters = args.iters
    started = time.perf_counter()
    persistent_kernel_cache()  # the folder `ppx-tui` uses, so that both warm each other up
    cached = cached_kernels()
    print(
        f"MLX {mx.__version__} on {mx.default_device()}; default ring mask {default_mode()}; "
        f"kernel cache: {cached} modules at start"
    )
    if args.small:
        cfg, bits = tiny(mimi=mimi_tiny(), num_layers=4), None
    else:
        cfg, bits = config_7b(), (None if args.bits == 16 else args.bits)
    t = cfg.lm.temporal

    t0 = time.perf_counter()
    model = random_model(cfg, bits=bits, seed=0)
    mx.eval(model.lm.parameters())
    tokens = [int(x) for x in np.random.default_rng(0).integers(4, cfg.lm.text_card, 20)]
    label = "tiny" if args.small else f"7B {args.bits}-bit" if bits else "7B bfloat16"
    print(f"\n{label} random weights built in {time.perf_counter() - t0:.1f} s; {model.lm.dtype}")

    # The default session first: its warm-up pays the kernel JIT (cache cold) or loads.
    modes = sorted((BOOL, FAR_KEYS), key=lambda m: m != default_mode())
    sessions: dict[str, object] = {}
    with section("warm-up"):
        graphs = model.step_graphs()
        t0 = time.perf_counter()
        s = model.session(None, system_tokens=tokens, seed=0, ring_mask=modes[0])
        created = time.perf_counter() - t0
        t1 = time.perf_counter()
        s.warm_up()
        warm = time.perf_counter() - t1
        rows = [("session + prompt prefill", [f"{1000 * created:.0f}"])]
        rows += [(g.graph, [f"{g.trace_ms:.0f} + {g.first_run_ms:.0f}"]) for g in graphs.timings]
        rows.append(("warm_up() in all", [f"{1000 * warm:.0f}"]))
        traces, t1 = graphs.traces, time.perf_counter()
        model.session(None, system_tokens=tokens, seed=0, ring_mask=modes[0]).warm_up()
        again = f"{1000 * (time.perf_counter() - t1):.0f} ({graphs.traces - traces} traces)"
        rows.append(("new session + warm_up (shared graphs)", [again]))
        table(
            f"warm-up of the default session ({modes[0]}), ms (graphs: trace + first run); "
            f"kernel cache {cached} -> {cached_kernels()} modules",
            ["ms"],
            rows,
        )
        sessions[modes[0]] = s
    for mode in modes[1:]:
        with section(f"session {mode}"):
            sessions[mode] = model.session(None, system_tokens=tokens, seed=0, ring_mask=mode)
            sessions[mode].warm_up()
    names = [m for m in modes if m in sessions]
    if not names:
        return
    first = sessions[names[0]]
    positions = positions_for(t.context, first._caches[0].windows)

    if len(names) > 1:
        with section("logits sanity"):
            # Every session has run the same steps so far: same rings, same logits expected.
            diffs = same_logits([sessions[n] for n in names], list(positions.values()))
            table(
                f"same state, max |logits diff| / max |logits| against '{names[0]}' (0 on the "
                "CPU; on a GPU the attention kernels differ: ~1e-2 is bfloat16 noise)",
                list(positions),
                list(zip(names[1:], diffs, strict=True)),
            )

    with section("per window"):
        rows_t, rows_lm = [], []
        for where, position in positions.items():
            rows_t.append(
                (where, [fmt(timed(temporal_call(sessions[n], position), iters)) for n in names])
            )
            rows_lm.append(
                (where, [fmt(timed(lm_call(sessions[n], position), iters)) for n in names])
            )
        table(
            f"temporal step ({t.num_layers} layers, one position), ms p50 / p90 / p99",
            names,
            rows_t,
        )
        table("LM step (temporal + text + 8 depformer steps), ms p50 / p90 / p99", names, rows_lm)

    with section("phases"):
        fixed = fixed_phases(first, iters)
        table(
            "window-independent phases, ms",
            ["p50 / p90 / p99"],
            [(k, [fmt(v)]) for k, v in fixed.items()],
        )

    with section("full steps"):
        first_window, full_ring = list(positions.values())[0], list(positions.values())[-1]
        rows = []
        for n in names:
            cells = [fmt(full_steps(sessions[n], first_window, False, iters))]
            cells.append(fmt(full_steps(sessions[n], full_ring, True, iters)))
            rows.append((n, cells))
        table(
            "full duplex step (Mimi encode + LM + decode, Session.step), ms p50 / p90 / p99",
            ["first window, Mimi filling", "full ring, Mimi full"],
            rows,
        )

    if not args.skip_micro:
        with section("mat-vecs"):
            matvec_micro(model, iters)
        with section("attention micro"):
            attention_micro(t.num_layers, t.num_heads, t.context, t.head_dim, iters)

    with section("kernel counts"):
        rows = kernel_counts(model, first)
        where = "estimated for a GPU" if mx.default_device() == mx.cpu else "this GPU's graphs"
        table(f"kernels per call ({where}; views not counted)", ["kernels", "most"], rows)

    print(f"\npeak memory {mx.get_peak_memory() / 1e9:.2f} GB")
    print(f"kernel cache: {cached} modules at start, {cached_kernels()} at the end")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
