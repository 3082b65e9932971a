"""Save a screenshot of the chat on the small real model (random weights): full duplex, a WAV as
the microphone played in real time, taken after some seconds of conversation.

    python -m tests.chat_screenshot docs/screenshot.svg [--seconds 9] [--size 120x40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from personaplex_tui.commands.chat import build_app
from personaplex_tui.conversation import AudioFactory
from personaplex_tui.settings import Settings
from tests.checkpoints import write_small_checkpoint
from tests.conversation_fakes import CONVERSATION


async def screenshot(path: Path, size: tuple[int, int], seconds: float, folder: Path) -> None:
    settings = Settings().replace(
        mode="duplex",
        voice="VARF2",
        prompt="customer-service",
        model="small-random-weights",  # a folder in the current one (a short name on screen)
        input_file=CONVERSATION,
        output_file=folder / "agent.wav",
    )
    app = build_app(settings, audio=AudioFactory(realtime_files=True), cursor_blink=False)
    async with app.run_test(size=size) as pilot:
        while app.state != "duplex":
            await pilot.pause(0.05)
        await pilot.pause(seconds)
        app.save_screenshot(filename=path.name, path=str(path.parent))
        await pilot.press("q")
        await pilot.pause(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the SVG to write")
    parser.add_argument("--seconds", type=float, default=9.0, help="conversation before the shot")
    parser.add_argument("--size", default="120x40", help="terminal size, WxH")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    path = args.path.resolve()
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            write_small_checkpoint(Path(tmp) / "small-random-weights")
            asyncio.run(screenshot(path, (width, height), args.seconds, Path(tmp)))
        finally:
            os.chdir(here)


if __name__ == "__main__":
    main()
