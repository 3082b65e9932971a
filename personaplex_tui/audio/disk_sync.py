"""Files synced to the disk now and then on a thread of their own, not the one writing them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence


class BackgroundSync:
    """Syncs files to the disk every `every_s` seconds when they have grown, and once more when
    stopped, on a daemon thread of its own (`name`) through its own copies of their file
    descriptors: the owner's lock is never held during an fsync, so the thread that writes never
    waits on the disk, and the last sync still happens after the owner closed its files.

    `grown()` returns how much the owner has written so far (any number that changes with each
    write; read without a lock). A sync that fails (EIO, ENOSPC) calls `on_error(error)` on the
    sync thread, once: nothing is synced after it. Raises OSError when no file descriptor is left
    for its copies (the owner goes on without background syncs)."""

    def __init__(
        self,
        fds: Sequence[int],
        every_s: float,
        grown: Callable[[], int],
        on_error: Callable[[OSError], None],
        name: str,
    ) -> None:
        self._fds: list[int] = []
        try:
            for fd in fds:
                self._fds.append(os.dup(fd))  # stays valid after the owner's file closes
        except OSError:
            self._close_fds()
            raise
        self._every_s = every_s
        self._grown = grown
        self._on_error = on_error
        self._synced = -1  # what `grown()` said at the last sync (-1: none yet)
        self._failed = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, wait: bool) -> None:
        """Sync one last time and end; `wait=False` returns at once (the sync still happens)."""
        self._stopping.set()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self._every_s):
                self._sync()
            self._sync()  # the last one, on close
        finally:
            self._close_fds()

    def _sync(self) -> None:
        grown = self._grown()
        if grown == self._synced or self._failed:
            return
        try:
            for fd in self._fds:
                os.fsync(fd)
        except OSError as e:
            self._failed = True
            self._on_error(e)
        self._synced = grown

    def _close_fds(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
