"""`ppx-tui sound-check`: will duplex without headphones work here? Live on the sound card, or
offline on two recordings (`--far FAR.wav --mic MIC.wav --output CLEAN.wav`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from personaplex_tui.commands.common import UsageError, print_out, status
from personaplex_tui.commands.paths import check_distinct, check_output_file
from personaplex_tui.settings_flags import add_mic_processing_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sound-check",
        help="test echo cancellation: live on your speaker and mic, or on two recordings",
        description="Live: plays a short test signal through the speaker while recording the "
        "microphone, then reports the round-trip delay, the echo before and after "
        "cancellation, the noise floor and clipping, and whether duplex without headphones "
        "will work. Offline (--far, --mic, --output): runs the same canceller on two "
        "recordings, no sound card needed.",
    )
    p.add_argument("--far", metavar="WAV", help="offline: what the speaker played")
    p.add_argument("--mic", metavar="WAV", help="offline: what the microphone recorded")
    p.add_argument("--output", metavar="WAV", help="offline: write the cleaned microphone here")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    add_mic_processing_arguments(p, unset=False)
    p.add_argument(
        "--input-device", metavar="X", help="live: microphone, by name ('NAME #2') or index"
    )
    p.add_argument(
        "--output-device", metavar="Y", help="live: speaker, by name ('NAME #2') or index"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from personaplex_tui.audio.aec import ProcessingOptions

    options = ProcessingOptions(noise_suppression=args.noise_suppression, auto_gain=args.auto_gain)
    offline = [args.far, args.mic, args.output]
    if any(offline):
        if not all(offline):
            raise UsageError(
                "The offline sound check needs all three of --far, --mic and --output."
            )
        if args.input_device is not None or args.output_device is not None:
            raise UsageError("--input-device and --output-device are for the live sound check.")
        return _offline(args, options)
    from personaplex_tui.commands.sound_check_live import run_live

    return run_live(args, options)


STDIN_NAMES = ("-", "/dev/stdin")  # names of the standard input that read_audio takes


def _offline(args: argparse.Namespace, options: object) -> int:
    from personaplex_tui.audio.audio_writing import WRITTEN_FORMATS
    from personaplex_tui.audio.offline_aec import cancel_recordings

    # The output can be written, in a format we write, and destroys neither recording: checked
    # before the canceller runs.
    check_distinct({"--far": args.far, "--mic": args.mic}, {"--output": args.output})
    if args.far in STDIN_NAMES and args.mic in STDIN_NAMES:
        raise UsageError(
            "--far and --mic cannot both be the standard input (it is read once); give one of "
            "them a file."
        )
    check_output_file(args.output, "the cleaned audio", "--output", seekable=True)
    if Path(args.output).suffix.lower() not in WRITTEN_FORMATS:
        raise UsageError(f"--output {args.output}: give it a .wav or .flac name (its format).")
    report = cancel_recordings(args.far, args.mic, args.output, options)  # type: ignore[arg-type]
    if args.json:
        print_out(json.dumps(report.as_json(), indent=2))
        for note in report.notes:
            status(note)
        return 0
    for note in report.notes:
        print_out(note)
    if report.delay_ms is None:
        print_out(f"Wrote {report.output} ({report.seconds:.1f} s); no echo to measure.")
        return 0
    print_out(f"Echo delay: {report.delay_ms:.0f} ms after the far end.")
    print_out(f"Canceller: {report.canceller}.")
    if report.erle_db is not None:
        print_out(
            f"Echo: {report.echo_before_dbfs:.1f} dBFS before, {report.echo_after_dbfs:.1f} dBFS "
            f"after cancellation: {report.erle_db:.1f} dB removed (ERLE)."
        )
    print_out(f"Wrote {report.output} ({report.seconds:.1f} s).")
    return 0
