"""Echo cancellation through the real sounddevice path: a private PulseAudio server whose
microphone hears its speaker through `module-loopback` (a real, buffered echo path), and a
duplex session whose agent speaks shared speech. The agent's voice in the processed mic must
be at least 20 dB below the raw mic.

Each check runs in a subprocess: PortAudio lists its devices once, at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from personaplex_tui.audio.aec import EchoCanceller

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import asyncio, dataclasses, json, sys
import numpy as np
from personaplex_tui.conversation import AudioFactory, ControllerConfig, create_conversation
from personaplex_tui.events import EchoStats, EngineError, FrameOut, Notice, PlaybackStats
from tests.conversation_fakes import Events, FakeModel, FakeSession, Probe
from tests.echo_paths import far_talk

SPEECH = far_talk(14.0)

class SpeakingSession(FakeSession):
    def step(self, pcm):
        frame = super().step(pcm)
        i = frame.index * 1920
        return dataclasses.replace(frame, pcm=np.ascontiguousarray(SPEECH[i : i + 1920]))

class SpeakingModel(FakeModel):
    def session(self, settings):
        return SpeakingSession(self, settings)

async def main():
    events = Events()
    probe = Probe(SpeakingModel())
    config = ControllerConfig(
        mode="duplex", input_device="pulse", output_device="pulse",
        echo_cancellation=True, record_dir=sys.argv[1],
    )
    conv = create_conversation(probe.loader(), events, config, audio=AudioFactory())
    await conv.start()
    await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 170, timeout=60)
    await conv.shutdown()
    stats = [e for e in events.of(EchoStats) if e.mode == "cancel"]
    last = stats[-1] if stats else None
    print(json.dumps({
        "errors": [e.message for e in events.of(EngineError)],
        "notices": [e.message for e in events.of(Notice)],
        "delay_ms": last and last.delay_ms,
        "erle_db": last and last.erle_db,
        "processing_ms": last and last.processing_ms,
        "same_thread": probe.threads == {conv.engine.thread_ident},
        "underruns": events.of(PlaybackStats)[-1].underruns,
    }))

asyncio.run(main())
"""


def _track(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64) / 32768


def test_the_agents_voice_is_20_db_lower_in_the_processed_mic(pulse_room, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path)],
        cwd=ROOT, env={**pulse_room, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(result.stdout.strip().splitlines()[-1])
    assert r["errors"] == [] and r["same_thread"], r
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    raw, clean = _track(session / "mic.wav"), _track(session / "mic_processed.wav")
    assert len(raw) == len(clean) >= 150 * 1920
    frames = len(raw) // 480
    raw_p = np.mean(raw[: frames * 480].reshape(frames, 480) ** 2, axis=1)
    clean_p = np.mean(clean[: frames * 480].reshape(frames, 480) ** 2, axis=1)
    echo = 10 * np.log10(raw_p + 1e-20) > 10 * np.log10(raw_p.max()) - 30
    echo[: 5 * 50] = False  # the first 5 s: the app aligns, the canceller converges
    assert echo.sum() >= 150  # the agent was heard in the mic, for seconds
    reduction = 10 * np.log10(raw_p[echo].sum() / (clean_p[echo].sum() + 1e-20))
    print(f"echo in the raw mic vs the processed one: {reduction:.1f} dB; live meter: {r}")
    assert reduction >= 20.0
    assert r["erle_db"] is not None and r["erle_db"] >= 15.0
    assert r["delay_ms"] is not None and 0 < r["delay_ms"] < 1000


def _ppx(env: dict, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "personaplex_tui", *argv],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_live_sound_check_measures_the_echo_and_says_duplex_will_work(pulse_room):
    r = _ppx(pulse_room, "sound-check", "--input-device", "pulse", "--output-device", "pulse",
             "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    print(report)
    assert 150 <= report["round_trip_ms"] <= 1500  # player buffer + devices + 60 ms loopback
    assert 0 <= report["residual_ms"] <= 400  # within the canceller's reach after alignment
    assert report["echo_before_dbfs"] > -30 and report["erle_db"] >= 20
    assert report["clipped_samples"] == 0 and report["works"] is True
    assert "duplex without headphones will work here" in report["verdict"][-1]
    assert report["canceller"] == EchoCanceller().name  # the build this process would pick too
    text = _ppx(pulse_room, "sound-check", "--input-device", "pulse", "--output-device", "pulse")
    assert text.returncode == 0 and "Round-trip delay:" in text.stdout and "Use: " in text.stdout
    assert f"Canceller: {report['canceller']}." in text.stdout.splitlines()


def test_the_live_sound_check_names_a_missing_device_in_one_sentence(pulse_room):
    r = _ppx(pulse_room, "sound-check", "--input-device", "no such mic")
    assert r.returncode == 2
    assert r.stderr.startswith("ppx-tui: ") and len(r.stderr.strip().splitlines()) == 1
    assert "no such mic" in r.stderr
