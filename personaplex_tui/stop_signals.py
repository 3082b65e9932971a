"""One signal policy for every command: SIGINT, SIGTERM and SIGHUP stop the work, files are finished.

`ppx-tui`'s `main` installs the handlers once for the whole process (`POLICY.install()`); they
stay until the process ends, so a signal arriving while it winds down (threads being joined)
never prints a traceback. The first signal stops the command:

- by default, `Stopped` is raised in the main thread (nothing is being written yet: loading,
  checking files) and `main` exits 128 + the signal's number (130, 143, 129);
- inside `POLICY.deferred(on_stop)`, it is only recorded, and `on_stop(signum)` is called (it
  may schedule a shutdown on an event loop); the command stops between two model steps
  (`POLICY.check()` raises `Stopped`), finishes its files, says what it made, and raises
  `Stopped` again (or returns 128 + the number itself, as the chat does).

Every later signal is ignored: the shutdown already under way finishes; but inside
`POLICY.deferred(on_stop, repeats=True)` it calls `on_stop(signum)` again (the chat: a second
Ctrl+C leaves without waiting for its shutdown). A signal that was ignored when the process
started (`nohup`, a background job) stays ignored.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

StopAction = Callable[[int], None]


def _stop_signals() -> tuple[signal.Signals, ...]:
    names = ("SIGINT", "SIGTERM", "SIGHUP")  # SIGHUP: the terminal went away
    return tuple(getattr(signal, n) for n in names if hasattr(signal, n))


def signal_name(signum: int) -> str:
    """`SIGINT`, `SIGTERM`, ... for a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code_for(signum: int) -> int:
    """The shell's convention: 128 + the signal's number (SIGINT 130, SIGTERM 143, SIGHUP 129)."""
    return 128 + int(signum)


def stopped_sentence(signum: int) -> str:
    """What the command line says last: "interrupted." (Ctrl+C) or "stopped by SIGTERM."."""
    return "interrupted." if signum == signal.SIGINT else f"stopped by {signal_name(signum)}."


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; raised in the main thread where the command can stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signum)


def stop_behind(error: BaseException) -> Stopped | None:
    """The `Stopped` that `error` was raised from, if any: Python wraps one raised while a class
    is made (a signal during a module's import: "Error calling __set_name__", a RuntimeError)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, Stopped):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


class SignalPolicy:
    """The handlers of SIGINT, SIGTERM and SIGHUP, and what the first one does (see the module)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._on_stop: StopAction | None = None  # None: raise Stopped at once
        self._deferred = False
        self._repeats = False  # later signals call _on_stop too
        self._abrupt = False  # a signal ends the process at once (`abrupt`)
        self._quiet = False  # signals are recorded only, for good (`quiet`)
        self._settled = False  # the outcome is reported: later signals change nothing (`settle`)
        self._installed = False

    def install(self) -> None:
        """Handle the stop signals from now on, for the rest of the process (main thread only)."""
        if self._installed:
            return
        for sig in _stop_signals():
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # nohup, or a background job of a script: keep ignoring it
            signal.signal(sig, self._handle)
        self._installed = True

    @property
    def exit_code(self) -> int | None:
        """128 + the signal's number once one arrived, else None."""
        return None if self.received is None else exit_code_for(self.received)

    def check(self) -> None:
        """Raise `Stopped` if a stop signal arrived (call it between two steps)."""
        if self.received is not None:
            raise Stopped(self.received)

    @contextlib.contextmanager
    def deferred(
        self, on_stop: StopAction | None = None, *, repeats: bool = False
    ) -> Iterator[None]:
        """Inside: a signal is recorded and `on_stop(signum)` called, nothing is raised; with
        `repeats`, every later signal calls `on_stop` too."""
        saved = self._deferred, self._on_stop, self._repeats
        self._deferred, self._on_stop, self._repeats = True, on_stop, repeats
        try:
            yield
        finally:
            self._deferred, self._on_stop, self._repeats = (
                (True, None, False) if self._quiet else saved  # `quiet` is for good
            )

    @contextlib.contextmanager
    def abrupt(self) -> Iterator[None]:
        """Inside (fetching and loading a model from the command line, nothing of ours being
        written): a stop signal ends the process at once with 128 + its number, saying so. A
        raised `Stopped` waited for huggingface_hub's download threads, which read a file's
        body to its end: a Ctrl+C took minutes on a model of gigabytes, and a second one was
        ignored. (The hub's cache keeps the finished files; the next run fetches the rest.)"""
        saved = self._abrupt
        self._abrupt = True
        try:
            yield
        finally:
            self._abrupt = saved

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Around a call into a C library that calls back into Python (libsndfile reading a
        Python file object, through cffi): a stop signal is recorded there and raised as
        `Stopped` once the block ends. cffi swallows what its callback raises (it prints the
        traceback, the read comes back short): a Ctrl+C while a recording was read said it was
        truncated, exit 2. Changes nothing off the main thread, inside `deferred` or `abrupt`;
        raises only for a signal that came inside."""
        if (
            self._deferred
            or self._abrupt
            or threading.current_thread() is not threading.main_thread()
        ):
            yield
            return
        before = self.received
        try:
            with self.deferred():
                yield
        finally:
            if before is None:  # (one that came before was raised then, and dealt with)
                self.check()

    def quiet(self) -> None:
        """From now on (the command returned, or its work is done and what it made is being
        reported), signals are recorded only, also once a `deferred` block around this ends."""
        self._quiet = True
        self._deferred, self._on_stop, self._repeats = True, None, False

    def settle(self) -> int | None:
        """The signal the command's report names, and `main` exits by (None: none came). Call
        it as the report is made, after `quiet`: a signal after it changes neither, so a
        `--json` that says `"stopped_by": null` is never followed by an exit of 128 + N. The
        process still ends as soon as the report is out."""
        self.quiet()
        self._settled = True
        return self.received

    def ignore_rest(self) -> None:
        """The process is about to exit: ignore the stop signals outright. The interpreter's
        teardown puts back the default handlers, so a second Ctrl+C a few ms after the first
        (while MLX and the threads wind down) killed the process by its signal (exit -2, not
        130). For the console script only: a test runner calling `main` keeps its handlers."""
        if not self._installed:
            return
        for sig in _stop_signals():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._settled:  # the outcome was reported: nothing changes it
            return
        if self.received is not None:  # a second signal: the shutdown under way finishes,
            if self._repeats and self._on_stop is not None:  # unless asked to hear of it
                self._on_stop(signum)
            return
        self.received = signum
        if self._abrupt and not self._deferred:
            try:
                os.write(2, f"ppx-tui: {stopped_sentence(signum)}\n".encode())
            except OSError:  # (no terminal left: the exit code says it)
                pass
            os._exit(exit_code_for(signum))
        if not self._deferred:
            raise Stopped(signum)
        if self._on_stop is not None:
            self._on_stop(signum)


POLICY = SignalPolicy()
