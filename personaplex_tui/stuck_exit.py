"""The way out when the chat's conversation or a device's close did not stop: end without waiting.

A shutdown that times out (an audio device whose close hangs, a model step that never returns)
leaves threads that never end: `asyncio.run` waits for its executor's threads when it closes its
loop, and the interpreter joins `concurrent.futures`' threads at exit, so the process hung after
the screen closed, and only kill -9 ended it (the signal policy ignores every later signal).

`run_app` runs the Textual app on a loop that, after such a shutdown, leaves what is stuck
behind; `chat.run` then asks for the hard exit (`leave_without_waiting`), which only the console
script performs (`entry.main` calls `exit_if_asked`): a test calling `cli.main` in its own
process gets its exit code back as usual. `run_in_time` does the same for a command's calls into
PortAudio that a sound server which hangs (stopped, not dead) holds for good, with neither a
message nor Ctrl+C ever coming: closing its devices (Pa_StopStream: sound-check, respond) and
PortAudio's start (Pa_Initialize: `audio.devices.portaudio`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)
GRACE_S = 1.0  # what the cancelled shutdown may still finish (the files) once the app is gone
SIGNAL_CHECK_S = 0.1  # `run_in_time` acts on a stop signal within this, whichever thread took it
_asked = False


class RunsOnALoop(Protocol):
    """The chat app, as `run_app` sees it."""

    shutdown_incomplete: bool

    def run(self, *, loop: asyncio.AbstractEventLoop | None = None) -> object: ...


def run_app(app: RunsOnALoop) -> None:
    """`app.run()` on a new event loop, closed as `asyncio.run` closes its own (the tasks left
    are cancelled and awaited, then the default executor's threads), except after a shutdown
    that did not finish (`app.shutdown_incomplete`): then they get GRACE_S, and what is still
    stuck is left behind."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app.run(loop=loop)
    finally:
        try:
            _wind_down(loop, wait=not app.shutdown_incomplete)
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # (its default executor is shut down without waiting)


def _wind_down(loop: asyncio.AbstractEventLoop, wait: bool) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        gathered = asyncio.gather(*tasks, return_exceptions=True)
        loop.run_until_complete(gathered if wait else asyncio.wait({gathered}, timeout=GRACE_S))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception when the app ended",
                    "exception": task.exception(),
                    "task": task,
                }
            )
    if wait:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())


def stuck_threads() -> str:
    """The threads still running but the main one (those that are not daemons, and ours), each
    with where it is now, for the log."""
    frames = sys._current_frames()
    parts = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.ident not in frames:
            continue
        if thread.daemon and not thread.name.startswith("ppx-"):
            continue
        stack = "".join(traceback.format_stack(frames[thread.ident])[-4:])
        parts.append(f"thread {thread.name}:\n{stack}")
    return "".join(parts) or "none\n"


def run_in_time(work: Callable[[], None], timeout_s: float, name: str) -> bool:
    """Run `work` (a call into PortAudio) on a daemon thread named `ppx-{name}` and wait up to
    `timeout_s`: True once it returned (what it raised is raised here), False while it is still
    stuck; then, or when a stop signal ends the wait, the console script is asked to leave
    without waiting for it (`leave_without_waiting`)."""
    failure: list[BaseException] = []
    done = threading.Event()  # not `is_alive`: a join a signal interrupts marks a thread ended

    def run() -> None:
        try:
            work()
        except BaseException as e:  # handed to the caller below
            failure.append(e)
        finally:
            done.set()

    threading.Thread(target=run, name=f"ppx-{name}", daemon=True).start()
    try:
        _wait(done, timeout_s)  # a signal's handler runs here (`Stopped`), unlike in PortAudio
    finally:
        if not done.is_set():
            leave_without_waiting()
    if not done.is_set():
        return False
    if failure:
        raise failure[0]
    return True


def _wait(done: threading.Event, timeout_s: float) -> None:
    """`done.wait(timeout_s)`, in waits of SIGNAL_CHECK_S: a signal's Python handler runs on the
    main thread between two bytecodes, and a wait ends early for it only where the signal woke
    this very thread; one whose handler ran on another thread (the kernel may pick any) or
    just before the wait blocked left the whole timeout to run."""
    deadline = time.monotonic() + timeout_s
    while not done.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        done.wait(min(left, SIGNAL_CHECK_S))


def leave_without_waiting() -> None:
    """Ask the console script to end the process at once when the command returns; the stuck
    threads go to the log file (set up here for a command that has none), not the terminal."""
    global _asked
    _asked = True
    if not log.hasHandlers():  # a command's own: Python's last resort writes to the terminal
        from personaplex_tui.logs import setup_logging

        setup_logging()
    log.error("exiting without waiting for stuck threads:\n%s", stuck_threads().rstrip())


def exit_if_asked(code: int) -> None:
    """After `leave_without_waiting`: flush the log and the terminal, then end the process with
    `code` (`os._exit`: no thread is joined); else return."""
    if not _asked:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # the terminal is gone, or the stream closed
            pass
    os._exit(code)
