"""Full duplex on real PortAudio streams, on a virtual sound card whose microphone hears its
speaker (a loudspeaker without headphones): the model hears itself unless echo suppression is
on; and the sound server dying mid-conversation is reported as a lost device.

Uses the private PulseAudio null sink of tests/conftest.py (the sink's monitor is the
microphone). Each check runs in a subprocess: PortAudio lists its devices once, at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import asyncio, json, subprocess, sys
import numpy as np
from personaplex_tui.conversation import AudioFactory, ControllerConfig, create_conversation
from personaplex_tui.events import EngineError, FrameOut
from tests.conversation_fakes import Events, FakeModel, Probe

what = sys.argv[1]

async def main():
    events = Events()
    probe = Probe(FakeModel(talk=lambda i: 10 <= i < 30))  # the agent talks for 1.6 s
    config = ControllerConfig(
        mode="duplex", input_device="pulse", output_device="pulse",
        echo_suppression=what == "echo-on", record_dir=sys.argv[2],
    )
    conv = create_conversation(probe.loader(), events, config, audio=AudioFactory())
    await conv.start()
    if what == "server-dies":
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 20)
        subprocess.run(["pactl", "exit"], check=True)
        await events.wait_for(lambda e: isinstance(e, EngineError))
        while conv.running:
            await asyncio.sleep(0.01)
    else:
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 50)
    await conv.shutdown()
    live = probe.sessions[-1]
    print(json.dumps({
        "peaks": [float(np.abs(x).max()) for x in live.inputs],
        "errors": [e.message for e in events.of(EngineError)],
        "steps": len(live.outputs),
        "same_thread": probe.threads == {conv.engine.thread_ident},
    }))

asyncio.run(main())
"""


def run_check(what: str, env: dict, folder: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, what, str(folder)],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def recorded_frames(folder: Path) -> tuple[int, int]:
    import wave

    (session,) = [p for p in folder.iterdir() if p.is_dir()]
    with wave.open(str(session / "mic.wav")) as m, wave.open(str(session / "agent.wav")) as a:
        return m.getnframes() // 1920, a.getnframes() // 1920


def test_the_model_hears_itself_unless_echo_suppression_is_on(pulse_null_sink, tmp_path):
    off = run_check("echo-off", pulse_null_sink, tmp_path / "off")
    on = run_check("echo-on", pulse_null_sink, tmp_path / "on")
    for r in (off, on):
        assert r["errors"] == [] and r["same_thread"] and r["steps"] >= 51
    # without suppression the agent's tone comes back through the "room", a few frames late
    heard_itself = [i for i, p in enumerate(off["peaks"]) if p > 0.1]
    assert len(heard_itself) >= 15 and 10 < heard_itself[0] < 25
    # with it the model gets silence instead, echo tail included
    assert max(on["peaks"]) < 0.01
    mic, agent = recorded_frames(tmp_path / "on")
    assert mic == agent >= on["steps"]


def test_the_sound_server_dying_is_a_lost_device_and_the_recording_stays(
    pulse_null_sink,
    tmp_path,
):
    r = run_check("server-dies", pulse_null_sink, tmp_path)
    assert len(r["errors"]) == 1, r["errors"]
    assert r["errors"][0].startswith("The input device 'pulse' stopped delivering audio") or (
        r["errors"][0].startswith("The output device 'pulse' stopped playing")
    )
    mic, agent = recorded_frames(tmp_path)
    assert mic == agent and r["steps"] <= mic <= r["steps"] + 1 and mic >= 21
