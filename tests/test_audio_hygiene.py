"""Importing the audio package loads neither PortAudio, onnxruntime, torch nor the UI."""

import subprocess
import sys

from tests.import_probe import modules_loaded_by


def test_audio_package_import_is_light():
    loaded = modules_loaded_by("import personaplex_tui.audio")
    assert loaded & {"sounddevice", "onnxruntime", "torch", "textual"} == set()


def test_vad_runs_without_torch():
    code = (
        "import sys, numpy as np; from personaplex_tui.audio import SileroVad;"
        "p = SileroVad().probability(np.zeros(512, np.float32));"
        "print('onnxruntime' in sys.modules, 'torch' in sys.modules, 0.0 <= p <= 1.0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "True"]
