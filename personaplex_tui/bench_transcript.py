"""`ppx-tui bench` rows for the step with the user's transcript on, side by side with it off.

The STT is Kyutai's (`--stt-model`, loaded as the chat loads it) for a real checkpoint, or random
weights of its published shape (1B, 4 end-of-turn heads; a tiny one with `--small`). Two
sessions of the same model, one transcribing and one not, step the same audio alternately, so
both see the same machine state; the cost is the ratio of their medians.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from personaplex_tui.kernels_in_use import stt_kernels
from personaplex_tui.stt_loader import attach_stt
from personaplex_tui.user_transcript import SttChoice, stt_bits


def time_transcript(
    model: Any,
    make_session: Callable[..., Any],
    audio: list[np.ndarray],
    opts: Any,
    progress: Callable[[str], None],
    stats_of: Callable[[list[float]], Any],
    fill: Callable[[Any], Any] = lambda session: None,
) -> dict[str, Any]:
    """{"model", "step_ms_off", "step_ms_on", "listening_frame_ms" (Stats as dicts), "stt_ms"
    (phase p50), "cost_pct", "load_s", "warm_up_s"}, or {"error": one sentence} when the STT
    model cannot be loaded. `fill` is called on each timed session after its warm-up (the
    bench's `--full-ring` steps it to a full context there)."""
    from dataclasses import asdict

    progress("loading the speech-to-text model")
    start = time.perf_counter()
    if opts.random_weights or opts.small:
        from model.stt.random_listener import random_listener, tiny_stt_config

        config = tiny_stt_config() if opts.small else None
        from model.backend import on_cuda

        bits = None if opts.small else stt_bits(opts.stt_quantize, on_cuda())
        model.listener = random_listener(model, config, bits=bits, seed=opts.seed)
    else:
        notes: list[str] = []
        choice = SttChoice(True, opts.stt_model, opts.stt_quantize)
        if not attach_stt(model, choice, notes.append):
            return {"error": notes[0] if notes else "The STT model could not be loaded."}
    load_s = time.perf_counter() - start
    progress(f"timing {opts.steps} steps with the transcript on and off")
    start = time.perf_counter()
    on, off = make_session(transcribe_user=True), make_session(transcribe_user=False)
    for session in (on, off):
        session.warm_up()
        for pcm in audio[: opts.warmup_steps]:
            session.step(pcm)
        fill(session)
    warm_s = time.perf_counter() - start
    on_ms, off_ms = [], []
    for pcm in audio[: opts.steps]:
        off_ms.append(off.step(pcm).timings.total_ms)
        on_ms.append(on.step(pcm).timings.total_ms)
    result: dict[str, Any] = {
        "model": model.listener.source,
        "stt_kernels": stt_kernels(model),
        "step_ms_off": asdict(stats_of(off_ms)),
        "step_ms_on": asdict(stats_of(on_ms)),
        "load_s": round(load_s, 3),  # the STT's load (and its kernels' checks)
        "warm_up_s": round(warm_s, 3),  # its graphs' and the transcribing session's warm-up
    }
    off_p50, on_p50 = result["step_ms_off"]["p50"], result["step_ms_on"]["p50"]
    result["cost_pct"] = round(100 * (on_p50 / off_p50 - 1), 1) if off_p50 else None
    # turn-based listening: the STT alone on each mic frame (`Hearing`), between replies
    hearing = model.listener.hearing(model)
    hearing.warm_up()
    heard_ms = []
    for pcm in audio[: opts.steps]:
        start = time.perf_counter()
        hearing.hear(pcm)
        heard_ms.append(1000 * (time.perf_counter() - start))
    result["listening_frame_ms"] = asdict(stats_of(heard_ms[2:] or heard_ms))
    if opts.phases:
        phased = make_session(transcribe_user=True, measure_phases=True)
        phased.warm_up()
        fill(phased)
        timings = [phased.step(pcm).timings for pcm in audio[: min(max(opts.steps, 10), 60)]][5:]
        result["stt_ms"] = round(float(np.median([t.stt_ms for t in timings])), 3)
    return result


def transcript_rows(transcript: dict[str, Any]) -> list[tuple[str, str]]:
    """The table rows of `time_transcript`'s result."""
    if not transcript:
        return []
    if "error" in transcript:
        return [("user transcript", transcript["error"])]
    rows = []
    for key, label in (("step_ms_off", "off"), ("step_ms_on", "on")):
        s = transcript[key]
        rows.append(
            (
                f"step, user transcript {label} (n={s['n']})",
                f"p50 {s['p50']:.2f} · p90 {s['p90']:.2f} · p99 {s['p99']:.2f} · max {s['max']:.2f} ms",
            )
        )
    if transcript.get("cost_pct") is not None:
        rows.append(("  transcript cost (p50)", f"{transcript['cost_pct']:+.1f} %"))
    if "stt_ms" in transcript:
        rows.append(("  phase: stt", f"{transcript['stt_ms']:.2f} ms"))
    if "listening_frame_ms" in transcript:
        s = transcript["listening_frame_ms"]
        rows.append(
            (
                "turn-based listening, STT alone per frame",
                f"p50 {s['p50']:.2f} · p90 {s['p90']:.2f} ms",
            )
        )
    rows.append(("  STT model", str(transcript["model"])))
    if "stt_kernels" in transcript:
        rows.append(("  STT step runs on", str(transcript["stt_kernels"])))
    return rows
