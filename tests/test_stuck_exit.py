"""A shutdown that does not finish: the app quits anyway and says so (`shutdown_incomplete`), at
once when Ctrl+C comes again while it waits (`ShutdownWait`), its loop is not waited on
(`stuck_exit.run_app`), and the console script's hard exit ends a process whose threads never
stop, with its exit code and its output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from personaplex_tui import stuck_exit
from personaplex_tui.tui import shutdown_wait
from personaplex_tui.tui.screens.settings_screen import SettingsScreen
from personaplex_tui.tui.shutdown_wait import SLOW_NOTICE
from tests.test_tui_app import SIZE, build, fake_of, ready, until
from tests.tui_pty import ROOT


@pytest.mark.asyncio
async def test_q_quits_even_when_the_shutdown_hangs_and_says_it_did_not_finish(monkeypatch):
    monkeypatch.setattr("personaplex_tui.tui.app.SHUTDOWN_TIMEOUT_S", 0.2)
    app, factory, _ = build(shutdown_hangs=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, timeout_s=5)
    assert fake_of(factory).names()[-1] == "shutdown"
    assert app.shutdown_incomplete and app.return_code == 0


@pytest.mark.asyncio
async def test_a_crash_while_the_shutdown_hangs_still_leaves_it_behind(monkeypatch):
    """A bug's exception during the wait ends the app (and its workers): the shutdown still
    under way is marked incomplete, or the CLI would wait for its threads for good."""
    monkeypatch.setattr("personaplex_tui.tui.app.SHUTDOWN_TIMEOUT_S", 30.0)
    app, factory, _ = build(shutdown_hangs=True)
    with contextlib.suppress(ZeroDivisionError):
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot, app)
            await pilot.press("q")
            await until(pilot, lambda: fake_of(factory).names()[-1:] == ["shutdown"])
            app.call_later(lambda: 1 / 0)  # any handler's bug while the wait runs
            await until(pilot, lambda: not app.is_running, timeout_s=5)
    assert app.crashed and app.shutdown_incomplete


def record_notices(app: object, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The messages the app's notifications show from now on (still shown)."""
    notices: list[str] = []
    notify = app.notify  # type: ignore[attr-defined]

    def recorded(message: str, **options: object) -> None:
        notices.append(message)
        notify(message, **options)

    monkeypatch.setattr(app, "notify", recorded)
    return notices


@pytest.mark.asyncio
@pytest.mark.parametrize("first", ["ctrl+c", "q"])
async def test_ctrl_c_again_while_the_shutdown_hangs_quits_at_once(monkeypatch, first):
    """The wait for the shutdown held the app's message queue: a second Ctrl+C (a key in the
    screen's raw mode) was not even heard until the 10 s were over. It now ends the wait at once
    (exit 130), and the screen says so once stopping takes a second; other keys do nothing."""
    monkeypatch.setattr("personaplex_tui.tui.app.SHUTDOWN_TIMEOUT_S", 60.0)
    app, _, _ = build(shutdown_hangs=True)
    notices = record_notices(app, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(first)
        await until(pilot, lambda: SLOW_NOTICE in notices, timeout_s=5)
        await pilot.press("s")  # while it stops: no settings screen
        assert app.is_running and not isinstance(app.screen, SettingsScreen)
        pressed = time.monotonic()
        await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running, timeout_s=5)
    assert time.monotonic() - pressed < 1
    assert app.shutdown_incomplete and app.stopping.left_by == signal.SIGINT
    assert app.return_code == app.exit_code == 130


@pytest.mark.asyncio
async def test_settings_saved_while_the_chat_stops_are_not_applied(monkeypatch):
    """A stop signal with the settings open: saving them then applies nothing to the
    conversation being shut down (the screen closes as on cancel)."""
    monkeypatch.setattr("personaplex_tui.tui.app.SHUTDOWN_TIMEOUT_S", 60.0)
    monkeypatch.setattr(shutdown_wait, "DOUBLE_PRESS_S", 0.0)  # the second signal leaves at once
    app, factory, _ = build(shutdown_hangs=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#echo").toggle()  # a change that would be applied
        app.stop_for_signal(signal.SIGTERM)
        await until(pilot, lambda: fake_of(factory).names()[-1:] == ["shutdown"])
        await pilot.click("#save")  # (ctrl+s is refused by the app's check_action then)
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await pilot.pause(0.2)
        names = fake_of(factory).names()
        app.stop_for_signal(signal.SIGTERM)  # leave without waiting
        await until(pilot, lambda: not app.is_running, timeout_s=5)
    assert "apply_settings" not in names and names[-1] == "shutdown"


@pytest.mark.asyncio
async def test_ctrl_c_twice_at_once_is_one_press_and_the_shutdown_gets_its_time(monkeypatch):
    """A double press (a reflex) is not "leave now": the shutdown is waited for (1 s here)."""
    monkeypatch.setattr("personaplex_tui.tui.app.SHUTDOWN_TIMEOUT_S", 1.0)
    monkeypatch.setattr(shutdown_wait, "DOUBLE_PRESS_S", 5.0)  # (however slow the presses)
    app, _, _ = build(shutdown_hangs=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        pressed = time.monotonic()
        await pilot.press("ctrl+c", "ctrl+c")
        await until(pilot, lambda: not app.is_running, timeout_s=5)
    assert time.monotonic() - pressed >= 1.0
    assert app.shutdown_incomplete and app.stopping.left_by is None and app.exit_code == 130


class LoopApp:
    """Stands for the chat app: its run leaves a task that ignores being cancelled and a thread
    of the default executor blocked on `release`, as a stuck shutdown does."""

    def __init__(self, incomplete: bool) -> None:
        self.shutdown_incomplete = incomplete
        self.release = threading.Event()
        self.finished: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        assert loop is not None and not loop.is_closed()
        self.loop = loop
        loop.run_until_complete(self._main())

    async def _main(self) -> None:
        asyncio.ensure_future(self._stubborn())
        asyncio.ensure_future(asyncio.to_thread(self._blocked))
        await asyncio.sleep(0.05)

    async def _stubborn(self) -> None:
        for _ in range(100):  # gives up after 100 cancellations, or 5 s
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)
                if self.release.is_set():
                    break
        self.finished.append("task")

    def _blocked(self) -> None:
        self.release.wait(10)
        self.finished.append("thread")


def test_after_an_incomplete_shutdown_the_loop_is_left_without_waiting():
    app = LoopApp(incomplete=True)
    started = time.monotonic()
    try:
        stuck_exit.run_app(app)
        took = time.monotonic() - started
    finally:
        app.release.set()
    assert stuck_exit.GRACE_S <= took < stuck_exit.GRACE_S + 1.5
    assert "thread" not in app.finished
    assert app.loop is not None and app.loop.is_closed()


def test_after_a_complete_shutdown_the_loop_ends_as_asyncio_run_ends():
    app = LoopApp(incomplete=False)
    threading.Timer(0.5, app.release.set).start()
    stuck_exit.run_app(app)  # the task and the thread are waited for
    assert sorted(app.finished) == ["task", "thread"]
    assert app.loop is not None and app.loop.is_closed()


HARD_EXIT = """
import threading, time
from personaplex_tui import stuck_exit
stuck_exit.exit_if_asked(5)  # not asked: returns
threading.Thread(target=time.sleep, args=(3600,), name="ppx-engine_0").start()
print("the lines", flush=False)
stuck_exit.leave_without_waiting()
stuck_exit.exit_if_asked(130)
print("not reached")
"""


def test_the_hard_exit_ends_a_process_whose_thread_never_stops_with_its_code(tmp_path):
    log = tmp_path / "ppx-tui.log"  # (no logging set up: the stuck threads are written here)
    proc = subprocess.run(
        [sys.executable, "-c", HARD_EXIT], capture_output=True, text=True, cwd=ROOT, timeout=30,
        env={**os.environ, "PPX_TUI_LOG": str(log)},
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert proc.stdout == "the lines\n"
    assert proc.stderr == "" and "thread ppx-engine_0" in log.read_text()


def test_a_close_that_hangs_is_left_behind_after_its_timeout(monkeypatch):
    """A sound server that hangs holds PortAudio's Pa_StopStream for good: sound-check and
    respond close their devices with `run_in_time`, and leave the close behind."""
    monkeypatch.setattr(stuck_exit, "_asked", False)
    release = threading.Event()
    started = time.monotonic()
    try:
        assert not stuck_exit.run_in_time(release.wait, 0.2, "test-close")
        assert 0.2 <= time.monotonic() - started < 2 and stuck_exit._asked
    finally:
        release.set()
    monkeypatch.setattr(stuck_exit, "_asked", False)
    assert stuck_exit.run_in_time(lambda: None, 5, "test-close") and not stuck_exit._asked

    def fails() -> None:
        raise OSError("the device is gone")

    with pytest.raises(OSError, match="the device is gone"):
        stuck_exit.run_in_time(fails, 5, "test-close")
    assert not stuck_exit._asked


CLOSE_INTERRUPTED = """
import signal, threading
from personaplex_tui import stuck_exit
def stop(signum, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, stop)
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    stuck_exit.run_in_time(threading.Event().wait, 60, "close")
except KeyboardInterrupt:
    print("interrupted", flush=True)
stuck_exit.exit_if_asked(130)
"""


def test_a_signal_while_a_close_hangs_leaves_it_behind_too(tmp_path):
    """A `Thread.join` that a signal interrupts marks the thread ended (CPython 3.11): the
    stuck close was not seen, so no hard exit was asked for and the process waited for good."""
    proc = subprocess.run(
        [sys.executable, "-c", CLOSE_INTERRUPTED], capture_output=True, text=True, cwd=ROOT,
        timeout=30, env={**os.environ, "PPX_TUI_LOG": str(tmp_path / "ppx-tui.log")},
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (130, "interrupted\n"), proc.stderr


SIGNAL_ELSEWHERE = """
import signal, threading, time
from personaplex_tui import stuck_exit
def stop(signum, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGINT, stop)
def interrupt():
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # taken on this thread
threading.Thread(target=interrupt, daemon=True).start()
began = time.monotonic()
try:
    stuck_exit.run_in_time(threading.Event().wait, 10, "start")
except KeyboardInterrupt:
    print("interrupted", flush=True)
print(f"{time.monotonic() - began:.2f}", flush=True)
stuck_exit.exit_if_asked(130)
"""


def test_a_signal_taken_on_another_thread_ends_the_wait_at_once_too(tmp_path):
    """The kernel may run a process's signal handler on any of its threads (and one may come
    just before the wait blocks): the main thread's wait was not woken and Ctrl+C during
    PortAudio's start took its whole 5 s."""
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_ELSEWHERE], capture_output=True, text=True, cwd=ROOT,
        timeout=30, env={**os.environ, "PPX_TUI_LOG": str(tmp_path / "ppx-tui.log")},
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    said, took = proc.stdout.splitlines()
    assert said == "interrupted" and 0.3 <= float(took) < 2, proc.stdout


class _LeftBehindApp:
    """What `chat.run` reads of an app whose conversation did not stop."""

    def __init__(self, abandoned: list[str]) -> None:
        self.crashed, self.load_error, self.stop_signal = False, None, None
        self.shutdown_incomplete, self.exit_code, self.return_code = True, 0, 0
        self.stopping = shutdown_wait.ShutdownWait()
        self.controller = type("Controller", (), {"abandon": staticmethod(abandoned.append)})()

    def stop_for_signal(self, signum: int) -> None:
        pass


def test_a_ctrl_c_as_the_chat_prints_its_last_lines_cannot_keep_a_stuck_process(monkeypatch):
    """Once the screen is gone the signals are no longer the app's: a Ctrl+C while `chat.run`
    prints raises `Stopped`. The hard exit must have been asked for by then, or the console
    script returns and the interpreter waits for the stuck threads for good."""
    from personaplex_tui import stderr_capture
    from personaplex_tui.commands import chat
    from personaplex_tui.settings import Settings
    from personaplex_tui.stop_signals import Stopped

    abandoned: list[str] = []
    monkeypatch.setattr(stuck_exit, "_asked", False)
    monkeypatch.setattr(stuck_exit, "stuck_threads", lambda: "")
    store = type("S", (), {"warnings": (), "path": Path("settings.toml")})()
    monkeypatch.setattr(chat, "resolve_settings", lambda args: (Settings(), store))
    monkeypatch.setattr(chat, "check_settings", lambda settings: None)
    monkeypatch.setattr(chat, "check_terminal", lambda: None)
    monkeypatch.setattr("personaplex_tui.logs.setup_logging", lambda: None)
    monkeypatch.setattr(stderr_capture, "stderr_to_file", lambda path: contextlib.nullcontext())
    monkeypatch.setattr(chat, "build_app", lambda *a, **k: _LeftBehindApp(abandoned))
    monkeypatch.setattr(stuck_exit, "run_app", lambda app: None)

    def interrupted(line: str) -> None:
        raise Stopped(signal.SIGINT)

    monkeypatch.setattr(chat, "status", interrupted)
    with pytest.raises(Stopped):
        chat.run(None)
    assert stuck_exit._asked  # the console script's exit_if_asked ends the process
