"""`ppx-tui respond`: answer one recorded question, to a WAV file or the speaker.

Runs headless (no textual); sounddevice is imported only to play when no --output is given.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from personaplex_tui.commands.common import (
    UsageError,
    add_model_arguments,
    add_sampling_arguments,
    mx_dtype,
    sampling_options,
    status,
)
from personaplex_tui.stt_loader import attach_stt
from personaplex_tui.user_transcript import add_stt_arguments, choice_from_args

FRAME = 1920
RATE = 24000


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "respond",
        help="answer a recorded question (WAV/FLAC) with the model's spoken reply",
        description="Feed a recorded utterance to PersonaPlex, then let it answer for "
        "--max-steps frames (80 ms each). Writes the reply to --output, or plays it.",
    )
    p.add_argument("--input", required=True, metavar="AUDIO", help="the question (WAV or FLAC)")
    p.add_argument("--output", metavar="WAV", help="write the reply here (default: play it)")
    p.add_argument("--voice", default="NATF2", help="voice preset (see `ppx-tui voices`)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument(
        "--system-prompt", default=None, metavar="NAME", help="system-prompt preset (assistant)"
    )
    prompt.add_argument("--prompt-text", default=None, metavar="TEXT", help="free system prompt")
    p.add_argument(
        "--max-steps", type=int, default=75, help="reply length in 80 ms frames (75 = 6 s)"
    )
    p.add_argument("--stream", action="store_true", help="write or play chunks as they come")
    p.add_argument(
        "--chunk-seconds", type=float, default=2.0, help="chunk length with --stream (2.0)"
    )
    p.add_argument("--transcript", action="store_true", help="print the inner monologue")
    p.add_argument("--json", action="store_true", help="print metadata and timings as JSON")
    p.add_argument(
        "--dump-tokens",
        metavar="FILE.jsonl",
        help="write every frame's tokens: {frame, text, agent[8], user[8]}",
    )
    add_sampling_arguments(p)
    add_model_arguments(p)
    add_stt_arguments(p, with_defaults=True)
    p.set_defaults(handler=run)


class _Sink:
    """Where reply audio goes: an incrementally written WAV, or the speaker."""

    def __init__(self, output: str | None) -> None:
        self.output = output
        self.is_file = bool(output)
        self.first_audio_s: float | None = None
        self._start = time.perf_counter()
        if output:
            from personaplex_tui.audio import WavWriter

            self._writer = WavWriter(output, sample_rate=RATE)  # AudioFileError: one sentence
            self._speaker = None
        else:
            from personaplex_tui.audio import make_speaker

            self._writer = None
            self._speaker = make_speaker()
            self._speaker.start()

    def write(self, pcm: np.ndarray) -> None:
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self._start
        if self._writer is not None:
            self._writer.write(pcm)
            return
        assert self._speaker is not None
        for i in range(0, pcm.size, FRAME):
            self._speaker.write_frame(pcm[i : i + FRAME], timeout=None)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._speaker is not None:
            self._speaker.flush()
            self._speaker.drain(timeout=None)
            self._speaker.close()


def _open_dump(path: str) -> Any:
    try:
        return open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in run()
    except OSError as e:
        raise UsageError(f"Cannot write the token dump {path}: {e.strerror or e}.") from None


def _validate(args: argparse.Namespace) -> None:
    if not 1 <= args.max_steps <= 3000:
        raise UsageError(f"--max-steps must be between 1 and 3000, not {args.max_steps}.")
    if args.chunk_seconds <= 0:
        raise UsageError(f"--chunk-seconds must be positive, not {args.chunk_seconds}.")


def run(args: argparse.Namespace) -> int:
    from model import load
    from model.prompts import resolve_prompt
    from personaplex_tui.audio import read_audio
    from personaplex_tui.checkpoint_voices import check_voice, fetch_with_voice, local_checkpoint

    _validate(args)
    options = sampling_options(args)
    check_voice(args.model, args.voice)  # a voice the folder lacks fails before the model loads
    resolve_prompt(args.system_prompt, args.prompt_text)  # so does an unknown or empty prompt
    clip = read_audio(args.input)
    if clip.warning:
        status(f"warning: {clip.warning}")
    status(f"Loading {args.model or 'the default model'}...")
    if local_checkpoint(args.model) is None:  # a repo: its voices are known once it is fetched
        fetch_with_voice(args.model, args.voice)
    model = load(args.model, dtype=mx_dtype(args.dtype), quantize=args.quantize)
    heard = _UserWords(model) if attach_stt(model, choice_from_args(args), status) else None
    session = model.session(args.voice, args.system_prompt, args.prompt_text, **options)

    dump = _open_dump(args.dump_tokens) if args.dump_tokens else None
    step_ms: list[float] = []

    def on_frame(frame: Any) -> None:
        step_ms.append(frame.timings.total_ms)
        if heard is not None:
            heard.feed(frame)
        if dump is not None:
            record = {
                "frame": frame.index,
                "text": frame.text_id,
                "agent": [int(c) for c in frame.agent_codes],
                "user": [int(c) for c in frame.user_codes],
            }
            dump.write(json.dumps(record) + "\n")

    from model import replies

    # Refuse unusable audio (too long for the context...) before anything is written.
    utterance = len(
        replies.utterance_frames(clip.pcm, session.frame_size, model.lm.config.temporal.context)
    )
    sink = _Sink(args.output)
    # A WAV file grows frame by frame (Ctrl+C keeps a valid file of what was made); the
    # speaker gets chunks (--stream) or the whole reply.
    per_frame = sink.is_file

    def on_reply_frame(frame: Any) -> None:
        on_frame(frame)
        if per_frame and frame.index >= utterance:
            sink.write(frame.pcm)

    start = time.perf_counter()
    try:
        if args.stream:
            transcript = ""
            for chunk in replies.respond_stream(
                session, clip.pcm, args.max_steps, args.chunk_seconds, on_reply_frame
            ):
                if not per_frame:
                    sink.write(chunk.audio)
                if chunk.final:
                    transcript = chunk.transcript
        else:
            reply = replies.respond(session, clip.pcm, args.max_steps, on_reply_frame)
            if not per_frame:
                sink.write(reply.audio)
            transcript = reply.text
    finally:
        sink.close()
        if dump is not None:
            dump.close()
    elapsed = time.perf_counter() - start
    audio_s = (len(step_ms)) * FRAME / RATE
    if args.transcript:
        if heard is not None:
            print(f"you: {heard.text}")
        print(transcript)
    if args.json:
        meta = _metadata(args, model, session, clip, transcript, step_ms, elapsed, audio_s, sink)
        meta["user_transcript"] = heard.as_json() if heard is not None else None
        print(json.dumps(meta, indent=2))
    else:
        if args.stream and sink.first_audio_s is not None:
            status(f"First audio after {sink.first_audio_s:.2f} s.")
        if args.output:
            status(f"Wrote {args.max_steps * FRAME / RATE:.2f} s of reply to {args.output}.")
    return 0


class _UserWords:
    """The user's transcript of a reply (the STT's token of every frame, question and reply)."""

    def __init__(self, model: Any) -> None:
        from model.stt.words import TranscriptBuilder

        self.source = model.listener.source
        self._lag = model.listener.config.delay_frames
        self._words = TranscriptBuilder(model.listener.piece, lag_frames=self._lag)

    def feed(self, frame: Any) -> None:
        if frame.user_text_id is not None:
            self._words.feed(frame.index, frame.user_text_id)

    @property
    def text(self) -> str:
        return self._words.text

    def as_json(self) -> dict[str, Any]:
        words = self._words.finish()
        return {
            "model": self.source,
            "text": self.text,
            "lag_s": round(self._lag * FRAME / RATE, 3),
            "words": [{"text": w.text, "start_s": w.start_s, "end_s": w.end_s} for w in words],
        }


def _metadata(
    args, model, session, clip, transcript, step_ms, elapsed, audio_s, sink
) -> dict[str, Any]:
    steps = np.array(step_ms) if step_ms else np.zeros(1)
    return {
        "model": model.source,
        "quantization": model.quantization,
        "voice": session.voice.name if session.voice else None,
        "prompt": args.prompt_text or args.system_prompt or "assistant",
        "input": str(args.input),
        "input_seconds": round(clip.duration_s, 3),
        "output": args.output,
        "steps": len(step_ms),
        "reply_steps": args.max_steps,
        "timings": {
            "load_s": round(model.load_times.total_s, 3),
            "prefill_ms": round(session.prefill_ms, 2),
            "step_ms_p50": round(float(np.percentile(steps, 50)), 2),
            "step_ms_p90": round(float(np.percentile(steps, 90)), 2),
            "step_ms_max": round(float(steps.max()), 2),
            "generate_s": round(elapsed, 3),
            "first_audio_s": round(sink.first_audio_s, 3) if sink.first_audio_s else None,
        },
        "rtf": round(elapsed / audio_s, 3) if audio_s else None,
        "seed": session.seed,
        "transcript": transcript,
    }
