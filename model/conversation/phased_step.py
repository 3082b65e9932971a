"""A conversation step evaluated phase by phase, to time each phase (`Session.measure_phases`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from model.conversation.step_graphs import input_column
from model.conversation.step_stats import step_stats
from model.conversation.types import StepTimings
from model.lm.kv_cache import Window
from model.sampling import split_key


def step_phased(
    session: Any, pcm: mx.array, pos: mx.array, window: Window, full: bool, timings: StepTimings
) -> tuple:
    """`Session.step`'s graphs for `session` (a `Session`), each phase evaluated and timed
    into `timings` (a few syncs more than the live step; the same tokens). Returns (out, codes,
    user, text, agent, stats, heard), evaluated."""
    s, g = session, session._graphs

    def timed(attr: str, call: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = call()
        mx.eval(result, [c.state for c in s._caches])
        setattr(timings, attr, 1000 * (time.perf_counter() - t0))
        return result

    s._key, key = split_key(s._key)
    encode = s._encode(full)
    coded, s._enc_state = timed("encode_ms", lambda: encode(pcm, s._enc_state))
    user = coded[: s._n_q]
    heard = timed("stt_ms", lambda: s._listen_step(coded))
    column = input_column(s._text, s._agent, user, s._user_acoustic)
    temporal = g.temporal(window)
    logits, h = timed("temporal_ms", lambda: s._with_rings(temporal, column, pos))
    depformer = g.depformer(s._spec)
    text, agent = timed("depformer_ms", lambda: depformer(logits, h, key))
    codes = mx.concatenate([s._agent[:1], agent[1:]])
    decode = g.decode(full)
    out, s._dec_state = timed("decode_ms", lambda: decode(codes, s._dec_state))
    stats = step_stats(logits, h) if s.collect_stats else ()
    s._eval(out, codes, user, text, agent, stats, heard)
    return out, codes, user, text, agent, stats, heard
