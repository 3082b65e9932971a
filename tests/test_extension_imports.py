"""A stop signal while a C extension initialises (personaplex_tui/extension_imports.py): it is
held until the init returns, then stops the command; the init itself is not broken by it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.tui_pty import ROOT

# A fresh interpreter with the commands' signal policy; a finder raises SIGINT when NumPy's C
# init (or soxr's nanobind init) imports the module named, which it does mid-init.
SCRIPT = textwrap.dedent(
    """
    import importlib.machinery, signal, sys
    from personaplex_tui.stop_signals import POLICY, Stopped
    POLICY.install()
    if sys.argv[1] == "held":
        from personaplex_tui.extension_imports import hold_signals_in_extension_imports
        hold_signals_in_extension_imports()
    inside = []
    loader = importlib.machinery.ExtensionFileLoader
    def noted(method):
        def run(self, arg):
            inside.append(1)
            try:
                return method(self, arg)
            finally:
                inside.pop()
        return run
    loader.create_module = noted(loader.create_module)
    loader.exec_module = noted(loader.exec_module)
    class SignalMidInit:
        def find_spec(self, name, path=None, target=None):
            if inside and name == sys.argv[2]:
                signal.raise_signal(signal.SIGINT)
            return None
    sys.meta_path.insert(0, SignalMidInit())
    try:
        __import__(sys.argv[3])
    except Stopped as stop:
        print("stopped", stop.signum)
    except BaseException as error:
        print("broken", type(error).__name__)
    else:
        print("imported", POLICY.received)
    """
)


def _import_with_a_signal_mid_init(mode: str, asked: str, module: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, asked, module],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "asked, module",
    [("datetime", "numpy"), ("numpy._core._exceptions", "numpy"), ("atexit", "soxr")],
    ids=["numpy-datetime", "numpy-own-module", "soxr-nanobind"],
)
def test_a_signal_while_an_extension_initialises_stops_once_it_has(asked, module):
    """Held: the init finishes and then `Stopped` is raised. Without it, NumPy's init failed
    ('PyCapsule_Import could not import module "datetime"': an ImportError that calls the
    install broken) and soxr's nanobind swallowed the stop (imported, the signal received)."""
    assert _import_with_a_signal_mid_init("held", asked, module) == "stopped 2"


def test_without_the_hold_the_signal_breaks_or_is_swallowed_by_the_init():
    """What the hold is for, shown on this machine's NumPy and soxr (the same script)."""
    assert _import_with_a_signal_mid_init("plain", "datetime", "numpy") == "broken ImportError"
    assert _import_with_a_signal_mid_init("plain", "atexit", "soxr") == "imported 2"


def test_the_console_script_holds_signals_in_every_later_extension_import():
    code = (
        "import sys, importlib.machinery as m; sys.argv = ['ppx-tui', 'prompts', '--json'];"
        "from personaplex_tui.entry import main; code = main();"
        "L = m.ExtensionFileLoader;"
        "print(code, L.create_module._ppx_signals_held, L.exec_module._ppx_signals_held)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip().splitlines()[-1] == "0 True True", proc.stderr
