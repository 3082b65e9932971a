"""Only the engine thread touches MLX: a whole conversation on the real (small) model, every call
into MLX recorded with its thread, from the model's load to the shutdown."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest

from personaplex_tui.conversation import ControllerConfig, create_conversation
from personaplex_tui.events import MemoryUsage, TextOut
from personaplex_tui.model_loader import ModelLoader, memory_usage
from tests.conversation_fakes import AUDIO, Events, ended, file_factory
from tests.mlx_threads import MlxCallWatch

ROOT = Path(__file__).resolve().parents[1]


def test_the_watch_sees_mlx_calls_on_any_thread():
    def elsewhere():
        mx.eval(nn.Linear(4, 2)(mx.ones((1, 4))))

    with MlxCallWatch() as watch:
        mx.zeros(3)  # main thread, a C function
        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
    assert watch.calls[threading.get_ident()]["mlx.core.zeros"] == 1
    seen = watch.calls[worker.ident]
    assert seen["mlx.core.eval"] == 1 and seen["mlx.nn.layers.linear.__call__"] == 1
    assert mx.zeros.__module__ == "mlx.core" and "recorded" not in repr(mx.zeros)  # restored


@pytest.mark.parametrize("mode", ["duplex", "turn"])
def test_every_mlx_call_runs_on_the_engine_thread(mode, small_checkpoint, tmp_path):
    config = ControllerConfig(
        mode=mode,
        max_steps=8,
        input_file=AUDIO / "greeting.wav",
        output_file=tmp_path / "agent.wav",
        record_dir=tmp_path / "rec",
    )

    async def main(watch: MlxCallWatch) -> tuple[Events, int | None]:
        events = Events()
        conv = create_conversation(
            ModelLoader(str(small_checkpoint)),
            events,
            config,
            audio=file_factory(),
            memory_probe=memory_usage,
        )
        await conv.start()
        await events.wait_for(ended)
        await conv.reset()  # a new session, on the engine thread too
        await conv.shutdown()
        return events, conv.engine.thread_ident

    with MlxCallWatch() as watch:
        events, engine_thread = asyncio.run(main(watch))
    assert engine_thread is not None
    assert watch.threads() == {engine_thread}, watch.report(engine_thread)
    seen = watch.calls[engine_thread]
    assert seen["mlx.core.load"] > 0 and seen["mlx.core.eval"] > 10  # loading and stepping
    assert seen["mlx.core.get_active_memory"] > 0  # the memory figures come from there too
    assert events.of(MemoryUsage) and events.of(MemoryUsage)[-1].device_bytes > 0
    if mode == "duplex":
        assert events.of(TextOut)  # the random model says something


EXIT_AFTER_A_CONVERSATION = """
import asyncio, sys
from personaplex_tui.conversation import AudioFactory, ControllerConfig, create_conversation
from personaplex_tui.events import Notice
from personaplex_tui.model_loader import ModelLoader, release_mlx_thread

async def main(checkpoint, wav, out):
    ended = asyncio.Event()
    def sink(event):
        if isinstance(event, Notice) and "has ended" in event.message:
            ended.set()
    config = ControllerConfig(mode="duplex", input_file=wav, output_file=out)
    audio = AudioFactory(realtime_files=False, file_end="end")
    conv = create_conversation(
        ModelLoader(checkpoint), sink, config, audio=audio, release=release_mlx_thread
    )
    await conv.start()
    await asyncio.wait_for(ended.wait(), 60)
    await conv.shutdown()

asyncio.run(main(*sys.argv[1:]))
"""


def test_the_process_exits_cleanly_right_after_a_conversation(small_checkpoint, tmp_path):
    # Without `release_mlx_thread` (MLX's streams of the engine thread destroyed on that thread)
    # about 4 runs in 10 abort at exit: "terminate called without an active exception".
    argv = [str(small_checkpoint), str(AUDIO / "greeting.wav"), str(tmp_path / "agent.wav")]
    for _ in range(6):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_AFTER_A_CONVERSATION, *argv],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
