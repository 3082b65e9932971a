"""`ppx-tui bench --turn`: how long from the end of a user's turn to the first reply sample played."""

from __future__ import annotations

import time

import numpy as np

from model.config import FRAME_SAMPLES
from model.conversation.session import Session

SILENCE_RULE_MS = 1000.0  # turn-based mode's VAD fallback: a second of silence ends the turn


def turn_latency(
    session: Session, utterance: list[np.ndarray], prebuffer: int = 3
) -> dict[str, float]:
    """From the utterance's last frame handed to a warmed `session` to the first reply sample
    played, in ms (medians), and the turn-based app's path from the end of speech.

    Playback starts once `prebuffer` reply frames are queued, so the latency is the last
    utterance step plus `prebuffer` reply steps (80 ms frames produced faster than real time).
    """
    silence = np.zeros(FRAME_SAMPLES, np.float32)
    results = []
    for _ in range(5):
        for pcm in utterance[:-1]:
            session.step(pcm)
        t = time.perf_counter()
        session.step(utterance[-1])
        first = None
        for i in range(prebuffer):
            session.step(silence)
            if i == 0:
                first = time.perf_counter() - t
        results.append((first, time.perf_counter() - t))
        for _ in range(10):
            session.step(silence)
    first_ms = float(np.median([r[0] for r in results])) * 1000
    played_ms = float(np.median([r[1] for r in results])) * 1000
    # What the app does once the turn has ended: step the whole utterance, then the first reply
    # frame; from the end of speech, the VAD's rule first waits its second of silence.
    after = []
    for _ in range(3):
        t = time.perf_counter()
        for pcm in utterance:
            session.step(pcm)
        session.step(silence)
        after.append(time.perf_counter() - t)
    after_ms = float(np.median(after)) * 1000
    return {
        "first_reply_frame_ms": round(first_ms, 3),
        "first_sample_played_ms": round(played_ms, 3),
        f"utterance_{len(utterance)}_frames_then_first_reply_frame_ms": round(after_ms, 3),
        "end_of_speech_to_reply_silence_rule_ms": round(SILENCE_RULE_MS + after_ms, 3),
    }
