"""MLX's CUDA backend launches the step's kernels one by one, not as CUDA graphs (faster here).

MLX records the kernels of each batch of up to 100 operations into a CUDA graph, updates the
cached executable graph and launches it. A full-duplex step is ~180 kernels around our persistent
ones, and on one H200 CUPTI showed the first kernels of each step's graph (fills and copies of a
few bytes) taking 150-580 us instead of 1-3 us. Launched directly, the full-duplex step took
5.97-6.30 ms p50 against 6.39-6.50 ms with graphs (`ppx-tui bench`, one process per run, the two
modes alternated, five rounds), and the LM step alone was unchanged at 4.5-4.7 ms.
docs/cuda-kernels.md §Where a step's GPU time goes has the timeline and the commands. Metal and
the CPU ignore the variable.
"""

from __future__ import annotations

import os

ENV_VAR = "MLX_USE_CUDA_GRAPHS"


def launch_directly() -> bool:
    """Set `$MLX_USE_CUDA_GRAPHS=0` unless the user set it. Returns whether it was set here.

    Call it before MLX launches its first kernel (MLX reads the variable once, then).
    """
    if os.environ.get(ENV_VAR) is not None:
        return False
    os.environ[ENV_VAR] = "0"
    return True


def cuda_graphs() -> str:
    """ "on" or "off": whether MLX records its CUDA kernels into graphs in this process, as it
    reads the variable (an integer, 0 for off; unset or unreadable: MLX's default, on)."""
    try:
        return "off" if int(os.environ.get(ENV_VAR, "1")) == 0 else "on"
    except ValueError:
        return "on"
