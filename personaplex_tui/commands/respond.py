"""`ppx-tui respond`: answer one recorded question, to a WAV file or the speaker.

Runs headless (no textual); sounddevice is imported only to play when no --output is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from model.checkpoints.voice_presets import DEFAULT_VOICE
from model.config import FRAME_SAMPLES
from model.conversation.prompts import DEFAULT_PROMPT
from personaplex_tui.commands.common import (
    UsageError,
    add_model_arguments,
    add_sampling_arguments,
    mx_dtype,
    print_out,
    sampling_options,
    status,
)
from personaplex_tui.commands.paths import check_distinct, check_output_file, check_text
from personaplex_tui.commands.token_dump import TokenDump
from personaplex_tui.settings import MAX_STEPS_RANGE, PROMPT_TEXT_MAX_CHARS
from personaplex_tui.stop_signals import POLICY, Stopped, signal_name
from personaplex_tui.stt_loader import attach_stt
from personaplex_tui.user_transcript import add_stt_arguments, choice_from_args

RATE = 24000
MAX_STEPS_LIMIT = 3000  # one KV context of the 7B model (4 minutes)
MAX_CHUNK_S = 240.0  # a chunk longer than the longest reply is the whole reply
DEFAULT_CHUNK_S = 2.0
# Names whose suffix promises another format than the WAV that respond writes
OTHER_AUDIO_SUFFIXES = (".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aiff", ".aif")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "respond",
        help="answer a recorded question (WAV/FLAC) with the model's spoken reply",
        description="Feed a recorded utterance to PersonaPlex, then let it answer for "
        "--max-steps frames (80 ms each). Writes the reply to --output, or plays it.",
    )
    p.add_argument("--input", required=True, metavar="AUDIO", help="the question (WAV or FLAC)")
    p.add_argument("--output", metavar="WAV", help="write the reply here (default: play it)")
    p.add_argument("--voice", default=DEFAULT_VOICE, help="voice preset (see `ppx-tui voices`)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument(
        "--system-prompt",
        default=None,
        metavar="NAME",
        help=f"system-prompt preset ({DEFAULT_PROMPT})",
    )
    prompt.add_argument("--prompt-text", default=None, metavar="TEXT", help="free system prompt")
    p.add_argument(
        "--max-steps",
        type=int,
        default=75,
        help=f"reply length in 80 ms frames (75 = 6 s), 1-{MAX_STEPS_LIMIT}: up to one context, "
        f"where the chat's turns take {MAX_STEPS_RANGE[0]}-{MAX_STEPS_RANGE[1]}",
    )
    p.add_argument("--stream", action="store_true", help="write or play chunks as they come")
    p.add_argument(
        "--chunk-seconds", type=float, default=None, help="chunk length with --stream (2.0)"
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


DRAIN_LIMIT_S = 35.0  # the speaker's queue (30 s) and a margin
WRITE_LIMIT_S = 5.0  # a device that takes no 80 ms frame from a full queue in this long is stuck
CLOSE_TIMEOUT_S = 3.0  # PortAudio stops a stream in well under a second


class _Sink:
    """Where reply audio goes: an incrementally written WAV, or the speaker."""

    def __init__(self, output: str | None) -> None:
        self.output = output
        self.is_file = output is not None
        self.first_audio_s: float | None = None
        self._start = time.perf_counter()
        self._noise = contextlib.ExitStack()
        if output is not None:
            from personaplex_tui.audio import WavWriter

            self._writer = WavWriter(output, sample_rate=RATE)  # AudioFileError: one sentence
            self._speaker = None
        else:
            from personaplex_tui.audio import make_speaker
            from personaplex_tui.commands.device_noise import device_noise_to_log

            self._writer = None
            self._noise.enter_context(device_noise_to_log())  # PortAudio's lines: to the log
            try:
                self._speaker = make_speaker()
                self._speaker.start()
            except BaseException:
                self._noise.close()
                raise

    def write(self, pcm: np.ndarray) -> None:
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self._start
        if self._writer is not None:
            self._writer.write(pcm)
            return
        assert self._speaker is not None
        for i in range(0, pcm.size, FRAME_SAMPLES):  # waits for room: the reply plays whole
            deadline = time.monotonic() + WRITE_LIMIT_S
            while not self._speaker.write_frame(pcm[i : i + FRAME_SAMPLES], timeout=0.5):
                self._check_playing(stuck=time.monotonic() > deadline)

    def _check_playing(self, stuck: bool = False) -> None:
        """A device that stopped (unplugged, its server gone) never makes room: one sentence."""
        from personaplex_tui.audio import AudioDeviceError

        assert self._speaker is not None
        if stuck or not self._speaker.active:
            raise AudioDeviceError(
                "The output device stopped playing (unplugged, or its sound server quit or "
                "restarted?); give --output FILE to write the reply to a file instead."
            )

    @property
    def written_s(self) -> float | None:
        """Seconds in the output file (None when playing)."""
        return None if self._writer is None else self._writer.duration_s

    def close(self, drain: bool = True) -> None:
        """Finish the file, or play what is queued (`drain`) and close the speaker."""
        if self._writer is not None:
            self._writer.close()
        if self._speaker is not None:
            try:
                if drain:  # the queue holds 30 s at most: a device still busy after that is stuck
                    self._drain()
            finally:
                try:
                    self._close_speaker()
                finally:
                    self._noise.close()

    def _drain(self) -> None:
        """Play out what is queued. A stream that stays active but plays nothing (a sound
        server that hangs) is stuck once its queue has not shrunk for WRITE_LIMIT_S, not only
        after DRAIN_LIMIT_S."""
        assert self._speaker is not None
        self._speaker.flush()
        deadline = time.monotonic() + DRAIN_LIMIT_S
        left, moved = self._speaker.stats().buffered_frames, time.monotonic()
        while not self._speaker.drain(timeout=0.5):
            now, queued = time.monotonic(), self._speaker.stats().buffered_frames
            if queued < left:
                left, moved = queued, now
            self._check_playing(stuck=now > deadline or now - moved > WRITE_LIMIT_S)

    def _close_speaker(self) -> None:
        """A sound server that hangs (stopped, not dead) holds PortAudio's Pa_StopStream for
        good: after CLOSE_TIMEOUT_S the process ends without waiting for it (`stuck_exit`)."""
        from personaplex_tui.audio import AudioDeviceError
        from personaplex_tui.stuck_exit import run_in_time

        assert self._speaker is not None
        if not run_in_time(self._speaker.close, CLOSE_TIMEOUT_S, "respond-close"):
            if POLICY.received is None:  # (a stop signal's "interrupted." stays the last word)
                raise AudioDeviceError(
                    "The output device or its sound server stopped responding: its stream "
                    f"could not be closed within {CLOSE_TIMEOUT_S:.0f} s; restart the sound "
                    "server or replug the device, or give --output FILE to write the reply to a "
                    "file instead."
                )


def _validate(args: argparse.Namespace) -> None:
    if not 1 <= args.max_steps <= MAX_STEPS_LIMIT:
        raise UsageError(
            f"--max-steps must be between 1 and {MAX_STEPS_LIMIT} (one context), "
            f"not {args.max_steps}."
        )
    chunk_s = args.chunk_seconds if args.chunk_seconds is not None else DEFAULT_CHUNK_S
    if not (math.isfinite(chunk_s) and 0 < chunk_s <= MAX_CHUNK_S):
        raise UsageError(
            f"--chunk-seconds must be more than 0 and at most {MAX_CHUNK_S:g}, not {chunk_s}."
        )
    check_text(args.prompt_text, "--prompt-text")
    if args.prompt_text is not None and len(args.prompt_text) > PROMPT_TEXT_MAX_CHARS:
        raise UsageError(
            f"--prompt-text is too long ({len(args.prompt_text)} characters; at most "
            f"{PROMPT_TEXT_MAX_CHARS}, as in the chat)."
        )
    check_text(args.system_prompt, "--system-prompt")
    if args.system_prompt is not None and not args.system_prompt.strip():
        raise UsageError("--system-prompt is empty; give a preset (see `ppx-tui prompts`).")
    if args.chunk_seconds is not None and not args.stream:
        raise UsageError("--chunk-seconds sets the chunks of --stream; add --stream or drop it.")
    if args.output is not None and Path(args.output).suffix.lower() in OTHER_AUDIO_SUFFIXES:
        raise UsageError(
            f"respond writes WAV audio; give --output a .wav name, not {Path(args.output).name}."
        )
    check_text(args.voice, "--voice")


def _check_prompt_fits(tokens: int, voice_frames: int, context: int) -> None:
    """The prompt phase (voice, silence, system prompt, silence) must fit in the context."""
    from model.conversation.prompt_plan import SILENCE_FRAMES

    room = context - voice_frames - 2 * SILENCE_FRAMES
    if tokens > room:
        raise UsageError(
            f"The system prompt is {tokens} tokens long; with the voice prompt, at most {room} "
            f"fit in this model's context of {context} frames."
        )


def _check_speaker() -> None:
    """Without --output the reply is played: there must be a speaker (said before loading)."""
    from personaplex_tui.audio import AudioDeviceError, find_device

    try:
        find_device(None, "output")
    except AudioDeviceError as e:
        reason = str(e).split(";")[0].rstrip(".")
        raise UsageError(
            f"Cannot play the reply ({reason[:1].lower()}{reason[1:]}); "
            "give --output FILE.wav to write it to a file instead."
        ) from None


def run(args: argparse.Namespace) -> int:
    from model import load
    from model.conversation.prompts import CUSTOM_PROMPT, resolve_prompt
    from personaplex_tui.audio import read_audio
    from personaplex_tui.checkpoint_voices import check_voice, fetch_with_voice, local_checkpoint

    _validate(args)
    custom = args.prompt_text is not None
    chosen = sampling_options(args) | {
        "voice": args.voice,
        "prompt": CUSTOM_PROMPT if custom else args.system_prompt or DEFAULT_PROMPT,
        "prompt_text": args.prompt_text or "",
    }
    check_voice(args.model, args.voice)  # a voice the folder lacks fails before the model loads
    resolve_prompt(chosen["prompt"], chosen["prompt_text"])  # so does an unknown or empty prompt
    clip = read_audio(args.input)
    if clip.warning:
        status(f"warning: {clip.warning}")
    from model.conversation import replies

    # Longer than any PersonaPlex context (the checkpoint's own is checked again once loaded).
    replies.utterance_frames(clip.pcm, FRAME_SAMPLES, MAX_STEPS_LIMIT)
    # Every file this run writes can be written: checked now, not after minutes of loading.
    check_distinct(
        {"--input": args.input}, {"--output": args.output, "--dump-tokens": args.dump_tokens}
    )
    if args.output is not None:
        check_output_file(args.output, "the audio file", "--output", seekable=True)
    if args.dump_tokens is not None:
        check_output_file(args.dump_tokens, "the token dump", "--dump-tokens")
    if args.output is None:
        _check_speaker()
    status(f"Loading {args.model or 'the default model'}...")
    with POLICY.abrupt():  # (the hub's download threads: a Ctrl+C ends them with the process)
        if local_checkpoint(args.model) is None:  # a repo: its voices are known once fetched
            fetch_with_voice(args.model, args.voice)
        model = load(args.model, dtype=mx_dtype(args.dtype), quantize=args.quantize)
        listening = attach_stt(model, choice_from_args(args), status)
    user_words = _UserWords(model) if listening else None
    context = model.lm.config.temporal.context
    # Refuse what does not fit this model's context before the prompt phase runs.
    heard = len(replies.utterance_frames(clip.pcm, FRAME_SAMPLES, context))
    settings = model.default_settings(**chosen)  # the checkpoint's sampling, unless flags say
    voice = model.voice(args.voice)
    tokens = model.system_tokens(settings.prompt, settings.prompt_text)
    _check_prompt_fits(len(tokens), voice.frames, context)
    session = model.session(settings, system_tokens=tokens)
    sink = _Sink(args.output)
    try:
        dump = TokenDump(args.dump_tokens) if args.dump_tokens is not None else None
    except BaseException:
        sink.close()
        raise
    step_ms: list[float] = []
    text_ids: list[int] = []

    def on_frame(frame: Any) -> None:
        POLICY.check()  # a stop signal ends the reply here, between two steps
        step_ms.append(frame.timings.total_ms)
        text_ids.append(int(frame.text_id))
        if user_words is not None:
            user_words.feed(frame)
        if dump is not None:
            dump.write(frame)  # TokenDumpError: one sentence, the dump keeps whole lines

    # A WAV file grows frame by frame (Ctrl+C keeps a valid file of what was made); the
    # speaker gets chunks (--stream) or the whole reply.
    per_frame = sink.is_file

    def on_reply_frame(frame: Any) -> None:
        on_frame(frame)
        if per_frame and frame.index >= heard:
            sink.write(frame.pcm)

    start = time.perf_counter()
    stopped: Stopped | None = None
    transcript = ""
    try:
        with POLICY.deferred():  # a signal is acted on at the next frame (files stay whole)
            if args.stream:
                for chunk in replies.respond_stream(
                    session,
                    clip.pcm,
                    args.max_steps,
                    args.chunk_seconds or DEFAULT_CHUNK_S,
                    on_reply_frame,
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
    except Stopped as stop:
        stopped = stop
        tokenizer = model.tokenizer
        transcript = tokenizer.decode(text_ids) if tokenizer else ""
    finally:
        try:
            try:
                sink.close(drain=stopped is None)  # AudioDeviceError: a device that stopped
            finally:
                if dump is not None:
                    dump.close()
                POLICY.quiet()  # the files are finished: what was made is reported, below
        except Stopped as stop:  # as the files were finished (or the reply played out)
            stopped = stopped or stop
    elapsed = time.perf_counter() - start
    audio_s = (len(step_ms)) * FRAME_SAMPLES / RATE
    reply_steps = max(0, len(step_ms) - heard)
    if args.transcript:
        if user_words is not None:
            print_out(f"you: {user_words.text}")
        print_out(transcript)
    if args.json:
        meta = _metadata(args, model, session, clip, transcript, step_ms, elapsed, audio_s, sink)
        stop_signal = stopped.signum if stopped else POLICY.settle()  # (main exits by it)
        meta["stopped_by"] = signal_name(stop_signal) if stop_signal else None
        meta["reply_steps_made"] = reply_steps
        meta["user_transcript"] = user_words.as_json() if user_words is not None else None
        print_out(json.dumps(meta, indent=2))
    else:
        if args.stream and sink.first_audio_s is not None:
            status(f"First audio after {sink.first_audio_s:.2f} s.")
        if sink.written_s is not None:
            status(f"Wrote {sink.written_s:.2f} s of reply to {args.output}.")
    if stopped is not None:
        raise stopped  # `main` says so and exits 128 + the signal's number
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
            "lag_s": round(self._lag * FRAME_SAMPLES / RATE, 3),
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
        "prompt": args.prompt_text or args.system_prompt or DEFAULT_PROMPT,
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
