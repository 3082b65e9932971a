"""The `ppx-tui` console script: Ctrl+C while the command line's modules load is a clean stop too.

`personaplex_tui.cli` imports every command's modules (numpy, MLX, the model) before its `main`
installs the signal policy (`stop_signals`); that takes about half a second, longer on a cold
disk. A Ctrl+C in that window ends here as it does later: "ppx-tui: interrupted.", exit 130,
no traceback. A chat whose conversation did not stop in time ends the process here without
waiting for its stuck threads (`stuck_exit`), which only this console script does.
"""

from __future__ import annotations

import os
import signal
import sys


def reopen_closed_std_streams() -> None:
    """A standard stream the caller closed (`>&-`, `2>&-`) becomes /dev/null. Otherwise
    Python's sys.stdout is None (every print a traceback), and the next file opened takes its
    number: an input opened as fd 2 was read while the libraries' messages there were
    filtered, and said to be corrupt."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def main() -> int:
    """Load the command line and run it."""
    reopen_closed_std_streams()
    try:
        from personaplex_tui.cli import main as run
    except KeyboardInterrupt:
        from personaplex_tui.stop_signals import stopped_sentence

        print(f"ppx-tui: {stopped_sentence(signal.SIGINT)}", file=sys.stderr)
        return 128 + signal.SIGINT
    code = run()
    from personaplex_tui.stop_signals import POLICY

    POLICY.ignore_rest()  # the work is done: a late signal must not change the exit code
    from personaplex_tui.stuck_exit import exit_if_asked

    exit_if_asked(code)  # a chat whose threads did not stop ends here, not waiting for them
    return code
