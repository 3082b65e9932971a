"""The chat's wait for its conversation to stop when it quits, and a second Ctrl+C's way out of it.

`q`, Ctrl+C or a stop signal shut the conversation down, and the app waits for that
(`ShutdownWait.wait`) at most its timeout; what did not stop by then is left behind
(`incomplete`: the CLI exits without waiting for its threads, see `stuck_exit`). A second
interrupt while it waits (Ctrl+C, the key or SIGINT, or a second SIGTERM) is the user saying
"leave now": the wait ends at once, the same way (`left_by`). One within DOUBLE_PRESS_S of the
first request is the same press twice and changes nothing (the files are still finished), and
a hangup does not count (the terminal went away: no one is waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial

from personaplex_tui.stop_signals import signal_name

log = logging.getLogger(__name__)
DOUBLE_PRESS_S = 0.5  # a second interrupt sooner than this after the first request repeats it
SLOW_S = 1.0  # a shutdown still under way after this is slow: the user is told the way out
LEAVE_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
SLOW_NOTICE = "Still stopping the model and the audio; Ctrl+C again quits without waiting."


def interrupt_name(signum: int) -> str:
    """What a user calls an interrupt: Ctrl+C for SIGINT, else the signal's name (SIGTERM)."""
    return "Ctrl+C" if signum == signal.SIGINT else signal_name(signum)


class ShutdownWait:
    """When quitting was asked, the wait for the conversation's shutdown, and how it ended."""

    def __init__(self) -> None:
        self.asked_at: float | None = None  # time.monotonic() of the first request to quit
        self.incomplete = False  # the conversation did not stop: timed out, or left at once
        self.left_by: int | None = None  # the second interrupt that ended the wait at once
        self._leave: asyncio.Event | None = None  # set by leave_now, while waiting

    def ask(self) -> bool:
        """Note a request to quit; True for the first one."""
        first = self.asked_at is None
        if first:
            self.asked_at = time.monotonic()
        return first

    def interrupt(
        self, signum: int, loop: asyncio.AbstractEventLoop | None, quit_app: Callable[[], object]
    ) -> None:
        """Ctrl+C or a stop signal (in its handler, on the loop's thread): the first request to
        quit calls `quit_app()` on `loop` (none: not running yet), a later one `leave_now`."""
        call = quit_app if self.ask() else partial(self.leave_now, signum)
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the app is over
                loop.call_soon_threadsafe(call)

    def leave_now(self, signum: int) -> None:
        """A later interrupt (on the loop's thread): stop waiting for the conversation, unless
        no wait is under way, it repeats the first request, or it is not Ctrl+C nor SIGTERM."""
        leave, asked = self._leave, self.asked_at
        if leave is None or asked is None or signum not in LEAVE_SIGNALS:
            return
        if time.monotonic() - asked < DOUBLE_PRESS_S:
            log.info("%s again at once: the shutdown goes on", interrupt_name(signum))
            return
        self.left_by = signum
        leave.set()

    async def wait(
        self,
        shutdown: Awaitable[None],
        timeout_s: float,
        notify: Callable[[str], object] | None = None,
    ) -> None:
        """Run `shutdown` and wait for it, at most `timeout_s` or until `leave_now`; once it
        has taken SLOW_S, `notify` tells the way out. One not done then is cancelled and left
        behind (`incomplete`)."""
        task = asyncio.ensure_future(shutdown)
        self._leave = asyncio.Event()
        leaving = asyncio.ensure_future(self._leave.wait())
        until = time.monotonic() + timeout_s
        try:
            await asyncio.wait(
                {task, leaving}, timeout=min(SLOW_S, timeout_s), return_when=asyncio.FIRST_COMPLETED
            )
            rest = until - time.monotonic()
            if rest > 0 and not (task.done() or leaving.done()):
                if notify is not None:
                    notify(SLOW_NOTICE)
                await asyncio.wait(
                    {task, leaving}, timeout=rest, return_when=asyncio.FIRST_COMPLETED
                )
        except BaseException:  # the wait itself cancelled (a crash ends the app's workers)
            if not task.done():
                self.incomplete = True  # left behind: the CLI must not wait for its threads
                log.error("the app ended while the conversation was still shutting down")
                task.cancel()
            raise
        finally:
            self._leave = None
            leaving.cancel()
        if not task.done():  # (wait_for waited for its cancellation, which can hang too)
            self.incomplete = True  # the CLI exits without waiting for it
            if self.left_by is not None:
                name = interrupt_name(self.left_by)
                log.error("%s again: leaving without waiting for the conversation to stop", name)
            else:
                log.error("the conversation did not shut down within %g s", timeout_s)
            task.cancel()  # what can still stop does; the rest is left behind
        elif not task.cancelled() and task.exception() is not None:  # quitting must not fail
            log.error("shutdown failed", exc_info=task.exception())
