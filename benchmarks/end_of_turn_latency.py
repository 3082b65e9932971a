"""End of speech to end of turn on the test clips: the end-of-turn head against the 1 s silence rule.

    PYTHONPATH=. python benchmarks/end_of_turn_latency.py [--audio DIR] [--step-ms MS] [--seed N]

The head's probabilities are SYNTHETIC: the real STT weights (kyutai/stt-1b-en_fr-candle) are not
available here, so each clip gets a made-up head trace drawn from its speech (`head_trace`,
the model stated there). Everything after the trace is the app's own code, run as turn-based
listening runs it (personaplex_tui/conversation/turn.py): Silero VAD's `UtteranceSegmenter`
(the 1 s silence rule, the fallback) and `TurnEnder` with its `EndOfTurnDetector` (the head
smoothed over 3 frames, used only after speech and inside the VAD's utterance).

The true end of speech comes from the clip's energy, not from Silero: 10 ms windows within
40 dB of the clip's loudest are speech (the clips are clean synthetic speech with digital
silence between words); a turn is speech followed by at least 2 s of silence (the head's own
horizon), so a shorter gap is a pause inside the turn. Single clips are padded with 0.5 s of
silence in front and 3 s behind, so that the silence rule can fire; conversation.wav is used
as it is. Three clips are built from them: shipping.wav with a 0.7 s and a 1.3 s pause
inserted mid-sentence (before "tomorrow"), and a 0.2 s backchannel (the start of greeting.wav).

Latency here is the decision's: from the end of speech to the end of the 80 ms frame on which
the turn ends. The reply then starts after the utterance's frames and one reply frame have gone
through the model, the same work for both rules; `--step-ms` adds that at a given step time.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personaplex_tui.audio import FRAME_SAMPLES, SAMPLE_RATE
from personaplex_tui.audio.audio_file import read_audio
from personaplex_tui.audio.segmenter import UtteranceEnded, UtteranceSegmenter
from personaplex_tui.audio.vad import SileroVad
from personaplex_tui.conversation.end_of_turn import BY_HEAD, TurnEnder
from personaplex_tui.conversation.user_lane import UserLane

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE  # 80 ms
WINDOW_S = 0.01  # energy windows
SPEECH_DB = 40.0  # a window within this many dB of the clip's loudest is speech
TURN_GAP_S = 2.0  # silence at least this long ends a turn (head 2's horizon)
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared/audio")


@dataclass(frozen=True)
class HeadModel:
    """How the synthetic trace of head 2 (P(no one speaks over the next 2 s)) is drawn.

    Before anyone speaks: `idle`. While speaking: `speech`, reached `onset_lag` frames after
    speech starts (until then the previous value stays). After speech stops, the value stays at
    `speech` for `lag` frames, then rises linearly over `rise` frames to a plateau: `end` when
    the silence ends the turn (>= 2 s, or the clip's end), `pause` when speech resumes sooner.
    The head is thus assumed to tell a pause from an end (a semantic head) only as well as
    `pause` says: pause == end is a purely acoustic head. Gaussian noise of `noise` is added
    to every frame and the value clipped to [0.001, 0.999]. The same trace is given for all
    four heads (only head 2 is read)."""

    name: str
    lag: int = 2  # 160 ms before the head reacts to silence
    rise: int = 3  # then 240 ms to its plateau
    onset_lag: int = 1
    idle: float = 0.95
    speech: float = 0.03
    end: float = 0.9
    pause: float = 0.35
    noise: float = 0.04


SCENARIOS = (
    HeadModel("semantic"),  # reacts in 160 ms, a pause bumps to 0.35
    HeadModel("slow", lag=6),  # reacts only after 480 ms (the text stream's delay)
    HeadModel("acoustic", pause=0.9),  # cannot tell a pause from an end
)


def speech_windows(pcm: np.ndarray) -> np.ndarray:
    """One bool per 10 ms window: within `SPEECH_DB` of the loudest window."""
    w = round(WINDOW_S * SAMPLE_RATE)
    n = len(pcm) // w
    rms = np.sqrt(np.mean(np.square(pcm[: n * w].reshape(n, w)), axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    return db >= db.max() - SPEECH_DB


def true_turns(pcm: np.ndarray) -> list[tuple[float, float]]:
    """(start, end of speech) of each turn, in seconds."""
    idx = np.flatnonzero(speech_windows(pcm))
    if len(idx) == 0:
        return []
    turns, start, prev = [], idx[0], idx[0]
    for i in idx[1:]:
        if (i - prev - 1) * WINDOW_S >= TURN_GAP_S:
            turns.append((start * WINDOW_S, (prev + 1) * WINDOW_S))
            start = i
        prev = i
    turns.append((start * WINDOW_S, (prev + 1) * WINDOW_S))
    return turns


def frame_speech(pcm: np.ndarray) -> np.ndarray:
    """One bool per 80 ms frame: any speech window in it."""
    windows = speech_windows(pcm)
    per = round(FRAME_S / WINDOW_S)
    n = len(pcm) // FRAME_SAMPLES
    return np.array([windows[i * per : (i + 1) * per].any() for i in range(n)])


def head_trace(speech: np.ndarray, model: HeadModel, rng: np.random.Generator) -> np.ndarray:
    """Head 2's synthetic probability per frame, from the frames' speech flags (see HeadModel)."""
    n = len(speech)
    turn_gap = round(TURN_GAP_S / FRAME_S)
    p = np.empty(n)
    value, heard, run, silent = model.idle, False, 0, 0
    for i in range(n):
        if speech[i]:
            run += 1
            silent = 0
            if run > model.onset_lag:
                value = model.speech
            heard = True
        elif heard:
            run = 0
            silent += 1
            if silent == 1:  # how long is this silence? (the trace knows; the head guesses)
                rest = np.flatnonzero(speech[i:])
                gap = rest[0] if len(rest) else n - i
                plateau = model.end if gap >= turn_gap or not len(rest) else model.pause
            k = silent - model.lag
            value = model.speech + (plateau - model.speech) * min(1.0, max(0, k) / model.rise)
        p[i] = value
    return np.clip(p + rng.normal(0.0, model.noise, n), 0.001, 0.999)


@dataclass(frozen=True)
class _Heard:
    user_text_id: int
    user_text: str
    end_of_turn: tuple[float, ...]


class TraceHearing:
    """Stands for `model.stt.listener.Hearing`: the trace's value for each frame heard."""

    def __init__(self, trace: np.ndarray) -> None:
        self.trace = trace
        self.i = 0

    def reset(self) -> None:  # the trace runs on the clip's timeline, across turns
        pass

    def hear(self, pcm: np.ndarray) -> _Heard:
        p = float(self.trace[min(self.i, len(self.trace) - 1)])
        self.i += 1
        return _Heard(3, "", (p, p, p, p))


class _Listener:
    def __init__(self, hearing: TraceHearing) -> None:
        self._hearing = hearing

    def hearing(self, model: object) -> TraceHearing:
        return self._hearing


class _Model:
    def __init__(self, trace: np.ndarray) -> None:
        self.listener = _Listener(TraceHearing(trace))


@dataclass(frozen=True)
class TurnEnd:
    at_s: float  # the end of the frame on which the turn ended
    how: str
    frames: int  # the utterance's 80 ms frames sent to the model


def turn_ends(pcm: np.ndarray, vad: SileroVad, trace: np.ndarray | None) -> list[TurnEnd]:
    """Where turn-based listening ends turns on this clip: by the VAD's second of silence alone
    (`trace` None) or by the head first; listening starts over after each turn, as in the app."""
    model = _Model(trace) if trace is not None else object()
    ender = TurnEnder(lambda fn, *a: fn(*a), model, UserLane(lambda e: None), lambda e: None)
    segmenter = UtteranceSegmenter(vad)
    ends: list[TurnEnd] = []
    n = len(pcm) // FRAME_SAMPLES
    for i in range(n):
        frame = pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
        events = segmenter.feed(frame)
        now = (i + 1) * FRAME_S
        how = "silence"
        if ender.frame(frame, now - FRAME_S, segmenter.in_utterance):
            events += [e for e in segmenter.finish() if isinstance(e, UtteranceEnded)]
            how = BY_HEAD
        ended = [e for e in events if isinstance(e, UtteranceEnded)]
        if ended:
            ends.append(TurnEnd(now, how, -(-len(ended[0].audio) // FRAME_SAMPLES)))
            segmenter.reset()
            ender.reset()
    return ends


def padded(pcm: np.ndarray, before_s: float = 0.5, after_s: float = 3.0) -> np.ndarray:
    z = np.zeros
    return np.concatenate([z(round(before_s * SAMPLE_RATE), np.float32), pcm,
                           z(round(after_s * SAMPLE_RATE), np.float32)])  # fmt: skip


def with_pause(pcm: np.ndarray, pause_s: float) -> np.ndarray:
    """`pause_s` of silence inserted in the last gap between words (before the last word)."""
    windows = speech_windows(pcm)
    idx = np.flatnonzero(windows)
    gaps = [(a, b) for a, b in zip(idx[:-1], idx[1:], strict=True) if b - a > 1]
    a, b = gaps[-1]
    cut = round((a + 1 + b) / 2 * WINDOW_S * SAMPLE_RATE)
    silence = np.zeros(round(pause_s * SAMPLE_RATE), np.float32)
    return np.concatenate([pcm[:cut], silence, pcm[cut:]])


def clips(folder: Path) -> list[tuple[str, np.ndarray]]:
    """Every WAV of the folder (padded unless it is the conversation) and the built clips."""
    out = []
    for path in sorted(folder.glob("*.wav")):
        pcm = read_audio(path).pcm
        out.append((path.name, pcm if path.stem == "conversation" else padded(pcm)))
    shipping = read_audio(folder / "shipping.wav").pcm
    greeting = read_audio(folder / "greeting.wav").pcm
    for pause in (0.7, 1.3):
        out.append((f"shipping + {pause} s pause", padded(with_pause(shipping, pause))))
    start = np.flatnonzero(speech_windows(greeting))[0] * round(WINDOW_S * SAMPLE_RATE)
    out.append(("backchannel 0.2 s", padded(greeting[start : start + round(0.2 * SAMPLE_RATE)])))
    return out


@dataclass(frozen=True)
class Row:
    clip: str
    turn: int  # 1-based; 0: the clip has no turn
    speech_end_s: float | None
    head_end_s: float | None
    silence_end_s: float | None
    head_early: tuple[str, ...]  # how each turn end before the end of speech was decided
    silence_early: tuple[str, ...]  # (the user was cut off)
    head_frames: int = 0
    silence_frames: int = 0
    decided_by_head: bool = True

    @property
    def head_latency_s(self) -> float | None:
        return None if self.head_end_s is None else self.head_end_s - self.speech_end_s

    @property
    def silence_latency_s(self) -> float | None:
        return None if self.silence_end_s is None else self.silence_end_s - self.speech_end_s


def match(
    name: str, turns: list[tuple[float, float]], head: list[TurnEnd], silence: list[TurnEnd]
) -> list[Row]:
    """Each true turn with the first turn end of each rule after its end of speech (before the
    next turn starts), and the turn ends that came before its end of speech (cut-offs)."""
    if not turns or not (head or silence):
        stray = tuple(e.how for e in head), tuple(e.how for e in silence)  # ends with no turn
        return [Row(name, 0, None, None, None, *stray)]
    rows = []
    for k, (start, end) in enumerate(turns):
        upto = turns[k + 1][0] if k + 1 < len(turns) else float("inf")

        def first(ends: list[TurnEnd], start=start, end=end, upto=upto) -> TurnEnd | None:
            after = [e for e in ends if end < e.at_s <= upto]
            return after[0] if after else None

        def early(ends: list[TurnEnd], start=start, end=end) -> tuple[str, ...]:
            return tuple(e.how for e in ends if start < e.at_s <= end)

        h, s = first(head), first(silence)
        rows.append(Row(
            name, k + 1, end, h and h.at_s, s and s.at_s, early(head), early(silence),
            h.frames if h else 0, s.frames if s else 0, h is None or h.how == BY_HEAD,
        ))  # fmt: skip
    return rows


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _cuts(hows: tuple[str, ...]) -> str:
    """How many cut-offs, and which rule made them."""
    if not hows:
        return "0"
    return f"{len(hows)} ({', '.join('head' if h == BY_HEAD else 'VAD' for h in hows)})"


def table(rows: list[Row], step_ms: float) -> list[str]:
    reply = step_ms > 0
    head = ["clip", "turn", "end of speech s", "head: turn ends s", "latency s",
            "silence rule: turn ends s", "latency s", "cut off: head run / silence run"]  # fmt: skip
    if reply:
        head += [f"reply after, head s (+{step_ms:g} ms/step)", "reply after, silence s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        by = "" if r.decided_by_head or r.head_end_s is None else " (VAD)"
        cells = [r.clip, str(r.turn or "none"), _s(r.speech_end_s), _s(r.head_end_s) + by,
                 _s(r.head_latency_s), _s(r.silence_end_s), _s(r.silence_latency_s),
                 f"{_cuts(r.head_early)} / {_cuts(r.silence_early)}"]  # fmt: skip
        if reply:
            extra = [None, None]
            for j, (lat, frames) in enumerate(
                ((r.head_latency_s, r.head_frames), (r.silence_latency_s, r.silence_frames))
            ):
                if lat is not None:
                    extra[j] = lat + (frames + 1) * step_ms / 1000
            cells += [_s(extra[0]), _s(extra[1])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def evaluate(folder: Path, model: HeadModel, seed: int) -> list[Row]:
    vad = SileroVad()
    rows: list[Row] = []
    for k, (name, pcm) in enumerate(clips(folder)):
        rng = np.random.default_rng(seed + k)
        trace = head_trace(frame_speech(pcm), model, rng)
        head = turn_ends(pcm, vad, trace)
        silence = turn_ends(pcm, vad, None)
        rows += match(name, true_turns(pcm), head, silence)
    return rows


def summary(rows: list[Row]) -> str:
    both = [r for r in rows if r.head_latency_s is not None and r.silence_latency_s is not None]
    if not both:
        return "no turn ended by both rules"
    h = np.array([r.head_latency_s for r in both])
    s = np.array([r.silence_latency_s for r in both])
    cut = sum(len(r.head_early) for r in rows), sum(len(r.silence_early) for r in rows)
    by_head = sum(h == BY_HEAD for r in rows for h in r.head_early)
    return (
        f"{len(both)} turns: head median {np.median(h):.2f} s (max {h.max():.2f}), silence rule "
        f"median {np.median(s):.2f} s (max {s.max():.2f}); the head saves "
        f"{np.median(s - h):.2f} s per turn (median); users cut off: with the head {cut[0]} "
        f"({by_head} by the head itself), with the silence rule alone {cut[1]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = SHARED if SHARED.is_dir() else ROOT / "tests" / "data" / "audio"
    parser.add_argument("--audio", type=Path, default=default, help=f"(default {default})")
    parser.add_argument("--step-ms", type=float, default=0.0,
                        help="add the reply's model work at this step time (default: leave out)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the traces' noise (default 0)")
    parser.add_argument("--scenario", choices=[m.name for m in SCENARIOS], action="append",
                        help="the synthetic head models to run (default: all)")  # fmt: skip
    args = parser.parse_args()
    print("SYNTHETIC head traces (no real STT weights here): see the docstring for their model.")
    for model in SCENARIOS:
        if args.scenario and model.name not in args.scenario:
            continue
        rows = evaluate(args.audio, model, args.seed)
        print(f"\n### head model '{model.name}': {model}\n")
        print("\n".join(table(rows, args.step_ms)))
        print(f"\n{summary(rows)}")


if __name__ == "__main__":
    main()
