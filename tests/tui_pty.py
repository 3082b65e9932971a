"""Test helper: `ppx-tui` in a real pseudo-terminal (its controlling terminal), as a user starts it.

Everything the program writes to the terminal is collected, so tests can check the escape
sequences that restore it; signals are sent with `os.kill`, like `kill` or a closing terminal.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What Textual writes when it gives the terminal back: main screen, cursor shown, mouse off.
RESTORE_SEQUENCES = ("\x1b[?1049l", "\x1b[?25h", "\x1b[?1000l", "\x1b[?1003l", "\x1b[?1006l")
_ESCAPE = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def user_env(tmp: Path) -> dict[str, str]:
    """The environment of a user whose settings file and log lie in `tmp`, offline."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TERM": "xterm-256color",  # a user's terminal (CI may run with TERM=dumb, which is refused)
        "PPX_TUI_CONFIG": str(tmp / "settings.toml"),
        "PPX_TUI_LOG": str(tmp / "ppx-tui.log"),
    }


def after_screen(output: str) -> list[str]:
    """The lines written once the app left the alternate screen, without escape sequences."""
    _, _, rest = output.rpartition("\x1b[?1049l")
    return [line.strip() for line in _ESCAPE.sub("", rest).splitlines() if line.strip()]


def _as_terminal_session() -> None:
    """In the child: a new session whose controlling terminal is the pty on fd 0, with the
    signal dispositions of an interactive shell's foreground job."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class PtyProcess:
    """`python -m personaplex_tui ARGS` (or `python PROGRAM ARGS`) on a pty of `size` (columns,
    rows); `output` is all it wrote to the terminal so far (decoded)."""

    def __init__(
        self,
        args: list[str],
        *,
        env: dict[str, str],
        root: Path = ROOT,
        size: tuple[int, int] = (100, 30),
        program: tuple[str, ...] = ("-m", "personaplex_tui"),
    ) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, *program, *args],
            cwd=root,
            env={**env, "PYTHONPATH": str(root), "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=_as_terminal_session,
            close_fds=True,
        )
        os.close(slave)
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._hung_up = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._hung_up.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.2)
                if not ready:
                    if self.proc.poll() is not None:
                        return
                    continue
                chunk = os.read(self.master, 1 << 16)
            except OSError:  # EIO: every slave end is closed (the process is gone)
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk

    @property
    def output(self) -> str:
        with self._lock:
            return bytes(self._raw).decode("utf-8", errors="replace")

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `condition` until it holds; fail with the end of the terminal output if not."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"not {what} (exit {self.proc.poll()}); terminal: {self.output[-1500:]!r}"
                )
            time.sleep(0.05)

    def kill(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def hang_up(self) -> None:
        """Close the terminal, as closing its window does (the kernel sends SIGHUP)."""
        self._hung_up.set()  # the reader stops first: nothing is read from a closed terminal
        self._reader.join(timeout=5)
        os.close(self.master)
        self.master = -1

    def wait(self, timeout: float) -> int:
        """The exit code (-N when killed by signal N); the terminal output is read to the end."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        """Kill the process if it still runs (a failed test) and close the terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        if self.master >= 0:
            os.close(self.master)
