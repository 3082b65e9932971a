"""`ppx-tui respond` end to end in a subprocess, on a small checkpoint in the real layout."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.checkpoints import small_config, write_small_checkpoint
from tests.cli_runner import ROOT, ppx

AUDIO = ROOT / "tests" / "data" / "audio"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _wav(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getnchannels(), w.getnframes()


def test_respond_writes_wav_transcript_json_and_tokens(ckpt, tmp_path):
    out, dump = tmp_path / "answer.wav", tmp_path / "tokens.jsonl"
    proc = ppx(
        "respond", "--input", str(AUDIO / "shipping.wav"), "--output", str(out),
        "--model", str(ckpt), "--max-steps", "20", "--voice", "VARF2",
        "--system-prompt", "teacher", "--json", "--dump-tokens", str(dump), "--seed", "11",
    )  # fmt: skip
    assert _wav(out) == (24000, 1, 20 * 1920)
    meta = json.loads(proc.stdout)
    heard = -(-int(3.848 * 24000) // 1920)
    assert meta["voice"] == "VARF2" and meta["prompt"] == "teacher" and meta["seed"] == 11
    assert meta["steps"] == heard + 20 and meta["reply_steps"] == 20
    assert meta["timings"]["step_ms_p50"] > 0 and meta["rtf"] > 0
    assert isinstance(meta["transcript"], str)
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(heard + 20))
    for r in rows:
        assert set(r) == {"frame", "text", "agent", "user"}
        assert len(r["agent"]) == 8 and len(r["user"]) == 8
        assert all(0 <= c < 2048 for c in r["agent"] + r["user"])


def test_respond_seed_makes_runs_identical_and_stream_matches(ckpt, tmp_path):
    common = ["respond", "--input", str(AUDIO / "weather.wav"), "--model", str(ckpt),
              "--max-steps", "30", "--seed", "5", "--transcript"]  # fmt: skip
    a = ppx(*common, "--output", str(tmp_path / "a.wav"))
    b = ppx(*common, "--output", str(tmp_path / "b.wav"), "--stream", "--chunk-seconds", "1")
    ppx(*common[:-3], "--seed", "6", "--output", str(tmp_path / "c.wav"))
    read = lambda p: (tmp_path / p).read_bytes()  # noqa: E731
    assert read("a.wav") == read("b.wav")
    assert read("a.wav") != read("c.wav")
    assert a.stdout == b.stdout and a.stdout.strip() != ""
    assert "First audio after" in b.stderr


def test_respond_resamples_stereo_44k_input(ckpt, tmp_path):
    out = tmp_path / "r.wav"
    ppx("respond", "--input", str(AUDIO / "shipping_44k_stereo.wav"), "--output", str(out),
        "--model", str(ckpt), "--max-steps", "5", "--greedy")  # fmt: skip
    assert _wav(out) == (24000, 1, 5 * 1920)


def _write_wav(path: Path, pcm: np.ndarray, rate: int = 24000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((pcm * 32767).astype("<i2").tobytes())
    return path


def _text_file(path: Path) -> Path:
    path.write_text("hello, this is not audio")
    return path


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda d: d / "missing.wav", [], "The audio file {p} does not exist."),
        (lambda d: _write_wav(d / "empty.wav", np.zeros(0)), [], "The audio file {p} contains no audio samples."),
        (lambda d: _text_file(d / "notes.wav"), [], "{p} is not a WAV or FLAC audio file"),
        (lambda d: AUDIO / "shipping.wav", ["--voice", "BOB"], "Unknown voice 'BOB'; choose one of"),
        (lambda d: AUDIO / "shipping.wav", ["--system-prompt", "pirate"], "Unknown system prompt preset 'pirate'"),
        (lambda d: AUDIO / "shipping.wav", ["--max-steps", "-3"], "--max-steps must be between 1 and 3000 (one context), not -3."),
        (lambda d: AUDIO / "shipping.wav", ["--audio-temp", "-1"], "--audio-temp must be between 0 and 10, not -1.0."),
        (lambda d: AUDIO / "shipping.wav", ["--text-top-k", "0"], "--text-top-k must be at least 1, not 0."),
        (lambda d: _write_wav(d / "long.wav", np.zeros(int(1.7 * 24000))), ["--model", "SMALLCTX"],
         "longer than the model's 1.6 s context"),
    ],
)  # fmt: skip
def test_respond_bad_input_gets_one_sentence(ckpt, tmp_path, make, extra, message):
    path = make(tmp_path)
    model = str(ckpt)
    if "SMALLCTX" in extra:
        model = str(write_small_checkpoint(tmp_path / "ctx", config=small_config(context=20)))
        extra = []
    proc = ppx("respond", "--input", str(path), "--output", str(tmp_path / "o.wav"),
               "--model", model, *extra, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert message.format(p=path) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.wav").exists()


def test_respond_warns_about_a_silent_file(ckpt, tmp_path):
    path = _write_wav(tmp_path / "quiet.wav", np.zeros(24000))
    proc = ppx("respond", "--input", str(path), "--output", str(tmp_path / "o.wav"),
               "--model", str(ckpt), "--max-steps", "3")  # fmt: skip
    assert f"warning: The audio file {path} contains only silence." in proc.stderr


def test_respond_with_no_model_says_what_to_do(tmp_path):
    proc = ppx("respond", "--input", str(AUDIO / "shipping.wav"), "--output",
               str(tmp_path / "o.wav"), "--model", "someone/missing-model", check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "HF_HUB_OFFLINE" in proc.stderr and "--model PATH" in proc.stderr


def test_voices_and_prompts_listings():
    voices = json.loads(ppx("voices", "--json").stdout)
    assert (
        len(voices) == 18
        and {"name": "VARF2", "category": "varied female", "default": False} in voices
    )
    prompts = json.loads(ppx("prompts", "--json").stdout)
    assert set(prompts) == {"assistant", "focused", "customer-service", "teacher", "casual"}
