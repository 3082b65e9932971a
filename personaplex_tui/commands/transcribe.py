"""`ppx-tui transcribe`: the words of a recording, printed as they stream out of Kyutai's STT.

Headless (no textual, no sound card). The text of each 80 ms frame is printed as soon as the
frame is done, about 0.5 s behind the voice; silent frames at the end flush the last words.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import numpy as np

from personaplex_tui.commands.common import model_name, print_out, status
from personaplex_tui.commands.paths import check_distinct, check_output_file
from personaplex_tui.commands.token_dump import TokenDump
from personaplex_tui.stop_signals import POLICY, Stopped, signal_name
from personaplex_tui.user_transcript import STT_FLAG, STT_QUANTIZE, STT_QUANTIZE_HELP, stt_bits


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe a recording (WAV/FLAC) with Kyutai's streaming STT",
        description="Stream a recording through Mimi (32 codebooks) and Kyutai STT 1B "
        "(English and French), printing the words as they come, about 0.5 s behind the voice.",
    )
    p.add_argument("--input", required=True, metavar="AUDIO", help="the recording (WAV or FLAC)")
    p.add_argument("--json", action="store_true", help="print the text, words and timings as JSON")
    p.add_argument(
        "--dump-tokens",
        metavar="FILE.jsonl",
        help="write every frame: {frame, text_token, audio[32], end_of_turn[heads]}",
    )
    add_stt_arguments(p)
    p.set_defaults(handler=run)


def add_stt_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--stt-model and --stt-quantize (shared with the commands that transcribe the user)."""
    p.add_argument(
        "--stt-model",
        metavar="REPO_OR_DIR",
        type=model_name,
        default=None,
        help="Hugging Face repo id or local folder of the STT model (default: kyutai/stt-1b-en_fr; "
        "kyutai/stt-1b-en_fr-candle adds the end-of-turn heads)",
    )
    p.add_argument(
        "--stt-quantize", type=int, choices=STT_QUANTIZE, default=None, help=STT_QUANTIZE_HELP
    )


def run(args: argparse.Namespace) -> int:
    from model.backend import on_cuda
    from model.stt import DEFAULT_STT_MODEL, load_stt
    from model.stt.transcribe import transcribe_frames
    from model.stt.words import TranscriptBuilder
    from personaplex_tui.audio import read_audio

    clip = read_audio(args.input)  # an unusable file fails before the model loads
    if clip.warning:
        status(f"warning: {clip.warning}")
    if args.dump_tokens is not None:  # so does a dump that cannot be written
        check_distinct({"--input": args.input}, {"--dump-tokens": args.dump_tokens})
        check_output_file(args.dump_tokens, "the token dump", "--dump-tokens")
    status(f"Loading {args.stt_model or DEFAULT_STT_MODEL}...")
    start = time.perf_counter()
    stt = load_stt(args.stt_model, quantize=stt_bits(args.stt_quantize, on_cuda()), flag=STT_FLAG)
    load_s = time.perf_counter() - start
    dump = TokenDump(args.dump_tokens) if args.dump_tokens is not None else None
    cfg = stt.config
    # word times: frames less the text's delay and the silence prefix fed before the audio
    lag = cfg.delay_frames + round(cfg.audio_silence_prefix_seconds * 12.5)
    builder = TranscriptBuilder(
        stt.tokenizer.piece, lag_frames=lag, pad_id=cfg.text_pad_id, epad_id=cfg.text_epad_id
    )
    step_ms: list[float] = []
    stopped: Stopped | None = None
    start = time.perf_counter()
    try:
        with POLICY.deferred():  # a signal stops it between two frames: what was heard is printed
            try:
                for frame in transcribe_frames(stt, clip.pcm):
                    POLICY.check()
                    step_ms.append(frame.step_ms)
                    if dump is not None:  # TokenDumpError: one sentence, the dump keeps whole lines
                        dump.write_record(
                            {
                                "frame": frame.index,
                                "text_token": frame.text_token,
                                "audio": [int(c) for c in frame.codes],
                                "end_of_turn": [round(p, 6) for p in frame.end_of_turn],
                            }
                        )
                    added = builder.feed(frame.index, frame.text_token)
                    if added and not args.json:
                        print_out(added, end="")  # OutputError: one sentence (`> /dev/full`)
            finally:
                POLICY.quiet()  # the work is over: what was heard is reported, whatever comes
    except Stopped as stop:
        stopped = stop
    finally:
        if dump is not None:
            dump.close()
    elapsed = time.perf_counter() - start
    words = builder.finish()
    stop_signal = stopped.signum if stopped else POLICY.settle()  # (main exits by it)
    if args.json:
        steps = np.array(step_ms) if step_ms else np.zeros(1)
        out = {
            "model": args.stt_model or DEFAULT_STT_MODEL,
            "folder": str(stt.folder),
            "input": str(args.input),
            "input_seconds": round(clip.duration_s, 3),
            "frames": len(step_ms),
            "text": builder.text,
            "words": [asdict(w) for w in words],
            "end_of_turn_heads": stt.config.extra_heads,
            "timings": {
                "load_s": round(load_s, 3),
                "step_ms_p50": round(float(np.percentile(steps, 50)), 2),
                "step_ms_p90": round(float(np.percentile(steps, 90)), 2),
                "transcribe_s": round(elapsed, 3),
            },
            "rtf": round(elapsed / clip.duration_s, 3) if clip.duration_s else None,
            "stopped_by": signal_name(stop_signal) if stop_signal else None,
        }
        print_out(json.dumps(out, indent=2))
    else:
        print_out("")
        if stopped is None:
            status(f"Transcribed {clip.duration_s:.2f} s in {elapsed:.2f} s.")
    if stopped is not None:
        raise stopped  # `main` says so and exits 128 + the signal's number
    return 0
