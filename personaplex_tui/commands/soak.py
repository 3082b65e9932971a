"""`ppx-tui soak`: an hour of full duplex faster than real time; memory curve, counts and errors.

Exits 0 when every frame went in and out, nothing failed and memory stayed flat; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

from rich.console import RenderableType

from model.checkpoints.voice_presets import DEFAULT_VOICE
from model.conversation.prompts import DEFAULT_PROMPT
from personaplex_tui.commands.common import (
    UsageError,
    add_model_arguments,
    add_sampling_arguments,
    print_out,
    sampling_options,
    status,
)
from personaplex_tui.commands.measure_table import MeasureTable
from personaplex_tui.commands.paths import check_output_folder
from personaplex_tui.stop_signals import POLICY, Stopped, signal_name

MAX_FRAMES = 4_500_000  # 100 hours of conversation


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "soak",
        help="a long full-duplex session faster than real time: memory curve, counts, errors",
        description="Run full duplex for --frames frames (45000 = one hour) as fast as the "
        "model goes: a file looped as the microphone, the speaker and the recording written to "
        "disk, through the real engine and controller. Prints the memory curve, frames in/out, "
        "errors and speed; exits 1 if a frame was lost, an error occurred or memory grew.",
    )
    p.add_argument("--frames", type=int, default=45000, help="80 ms frames to run (45000 = 1 h)")
    p.add_argument(
        "--context",
        type=int,
        default=None,
        help="temporal context of the small random model, in frames (3000, as the 7B)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights of the exact 7B shape instead of the small model (a GPU run)",
    )
    p.add_argument(
        "--bits",
        type=int,
        choices=(4, 8, 16),
        default=None,
        help="with --random-weights: 4, 8 or 16 (= bfloat16) (4)",
    )
    p.add_argument(
        "--max-step-ms",
        type=float,
        default=None,
        metavar="MS",
        help="fail if any live step takes longer (default: only report; 80 = real time)",
    )
    p.add_argument("--every", type=int, default=2500, help="a memory sample every N frames (2500)")
    p.add_argument(
        "--settle",
        type=int,
        default=None,
        help="frames after which memory must stay flat (3000, or half of --frames if shorter)",
    )
    p.add_argument(
        "--max-growth-mb",
        type=float,
        default=32.0,
        help="allowed growth of MLX active memory and of RSS after --settle, in MiB (32)",
    )
    p.add_argument("--input", metavar="AUDIO", help="audio looped as the microphone (WAV/FLAC)")
    p.add_argument("--record-dir", metavar="DIR", help="keep the recording and speaker WAV here")
    p.add_argument("--voice", help=f"voice preset, with --model ({DEFAULT_VOICE})")
    p.add_argument(
        "--system-prompt", metavar="NAME", help=f"prompt preset, with --model ({DEFAULT_PROMPT})"
    )
    p.add_argument("--voice-frames", type=int, help="random model: voice prompt (50)")
    p.add_argument("--prompt-tokens", type=int, help="random model: prompt tokens (20)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_sampling_arguments(p)
    add_model_arguments(p, default="a small random model; --random-weights: the 7B shape")
    p.set_defaults(handler=run)


@dataclass(frozen=True)
class PromptSizes:
    """The random model's prompt sizes as run: the flags, or `SoakOptions`' defaults."""

    voice_frames: int
    prompt_tokens: int

    @classmethod
    def of(cls, args: argparse.Namespace) -> PromptSizes:
        from personaplex_tui.soak import SoakOptions

        voice, tokens = args.voice_frames, args.prompt_tokens
        return cls(
            SoakOptions.voice_frames if voice is None else voice,
            SoakOptions.prompt_tokens if tokens is None else tokens,
        )


def _options(args: argparse.Namespace):
    from model.conversation.prompts import resolve_prompt
    from model.conversation.session_settings import SessionSettings
    from personaplex_tui.checkpoint_voices import check_voice
    from personaplex_tui.soak import SoakOptions

    checks = [
        (
            not (args.model and value is not None),
            f"{flag} is for a random model; a --model checkpoint brings its own voice and "
            "system prompt.",
        )
        for flag, value in (
            ("--voice-frames", args.voice_frames),
            ("--prompt-tokens", args.prompt_tokens),
        )
    ]
    sizes = PromptSizes.of(args)
    checks += [
        (
            1 <= args.frames <= MAX_FRAMES,
            f"--frames must be between 1 and {MAX_FRAMES}, not {args.frames}.",
        ),
        (args.every >= 1, f"--every must be at least 1, not {args.every}."),
        (args.max_growth_mb > 0, f"--max-growth-mb must be positive, not {args.max_growth_mb}."),
        (
            0 <= sizes.voice_frames <= 1000,
            f"--voice-frames must be between 0 and 1000, not {sizes.voice_frames}.",
        ),
        (
            0 <= sizes.prompt_tokens <= 1000,
            f"--prompt-tokens must be between 0 and 1000, not {sizes.prompt_tokens}.",
        ),
    ]
    if args.context is not None:
        checks.append(
            (
                1 <= args.context <= 100_000,
                f"--context must be between 1 and 100000 frames, not {args.context}.",
            )
        )
        checks.append(
            (
                not args.model,
                "--context sets the random model's context; with --model the checkpoint's is used.",
            )
        )
    checks.append(
        (
            not (args.random_weights and args.model),
            "--random-weights and --model are two different models; give one of them.",
        )
    )
    if args.bits is not None and not args.random_weights:
        checks.append((False, "--bits is for --random-weights (the small model is float32)."))
    if not args.model:
        checks.extend(_random_model_checks(args, sizes))
    if args.system_prompt is not None and not args.system_prompt.strip():
        checks.append((False, "--system-prompt is empty; give a preset (see `ppx-tui prompts`)."))
    if args.random_weights and args.context is not None:
        checks.append((False, "--context sets the small model's context; the 7B's is 3000."))
    if args.max_step_ms is not None:
        checks.append((args.max_step_ms > 0, "--max-step-ms must be a positive number."))
    if args.settle is not None:
        checks.append(
            (
                1 <= args.settle <= args.frames,
                f"--settle must be between 1 and --frames ({args.frames}), not {args.settle}.",
            )
        )
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    sampling = sampling_options(args)
    voice = DEFAULT_VOICE if args.voice is None else args.voice
    prompt = DEFAULT_PROMPT if args.system_prompt is None else args.system_prompt
    if args.model:
        check_voice(args.model, voice)  # a voice the folder lacks: before the model loads
        resolve_prompt(prompt)
    audio = None
    if args.input:
        from personaplex_tui.audio import read_audio

        # read once, here: a bad file fails in one sentence, and a pipe (`-`, a FIFO, <(...)),
        # which can be read only once, is the soak's input as read (it hung or said "no data")
        clip = read_audio(args.input)
        if clip.file_warning:  # an Ogg file cut short, an MP3's damaged frames: used, and said
            status(f"soak: warning: {clip.warning}")
        audio = clip.pcm
    if args.record_dir is not None:
        check_output_folder(args.record_dir, "the soak's recording", "--record-dir")
    return SoakOptions(
        frames=args.frames,
        context=args.context if args.context is not None else 3000,
        model=args.model,
        dtype=args.dtype,
        quantize=args.quantize,
        input=args.input,
        input_audio=audio,
        every=args.every,
        settle=args.settle,
        max_growth_mb=args.max_growth_mb,
        record_dir=args.record_dir,
        session=SessionSettings(voice=voice, prompt=prompt).replace(
            **(sampling | {"seed": sampling["seed"] or 0})
        ),
        voice_frames=sizes.voice_frames,
        prompt_tokens=sizes.prompt_tokens,
        random_weights=args.random_weights,
        bits=args.bits or 4,
        max_step_ms=args.max_step_ms,
    )


def _random_model_checks(args: argparse.Namespace, sizes: PromptSizes) -> list[tuple[bool, str]]:
    """A random model has no voice files, tokenizer or float weights to quantize (it used to
    ignore those flags), and the small one's --context must hold the prompt phase it is given
    (the soak's own check, which `run_soak` makes too)."""
    from personaplex_tui.soak import SoakOptionsError, check_prompt_phase

    which = "--random-weights" if args.random_weights else "the small random model"
    checks = [
        (
            args.voice is None,
            f"--voice is for a --model checkpoint; {which} has a random voice prompt "
            "of --voice-frames frames.",
        ),
        (
            args.system_prompt is None,
            f"--system-prompt is for a --model checkpoint; {which} has a random system prompt "
            "of --prompt-tokens tokens.",
        ),
        (
            args.quantize is None,
            f"--quantize is for a float --model checkpoint, not {which}"
            + (" (its bits are --bits)." if args.random_weights else "."),
        ),
    ]
    context = args.context
    if args.random_weights or context is None or context < 1:  # those said elsewhere
        return checks
    try:
        check_prompt_phase(context, sizes.voice_frames, sizes.prompt_tokens)
    except SoakOptionsError as e:
        checks.append((False, str(e)))
    return checks


def run(args: argparse.Namespace) -> int:
    from personaplex_tui.soak import run_soak

    opts = _options(args)
    what = args.model or (
        f"random {opts.bits}-bit weights of the 7B shape"
        if opts.random_weights
        else f"a small random model (context {opts.context})"
    )
    status(f"soak: {opts.frames} frames ({opts.frames * 0.08 / 60:.1f} min of audio) on {what}...")

    def progress(s) -> None:
        label = f" ({s.label})" if s.label else ""
        status(
            f"soak: frame {s.frame}{label}: MLX active {s.mlx_active_mb:.1f} MiB, "
            f"cache {s.mlx_cache_mb:.1f} MiB, RSS {s.rss_mb:.1f} MiB, {s.elapsed_s:.1f} s"
        )

    # The soak reports every error and warning itself, once; without a handler, Python's last
    # resort would print the engine's log records of them to stderr as well.
    logging.getLogger().addHandler(logging.NullHandler())
    result = run_soak(opts, progress)
    stopped = POLICY.settle()  # what the report says is how the command ends
    if args.json:
        print_out(
            json.dumps(
                {**result.as_dict(), "stopped_by": stopped and signal_name(stopped)}, indent=2
            )
        )
    else:
        print_out(result_table(result))
    if stopped is not None:  # what ran is reported; `main` says why it ended, exit 128 + N
        status(f"soak: stopped after {result.frames_stepped} of {result.frames} frames.")
        raise Stopped(stopped)
    for problem in result.problems:
        status(f"soak: FAILED: {problem}")
    return 0 if result.ok else 1


def result_table(r) -> RenderableType:
    """The soak's figures and memory curve as a Rich table."""
    t = MeasureTable(f"ppx-tui soak — {r.model}")
    t.add_row("verdict", "ok" if r.ok else "FAILED")
    t.add_row(
        "frames asked / in / stepped / out",
        f"{r.frames} / {r.frames_in} / {r.frames_stepped} / {r.frames_out}",
    )
    t.add_row(
        "recorded mic / agent / speaker samples",
        f"{r.recorded_mic_samples} / {r.recorded_agent_samples} / {r.speaker_samples}",
    )
    t.add_row("transcript entries", str(r.transcript_entries))
    if r.context:
        t.add_row("temporal positions / ring wraps", f"{r.positions} / {r.ring_wraps:.1f}")
    t.add_row("errors / warnings", f"{len(r.errors)} / {len(r.warnings)}")
    t.add_row("elapsed", f"{r.elapsed_s:.1f} s")
    if r.step_ms:
        m = r.step_ms
        t.add_row(
            "step p50 / p99 / max",
            f"{m['p50']:.2f} / {m['p99']:.2f} / {m['max']:.2f} ms",
        )
        t.add_row("steps over 80 ms", str(r.steps_over_budget))
    for name, which in r.kernels_end.items():
        t.add_row(f"{name} kernels", which)
    t.add_row("frames/s (x real time)", f"{r.frames_per_s:.1f} ({r.realtime_factor:.2f}x)")
    t.add_row(
        f"growth after frame {r.settle}: MLX active / RSS",
        f"{r.active_growth_mb:.2f} / {r.rss_growth_mb:.2f} MiB",
    )
    t.add_row(
        "slope: MLX active / RSS",
        f"{r.active_slope_b_per_frame:.1f} / {r.rss_slope_b_per_frame:.1f} B/frame",
    )
    for s in r.memory:
        label = f" ({s.label})" if s.label else ""
        t.add_row(
            f"memory at frame {s.frame}{label}",
            f"active {s.mlx_active_mb:.1f} · cache {s.mlx_cache_mb:.1f} · RSS {s.rss_mb:.1f} MiB",
        )
    return t
