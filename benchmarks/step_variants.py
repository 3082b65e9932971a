"""Step-time variants side by side in one process: attention windows and masks, KV writes, the step's
phases (temporal, depformer, Mimi encode/decode), LM-only and full steps, warm-up, kernel counts.

Headless (no textual/sounddevice), random weights of the 7B's exact shape (or the tiny test model
with --small, for a CPU smoke run). Prints tables of milliseconds (p50 / p90 of repeated,
individually evaluated calls; the rings are put back to the same position before each call).
The variants are the backend-dependent choices: how unwritten ring slots are hidden while the
ring fills (`PPX_RING_MASK`: bool or far_keys) and whether the ring buffers are padded to a
multiple of 256 slots (`PPX_RING_ALIGN`, which lets CUDA use cuDNN's decode attention).

    python benchmarks/step_variants.py --bits 8        # ~2 min on an H200 (more on a cold JIT)
    python benchmarks/step_variants.py --bits 4 --skip-micro
    python benchmarks/step_variants.py --small         # CPU smoke test
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import random_model  # noqa: E402
from model.config import config_7b, mimi_tiny, tiny  # noqa: E402
from model.kv_cache import ALIGN_ENV, default_align  # noqa: E402
from model.layers import RMSNorm  # noqa: E402
from model.ring_mask import BOOL, FAR_KEYS, default_mode, hide_unwritten  # noqa: E402
from personaplex_tui.kernel_cache import persistent_kernel_cache  # noqa: E402

FRAME = 1920
# Primitives that launch no kernel (views, bookkeeping): not counted as kernels.
VIEWS = {
    "Broadcast", "BroadcastAxes", "Reshape", "Slice", "Squeeze", "ExpandDims", "Transpose",
    "AsStrided", "StopGradient", "Depends", "Split", "Flatten", "Unflatten", "View",
}  # fmt: skip


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
    return f"{np.median(ms):7.3f} / {np.percentile(ms, 90):7.3f}"


def table(title: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> None:
    width = max(20, *(len(name) for name, _ in rows))
    print(f"\n== {title}")
    print(f"{'':{width}s} " + " ".join(f"{c:>19s}" for c in columns))
    for name, cells in rows:
        print(f"{name:{width}s} " + " ".join(f"{c:>19s}" for c in cells))
    sys.stdout.flush()


def kernel_count(*outputs: object) -> int:
    """Kernel-launching primitives in the (compiled) graph that produces `outputs`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "graph.dot")
        mx.export_to_dot(path, *outputs)
        labels = re.findall(r'label ="([^"]+)"', Path(path).read_text())
    counts = collections.Counter(labels)
    return sum(n for name, n in counts.items() if name not in VIEWS)


# ---- micro-benchmarks: attention over a window of the ring, KV writes ----------------------


def attention_micro(layers: int, heads: int, context: int, dh: int, iters: int) -> None:
    dtype = mx.bfloat16 if mx.default_device() == mx.gpu else mx.float32
    caches = [mx.random.normal((1, heads, context, dh)).astype(dtype) for _ in range(2 * layers)]
    slots = -(-context // 256) * 256
    aligned = [mx.random.normal((1, heads, slots, dh)).astype(dtype) for _ in range(2 * layers)]
    q = mx.random.normal((1, heads, 1, dh)).astype(dtype)
    mx.eval(caches, aligned, q)
    scale = dh**-0.5
    lengths = sorted({n for n in (256, 512, 1024, 2048, context) if n <= context})
    rows = []
    for n in lengths:
        pos = mx.array(n // 2, dtype=mx.int32)  # half the window written

        def run(mode: str | None, n: int = n, pos: mx.array = pos, rings=caches):
            def f(pos):
                written = mx.arange(n) <= pos
                outs = []
                for i in range(layers):
                    k, v = rings[2 * i][:, :, :n], rings[2 * i + 1][:, :, :n]
                    if mode is None:
                        mask = None
                    else:
                        k, mask = hide_unwritten(q, k, written, mode)
                    outs.append(
                        mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
                    )
                return outs

            g = mx.compile(f)
            return timed(lambda: g(pos), iters)

        cells = [run(None), run(None, rings=aligned), run(BOOL), run(FAR_KEYS)]
        rows.append((f"window {n}", [fmt(c) for c in cells]))
    table(
        f"{layers} x attention of one query over a window of the ring (ms p50 / p90)",
        ["no mask (ideal)", f"no mask, {slots} slots", "bool mask", "far keys"],
        rows,
    )

    state = caches[: 2 * layers]
    new = mx.random.normal((1, heads, 1, dh)).astype(dtype)
    slot = mx.array(5, dtype=mx.int32).reshape(1, 1, 1, 1)

    def put(slot):
        index = mx.broadcast_to(slot, new.shape)
        for i in range(len(state)):
            state[i] = mx.put_along_axis(state[i], index, new, axis=2)
        return state[0][0, 0, 0, 0]

    def slice_update(slot):
        for i in range(len(state)):
            state[i] = mx.slice_update(state[i], new, slot.reshape(1), axes=(2,))
        return state[0][0, 0, 0, 0]

    rows = []
    for name, f in (("put_along_axis (used)", put), ("slice_update, dynamic start", slice_update)):
        g = mx.compile(f, inputs=state, outputs=state)
        rows.append((name, [fmt(timed(lambda g=g: (g(slot), state), iters))]))
    table(f"{2 * layers} KV writes of one position into the rings", ["ms p50 / p90"], rows)


# ---- the model's step ----------------------------------------------------------------------


def set_position(session, position: int) -> None:
    """Move the session's rings to `position` (contents stay: timing does not depend on them)."""
    for cache in session._caches:
        cache.offset = position


def positions_for(context: int, windows: tuple[int, ...]) -> dict[str, int]:
    """A ring position inside each window (masked ones while filling, then the full ring)."""
    out, low = {}, 0
    for n in windows:
        out[f"window {n}" + (" (masked)" if n == context else "")] = max(low, n // 2 + low // 2)
        low = n
    out[f"full ring {context}"] = context + 10
    return out


def session_phases(session, position: int, iters: int) -> dict[str, np.ndarray]:
    """Temporal step and LM-only step at `position` (the rings are put back there each call)."""
    set_position(session, position)
    window = session._caches[0].step_window()
    pos = mx.array(position, dtype=mx.int32)
    column = session._user_column(mx.zeros((8,), dtype=mx.int32))
    temporal = session._fn("temporal", window)
    out = {"temporal": timed(lambda: temporal(column, pos), iters)}
    codes = np.zeros(8, np.int32)

    def lm_step():
        set_position(session, position)
        return session.step_codes(codes)

    out["LM step (step_codes)"] = timed(lm_step, iters)
    return out


def full_steps(session, position: int, mimi_full: bool, iters: int) -> np.ndarray:
    """Session.step at `position`, Mimi's caches filling (first 10 s) or full."""
    rng = np.random.default_rng(0)
    pcm = (0.1 * rng.standard_normal(FRAME)).astype(np.float32)
    out = []
    for i in range(iters + 3):
        set_position(session, position)
        session._mimi_frames = 10**6 if mimi_full else 0
        ms = session.step(pcm).timings.total_ms
        if i >= 3:
            out.append(ms)
    return np.array(out)


def fixed_phases(session, iters: int) -> dict[str, np.ndarray]:
    """Depformer (text sampling + 8 agent steps), Mimi encode and decode: window-independent."""
    set_position(session, session.prompt_positions)
    window = session._caches[0].step_window()
    pos = mx.array(session.position, dtype=mx.int32)
    column = session._user_column(mx.zeros((8,), dtype=mx.int32))
    logits, h = session._fn("temporal", window)(column, pos)
    mx.eval(logits, h, [c.state for c in session._caches])
    key = mx.random.key(1)
    pcm = mx.array((0.1 * np.random.default_rng(1).standard_normal(FRAME)).astype(np.float32))
    codes = mx.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=mx.int32)
    dep = session._fn("depformer")
    out = {"depformer + sampling": timed(lambda: dep(logits, h, key), iters)}
    for full, when in ((False, "first 10 s"), (True, "caches full")):
        enc, dec = session._fn("encode", None, full), session._fn("decode", None, full)
        out[f"Mimi encode ({when})"] = timed(lambda e=enc: e(pcm, session._enc_state)[0], iters)
        out[f"Mimi decode ({when})"] = timed(lambda d=dec: d(codes, session._dec_state)[0], iters)
    return out


def kernel_counts(session) -> dict[str, int]:
    set_position(session, session.prompt_positions)
    window = session._caches[0].step_window()
    pos = mx.array(session.position, dtype=mx.int32)
    user = mx.zeros((8,), dtype=mx.int32)
    pcm = mx.zeros((FRAME,), dtype=mx.float32)
    key = mx.random.key(0)
    lm_state = (session._text, session._agent, session._user_acoustic)
    counts = {}

    def count(name: str, outputs) -> None:
        counts[name] = kernel_count(*outputs)
        mx.eval(outputs, [c.state for c in session._caches])

    count("temporal", session._fn("temporal", window)(session._user_column(user), pos))
    logits, h = session._fn("temporal", window)(session._user_column(user), pos)
    mx.eval(logits, h)
    count("depformer + sampling", session._fn("depformer")(logits, h, key))
    for full, when in ((False, "first 10 s"), (True, "caches full")):
        enc, dec = session._fn("encode", None, full), session._fn("decode", None, full)
        count(f"Mimi encode ({when})", enc(pcm, session._enc_state)[:1])
        count(f"Mimi decode ({when})", dec(user, session._dec_state)[:1])
    count("LM step", session._fn("codes", window)(user, *lm_state, pos, key))
    for full, when in ((False, "first 10 s"), (True, "Mimi caches full")):
        fused = session._fn("fused", window, full)
        out = fused(pcm, session._enc_state, session._dec_state, *lm_state, pos, key)
        count(f"full step ({when})", out[:5])
    return counts


def same_logits(sessions: list, positions: list[int]) -> list[list[str]]:
    """Per session after the first: max |logits diff| / max |logits| against the first, at each
    of `positions` (all sessions run the same positions in the same order: same rings)."""
    column = sessions[0]._user_column(mx.zeros((8,), dtype=mx.int32))
    out = [[] for _ in sessions[1:]]
    for position in positions:
        results = []
        for s in sessions:
            set_position(s, position)
            window = s._caches[0].step_window()
            logits, _ = s._fn("temporal", window)(column, mx.array(position, dtype=mx.int32))
            results.append(np.array(logits.astype(mx.float32)).reshape(-1))
        scale = max(np.abs(results[0]).max(), 1e-9)
        for cells, other in zip(out, results[1:], strict=True):
            cells.append(f"{np.abs(results[0] - other).max() / scale:.2e}")
    return out


class Float32Norm:
    """The previous RMSNorm (input cast to float32 and back), patched in for one comparison."""

    def __enter__(self):
        self._saved = RMSNorm.__call__

        def call(norm, x):
            y = mx.fast.rms_norm(x.astype(mx.float32), norm.alpha.reshape(-1), norm.eps)
            return y.astype(x.dtype)

        RMSNorm.__call__ = call
        return self

    def __exit__(self, *_):
        RMSNorm.__call__ = self._saved


# (label, ring mask, ring buffer alignment): the backend-dependent choices, side by side.
VARIANTS = [
    ("bool", BOOL, 1),
    ("far_keys", FAR_KEYS, 1),
    ("far_keys, 256-aligned", FAR_KEYS, 256),  # full ring: same as bool, 256-aligned
]


def make_session(model, tokens: list[int], mode: str, align: int, **kw):
    saved = os.environ.get(ALIGN_ENV)
    os.environ[ALIGN_ENV] = str(align)
    try:
        return model.session(None, system_tokens=tokens, seed=0, ring_mask=mode, **kw)
    finally:
        if saved is None:
            del os.environ[ALIGN_ENV]
        else:
            os.environ[ALIGN_ENV] = saved


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
    ptx = os.environ["MLX_PTX_CACHE_DIR"]
    cached = len(list(Path(ptx).rglob("*.ptx"))) if Path(ptx).is_dir() else 0
    print(
        f"MLX {mx.__version__} on {mx.default_device()}; defaults: ring mask {default_mode()}, "
        f"ring align {default_align()}; PTX cache {ptx}: {cached} kernels at start"
    )
    if args.small:
        cfg, bits = tiny(mimi=mimi_tiny(), num_layers=4), None
    else:
        cfg, bits = config_7b(), (None if args.bits == 16 else args.bits)
    t = cfg.lm.temporal
    if not args.skip_micro:
        attention_micro(t.num_layers, t.num_heads, t.context, t.head_dim, iters)

    t0 = time.perf_counter()
    model = random_model(cfg, bits=bits, seed=0)
    mx.eval(model.lm.parameters())
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    tokens = [int(x) for x in rng.integers(4, cfg.lm.text_card, 20)]
    label = "tiny" if args.small else f"7B {args.bits}-bit" if bits else "7B bfloat16"
    print(f"\n{label} random weights built in {build_s:.1f} s; dtype {model.lm.dtype}")

    # The default session first: its first step pays the kernel JIT (PTX cache cold or warm).
    order = sorted(VARIANTS, key=lambda v: (v[1], v[2]) != (default_mode(), default_align()))
    sessions = {}
    for name, mode, align in order:
        t0 = time.perf_counter()
        s = make_session(model, tokens, mode, align)
        created = time.perf_counter() - t0
        t0 = time.perf_counter()
        s.step(np.zeros(FRAME, np.float32))
        first = time.perf_counter() - t0
        if not sessions:
            warm = [f"{created:.2f}", f"{first:.2f}"]
        sessions[name] = s
    names = [v[0] for v in VARIANTS]
    default = order[0][0]

    positions = positions_for(t.context, sessions[default]._caches[0].windows)
    if args.small:
        positions = {"window (masked)": t.context // 2, f"full ring {t.context}": t.context + 3}
    # Every session has run the same steps so far: same rings, so the same logits are expected.
    diffs = same_logits([sessions[n] for n in names], list(positions.values()))
    table(
        "same state, max |logits diff| / max |logits| against 'bool' (0 on the CPU; on a GPU the "
        "attention kernels differ: ~1e-2 is bfloat16 noise)",
        list(positions),
        list(zip(names[1:], diffs, strict=True)),
    )
    t0 = time.perf_counter()
    sessions[default].warm_up()
    table(
        f"warm-up of the default session ({default}), seconds",
        ["session + prefill", "first step", "warm_up(all windows)"],
        [("", [*warm, f"{time.perf_counter() - t0:.2f}"])],
    )

    rows_t, rows_lm = [], []
    for where, position in positions.items():
        by = {n: session_phases(sessions[n], position, iters) for n in names}
        rows_t.append((where, [fmt(by[n]["temporal"]) for n in names]))
        rows_lm.append((where, [fmt(by[n]["LM step (step_codes)"]) for n in names]))
    table(f"temporal step ({t.num_layers} layers, one position), ms p50 / p90", names, rows_t)
    table("LM step (temporal + text + 8 depformer steps), ms p50 / p90", names, rows_lm)

    fixed = fixed_phases(sessions[default], iters)
    table(
        "window-independent phases, ms p50 / p90", ["ms"], [(k, [fmt(v)]) for k, v in fixed.items()]
    )

    first_window = next(iter(positions.values()))
    full_ring = list(positions.values())[-1]
    rows = []
    for n in names:
        cells = []
        for position, mimi_full in ((first_window, False), (full_ring, True)):
            ms = full_steps(sessions[n], position, mimi_full, iters)
            cells.append(f"{np.median(ms):.2f} / {np.percentile(ms, 99):.2f}")
        rows.append((n, cells))
    table(
        "full duplex step (encode + LM + decode, Session.step), ms p50 / p99",
        ["first window", "full ring (+Mimi full)"],
        rows,
    )

    mode, align = order[0][1], order[0][2]
    with Float32Norm():
        s32 = make_session(model, tokens, mode, align)
        by = session_phases(s32, first_window, iters)
    base = session_phases(sessions[default], first_window, iters)
    table(
        "RMSNorm: fused (used) vs input cast to float32 and back, first window, ms p50 / p90",
        ["fused", "float32 round trip"],
        [(k, [fmt(base[k]), fmt(by[k])]) for k in base],
    )

    counts = kernel_counts(sessions[default])
    table(
        "kernels per call (compiled graph, views excluded)",
        ["kernels"],
        [(k, [str(v)]) for k, v in counts.items()],
    )
    print(f"\npeak memory {mx.get_peak_memory() / 1e9:.2f} GB")
    now = len(list(Path(ptx).rglob("*.ptx"))) if Path(ptx).is_dir() else 0
    print(f"PTX cache: {cached} kernels at start, {now} at the end")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
