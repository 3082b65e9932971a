"""`ppx-tui soak`: full duplex through the real engine, controller, player and recording, far
past the KV ring's wrap, with every frame accounted for and memory flat after a warm-up.

The command's own verdict is checked, and so are its figures, with tighter limits than its
defaults: 1500 frames through a 50-frame context (the ring wraps 30 times), memory sampled every
100 frames in a fresh process. Holding one ~8 KB agent frame per step (what the engine did before
`generate(keep=False)`) grows RSS by ~10 MiB over the 1200 measured frames; 4 MiB is allowed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMES, CONTEXT, EVERY, SETTLE = 1500, 50, 100, 300
PROMPT = ("--voice-frames", "30", "--prompt-tokens", "8")  # with the silences: 50, CONTEXT


def soak(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "personaplex_tui", "soak", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    record = tmp_path_factory.mktemp("soak")
    proc = soak(
        "--frames", str(FRAMES), "--context", str(CONTEXT), *PROMPT, "--every", str(EVERY),
        "--settle", str(SETTLE), "--max-growth-mb", "4", "--record-dir", str(record), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout), proc.stderr, record


def test_every_frame_goes_in_and_out_and_is_recorded(result):
    r, _, record = result
    assert r["ok"] and r["problems"] == [] and r["errors"] == [] and r["warnings"] == []
    assert r["frames_in"] == r["frames_stepped"] == r["frames_out"] == FRAMES
    samples = FRAMES * 1920
    assert r["speaker_samples"] == r["recorded_mic_samples"] == r["recorded_agent_samples"]
    assert r["recorded_mic_samples"] == samples
    folder = Path(r["recording"])
    assert (
        folder.parent == record / "recording"
        and (folder / "mic.wav").stat().st_size == 44 + 2 * samples
    )
    lines = (folder / "transcript.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["type"] == "session" and json.loads(lines[-1])["type"] == "end"
    assert r["frames_per_s"] > 0 and r["realtime_factor"] > 0


def test_step_times_and_kernels_are_reported(result):
    r, _, _ = result
    steps = r["step_ms"]
    assert 0 < steps["p50"] <= steps["p99"] <= steps["max"]  # one StepTiming per live step
    assert r["steps_over_budget"] == 0 or steps["max"] > 80.0
    # On the CPU every kernel is MLX's; the same at the end as at the start (no fall-back).
    assert r["kernels_start"] == r["kernels_end"] == {
        "temporal": "MLX", "depformer": "MLX", "matvec": "MLX",
    }  # fmt: skip


def test_the_table_keeps_each_value_on_one_line_in_80_columns():
    proc = subprocess.run(
        [sys.executable, "-m", "personaplex_tui", "soak", "--frames", "5"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    memory = [line for line in rows if "memory at frame" in line]
    assert len(memory) == 3 and all(line.rstrip(" │").endswith(" MiB") for line in memory), rows
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_a_step_limit_below_the_slowest_step_fails_the_soak():
    proc = soak("--frames", "30", "--context", "50", *PROMPT, "--max-step-ms", "0.001", "--json")
    assert proc.returncode == 1, proc.stderr
    r = json.loads(proc.stdout)
    assert any("the slowest step took" in p for p in r["problems"]) and not r["ok"]
    assert "soak: FAILED: the slowest step took" in proc.stderr


def test_the_ring_wraps_many_times(result):
    r, _, _ = result
    assert r["context"] == CONTEXT and r["positions"] >= FRAMES
    assert r["ring_wraps"] >= 30


def test_memory_is_flat_after_the_warm_up(result):
    r, stderr, _ = result
    memory = r["memory"]
    assert [m["frame"] for m in memory] == [1, *range(EVERY, FRAMES + 1, EVERY)]
    labels = {m["frame"]: m["label"] for m in memory}
    assert labels[1] == "start, context full"  # the prompt alone fills a 50-frame ring
    assert labels[SETTLE] == "settled" and labels[FRAMES] == "end"
    settled = [m for m in memory if m["frame"] >= SETTLE]
    active = [m["mlx_active_mb"] for m in settled]
    rss = [m["rss_mb"] for m in settled]
    assert max(active) - active[0] <= 0.5 and r["active_growth_mb"] <= 0.5
    assert max(rss) - rss[0] <= 4.0 and r["rss_growth_mb"] <= 4.0
    assert r["rss_slope_b_per_frame"] < 2000
    assert min(active) > 1 and min(rss) > 10  # real measurements, not zeros
    assert f"soak: frame {FRAMES} (end): MLX active" in stderr  # the curve as it goes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "0"], "--frames must be between 1 and 4500000, not 0."),
        (["--frames", "99999999999999"], "--frames must be between 1 and 4500000"),  # ran on
        (["--context", "-5"], "--context must be between 1 and 100000 frames, not -5."),
        (["--every", "0"], "--every must be at least 1, not 0."),
        (["--frames", "10", "--settle", "20"], "--settle must be between 1 and --frames (10), not 20."),
        (["--audio-temp", "-0.5"], "--audio-temp must be between 0 and 10, not -0.5."),
        (["--text-top-k", "0"], "--text-top-k must be at least 1, not 0."),
        (["--model", "somewhere/x", "--voice", "BOB"], "Unknown voice 'BOB'; choose one of"),
        (["--model", "somewhere/x", "--voice", ""], "Unknown voice ''; choose one of"),
        (["--model", "somewhere/x", "--system-prompt", "pirate"], "Unknown system prompt preset 'pirate'"),
        (["--model", "somewhere/x", "--context", "10"], "--context sets the random model's context"),
        (["--input", "/nonexistent/q.wav"], "The audio file /nonexistent/q.wav does not exist."),
        (["--random-weights", "--model", "somewhere/x"], "--random-weights and --model are two"),
        (["--random-weights", "--context", "10"], "the 7B's is 3000"),
        (["--max-step-ms", "0"], "--max-step-ms must be a positive number."),
        (["--record-dir", "/dev/null"], "Cannot use /dev/null for the soak's recording: it is a file"),
        (["--model", ""], "argument --model: give a Hugging Face repo id or a folder, not ''"),
        (["--bits", "8"], "--bits is for --random-weights (the small model is float32)."),
        (["--model", "somewhere/x", "--system-prompt", " "], "--system-prompt is empty; give a preset"),
        # a random model ran without a word of these (no voice files, tokenizer or float weights)
        (["--voice", "NATM1"], "--voice is for a --model checkpoint; the small random model has a random voice prompt of --voice-frames frames."),
        (["--system-prompt", "casual"], "--system-prompt is for a --model checkpoint; the small random model has a random system prompt of --prompt-tokens tokens."),
        (["--quantize", "8"], "--quantize is for a float --model checkpoint, not the small random model."),
        (["--model", "somewhere/x", "--voice-frames", "10"], "--voice-frames is for a random model; a --model checkpoint brings its own voice and system prompt."),
        (["--model", "somewhere/x", "--prompt-tokens", "10"], "--prompt-tokens is for a random model; a --model checkpoint brings its own voice and system prompt."),
        # a context shorter than the prompt phase ran with the ring wrapped in the prefill
        (["--context", "50"], "--context 50 cannot hold the prompt phase of 82 frames (--voice-frames 50, --prompt-tokens 20 and 12 of silence); give --context 82 or more, or at most 38 voice frames and prompt tokens together."),
        (["--context", "49", *PROMPT], "--context 49 cannot hold the prompt phase of 50 frames"),
        (["--context", "5", "--voice-frames", "0", "--prompt-tokens", "0"], "--context 5 cannot hold the prompt phase of 12 frames (--voice-frames 0, --prompt-tokens 0 and 12 of silence); give --context 12 or more."),
    ],
)  # fmt: skip
def test_absurd_flags_get_one_sentence(args, message):
    proc = soak("--frames", "5", *args) if "--frames" not in args else soak(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--voice", "NATF2"], "--voice is for a --model checkpoint; --random-weights has a random voice prompt of --voice-frames frames."),
        (["--system-prompt", "assistant"], "--system-prompt is for a --model checkpoint; --random-weights has a random system prompt of --prompt-tokens tokens."),
        (["--quantize", "4"], "--quantize is for a float --model checkpoint, not --random-weights (its bits are --bits)."),
    ],
)  # fmt: skip
def test_flags_random_weights_would_ignore_are_refused_before_it_loads(args, message):
    """In-process: on the old code these went on to build a 7B of random weights."""
    from personaplex_tui.cli import build_parser
    from personaplex_tui.commands.common import UsageError
    from personaplex_tui.commands.soak import _options

    parsed = build_parser().parse_args(["soak", "--random-weights", *args])
    with pytest.raises(UsageError) as refused:
        _options(parsed)
    assert str(refused.value) == message


def test_a_context_that_just_holds_the_prompt_phase_runs():
    proc = soak("--frames", "3", "--context", str(CONTEXT), *PROMPT, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["positions"] == 30 + 6 + 8 + 6 + 1 + 3  # the 1: run ahead


@pytest.mark.parametrize(("context", "voice", "tokens"), [(49, 30, 8), (5, 0, 0), (50, 50, 20)])
def test_run_soak_itself_refuses_a_context_that_cannot_hold_the_prompt_phase(
    tmp_path, context, voice, tokens
):
    """Only the command refused these; `run_soak` called directly ran with the ring wrapped in
    the prefill. Both paths now say the same sentence, and nothing runs or is written."""
    from model.errors import PersonaPlexError
    from personaplex_tui.cli import build_parser
    from personaplex_tui.commands.common import UsageError
    from personaplex_tui.commands.soak import _options
    from personaplex_tui.soak import SoakOptions, run_soak

    flags = [
        "--context",
        str(context),
        "--voice-frames",
        str(voice),
        "--prompt-tokens",
        str(tokens),
    ]
    with pytest.raises(UsageError) as said:
        _options(build_parser().parse_args(["soak", "--frames", "5", *flags]))
    record = tmp_path / "recording"
    opts = SoakOptions(
        frames=5, context=context, voice_frames=voice, prompt_tokens=tokens, record_dir=str(record)
    )
    with pytest.raises(PersonaPlexError) as refused:
        run_soak(opts)
    assert str(refused.value) == str(said.value)
    assert str(refused.value).startswith(f"--context {context} cannot hold the prompt phase of ")
    assert type(refused.value).__name__ == "SoakOptionsError"
    assert not record.exists()  # refused before the recording folder was made


def test_the_flags_are_resolved_without_writing_into_the_parsed_arguments():
    """The command wrote the random prompt's default sizes back into the user's namespace."""
    from personaplex_tui.cli import build_parser
    from personaplex_tui.commands.soak import _options

    parsed = build_parser().parse_args(["soak", "--frames", "5"])
    given = dict(vars(parsed))
    opts = _options(parsed)
    assert (opts.voice_frames, opts.prompt_tokens) == (50, 20)
    assert vars(parsed) == given


def test_the_help_names_the_small_random_model_as_the_default(capsys):
    """`soak --help` said --model defaults to the published 4-bit checkpoint, which the soak
    loads only when asked; without --model it runs a small random model."""
    from personaplex_tui.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["soak", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: a small random model; --random-weights: the 7B shape)" in shown
    assert "aufklarer" not in shown


def test_an_input_file_whose_name_is_not_utf8_ends_the_soak(tmp_path):
    """The name goes into the transcript's "input ended" note: written escaped (\\udcff, still
    JSON), it no longer kills the controller's run task, which left the soak waiting forever,
    deaf to SIGINT and SIGTERM."""
    name = os.fsdecode(b"q\xff.wav")  # a surrogate in the str, as Python reads such a name
    (tmp_path / name).write_bytes((ROOT / "tests" / "data" / "audio" / "weather.wav").read_bytes())
    proc = soak(
        "--frames", "3", "--input", str(tmp_path / name), "--record-dir", str(tmp_path / "r")
    )
    assert proc.returncode == 0, proc.stderr
    (transcript,) = (tmp_path / "r").glob("recording/*/transcript.jsonl")
    notes = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert any(name in n.get("text", "") for n in notes if n["type"] == "note")


def test_a_lost_output_is_the_chats_sentence_without_its_key_hint(tmp_path, monkeypatch):
    """The speaker's file fills its disk: the soak reports the sentence the chat shows, but not
    what the chat's keys would do about it (the soak has no keys)."""
    from personaplex_tui.soak import SoakOptions, run_soak
    from tests.test_conversation_disk import FullDisk

    speaker = tmp_path / "speaker.wav"
    FullDisk(speaker, free=50_000).install(monkeypatch)  # about 1 s of the agent's voice
    # the prompt of PROMPT: the default 50 + 20 does not fit a context of 50 (refused now)
    opts = SoakOptions(
        frames=100, context=50, voice_frames=30, prompt_tokens=8, record_dir=str(tmp_path)
    )
    r = run_soak(opts)
    (error,) = r.errors
    assert error.startswith(
        f"Writing the output file {speaker} failed (No space left on device); it keeps the first "
    )
    assert error.endswith(" s.") and "\n" not in error  # one whole sentence
    assert "press" not in error and "go on" not in error and "hoose" not in error
    assert f"error: {error}" in r.problems and not r.ok


def test_a_piped_input_is_read_once_and_a_record_dir_keeps_every_speaker_file(tmp_path):
    """`--input -` (a pipe: read once by the command; the soak read it a second time and said it
    gave no data, or hung on a FIFO) is looped as the mic; a `--record-dir` that already holds a
    speaker.wav (another soak's, or the input itself) gets speaker_2.wav instead of overwriting."""
    wav = ROOT / "tests" / "data" / "audio" / "greeting.wav"
    keep = tmp_path / "speaker.wav"
    keep.write_bytes(wav.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "personaplex_tui", "soak", "--input", "-", "--frames", "12",
         "--context", "50", *PROMPT, "--record-dir", str(tmp_path), "--json"],
        input=wav.read_bytes(), capture_output=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    r = json.loads(proc.stdout)
    assert r["ok"] and r["frames_in"] == 12 and r["speaker_samples"] == 12 * 1920
    assert keep.read_bytes() == wav.read_bytes()  # untouched
    assert (tmp_path / "speaker_2.wav").stat().st_size == 44 + 2 * 12 * 1920
