"""The warm-up's jobs of a session: every step graph its next steps will use, each run once."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import mlx.core as mx

from model.conversation.step_graphs import input_column
from model.lm.kv_cache import Window


def window_name(window: Window) -> str:
    return f"window {window.length}{' masked' if window.masked else ''}"


def graphs_ahead(session: Any) -> list[tuple[Window, bool]]:
    """(attention window, Mimi caches full) of every step graph the next steps will use."""
    cache, full_after = session._caches[0], session.model.mimi.model.full_after
    offset, frames, keys = cache.offset, session._mimi_frames, []
    while True:
        key = (cache.window_at(offset), full_after(frames))
        if key not in keys:
            keys.append(key)
        if not key[0].masked and key[1]:
            return keys
        offset, frames = offset + 1, frames + 1


def compiled_warm_jobs(session: Any) -> list[tuple[str, Callable[[], None]]]:
    """(name, run it once) of each graph of `session` (a `Session`) that has not run yet, in
    the order of use; each runs on the session's current state and changes none of it."""
    s = session
    g, jobs, queued = s._graphs, [], []

    def add(name: str, fn: Callable, *args: Any, call: Callable | None = None) -> None:
        if not g.has_run(fn) and not any(fn is f for f in queued):
            queued.append(fn)
            jobs.append((name, partial(g.warm, name, fn, *args, call=call)))

    pos = mx.array(s.position, dtype=mx.int32)
    key = mx.random.key(0)
    pcm = mx.zeros((s.frame_size,), dtype=mx.float32)
    user = mx.zeros((s._n_q,), dtype=mx.int32)
    for window, full in graphs_ahead(s):
        mimi = f"Mimi {'full' if full else 'filling'}"
        add(f"encode ({mimi})", s._encode(full), pcm, s._enc_state)
        add(f"decode ({mimi})", g.decode(full), user, s._dec_state)
        where = window_name(window)
        if s.measure_phases:
            column = input_column(s._text, s._agent, user, s._user_acoustic)
            add(f"temporal ({where})", g.temporal(window), column, pos, call=s._with_rings)
            add("depformer", g.depformer(s._spec), *_dummy_temporal_out(s), key)
        else:
            lm = (s._text, s._agent, s._user_acoustic)
            lm_step = g.lm_step(s._spec, window)
            add(f"LM step ({where})", lm_step, user, *lm, pos, key, call=s._with_rings)
    if s._listen is not None:
        for window in s._listen.windows_to_warm():
            run = partial(s._listen.warm_window, window)
            jobs.append((f"speech-to-text ({window_name(window)})", run))
    return jobs


def _dummy_temporal_out(session: Any) -> tuple[mx.array, mx.array]:
    """Zero logits and h shaped as the temporal step returns them (to warm the depformer)."""
    lm = session.model.lm
    logits = mx.zeros((1, 1, lm.config.text_card), dtype=lm.dtype)
    return logits, mx.zeros((1, 1, lm.config.temporal.d_model), dtype=lm.dtype)
