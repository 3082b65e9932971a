"""What the persistent kernels (`model/cuda/temporal.py`, `model/cuda/depformer.py`) share.

Both keep one block per SM resident for a whole step and separate the phases that need all of
a previous phase's outputs with a grid-wide barrier (`ppx_grid_sync` in src/common.cuh): an
atomic counter in the first word of a zeroed work buffer. Blocks are co-resident because there
is one per SM (`sm_count`) and the kernel declares its block size to the compiler
(`source.bounded_kernel`: `__launch_bounds__`), so registers never keep a block from fitting. A
barrier that waits more than a second sets an error flag (the buffer's second word) and every
later one falls through: a kernel can fail, but never hang the GPU. Each kernel's `verify`
compares it with MLX's ops at load (`compare`). docs/cuda-kernels.md §Persistent kernels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model.cuda import source
from model.cuda.gpu_facts import sm_count
from model.cuda.kernel import Kernel
from model.derived import Derived, current

SYNC_WORDS = 32  # the work buffer's first words: barrier counter, error flag


@dataclass(frozen=True)
class StackedWeights:
    """A kernel's quantized projections stacked by input width (the modules hold views):
    qa/sa/ba (weights, scales, biases) of the model-width inputs, qb/sb/bb of the FFN's
    `linear_out`; norms: the RMSNorm weights in the activation dtype, and their epsilon."""

    qa: mx.array
    sa: mx.array
    ba: mx.array
    qb: mx.array
    sb: mx.array
    bb: mx.array
    norms: mx.array
    bits: int
    group_size: int
    eps: float

    @property
    def projections(self) -> tuple[mx.array, ...]:
        """The quantized stacks in the kernels' input order: qa, sa, ba, qb, sb, bb."""
        return (self.qa, self.sa, self.ba, self.qb, self.sb, self.bb)


class PersistentKernel(Kernel, ABC):
    """A kernel that runs a whole part of the model for one position, on weights stacked for it.

    Its source is `src/<source_name>.cu` with `common.cuh` and `src/<source_name>.cuh` as header,
    compiled once per set of constants (`compiled`) with `threads` per block."""

    name: str  # "ppx_temporal": a digest of the source and constants is appended
    source_name: str  # its files under src/ ("temporal": temporal.cu, temporal.cuh)
    header_name: str | None = None  # another kernel's .cuh it shares, if not its own
    own_header: bool = True  # False: `common.cuh` alone is its header (no .cuh of its own)
    outputs: tuple[str, ...]  # the kernel's output names
    threads: int  # per block, one block per SM (`__launch_bounds__`)

    def __init__(self) -> None:
        super().__init__()
        self.body = source.read(f"{self.source_name}.cu")
        own = f"{self.header_name or self.source_name}.cuh" if self.own_header else None
        self.header = source.header(own)
        self._kernels: dict[tuple, Any] = {}

    @abstractmethod
    def inputs(self, consts: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """The kernel's input names for these constants, and any further keyword arguments of
        `source.bounded_kernel` (its macros, say)."""

    def compiled(self, consts: list[tuple[str, Any]]) -> Any:
        """The kernel for these constants (written into its source), compiled on first use."""
        key = (self.name, tuple(consts), self.threads, self.body, self.header)
        if key not in self._kernels:
            names, options = self.inputs(dict(consts))
            self._kernels[key] = source.bounded_kernel(
                self.name,
                names,
                list(self.outputs),
                self.body,
                self.header,
                consts,
                self.threads,
                **options,
            )
        return self._kernels[key]

    def available(self) -> bool:
        """CUDA, its environment variable is not `mlx`, the SM count is known."""
        return super().available() and sm_count() is not None

    @abstractmethod
    def stack(self, lm: Any) -> StackedWeights:
        """The kernel's arrays for `lm`; the modules' weights become views of them."""

    @abstractmethod
    def stack_sources(self, lm: Any) -> tuple[mx.array, ...]:
        """The arrays `stack(lm)` reads (to tell when a stack is stale)."""

    @abstractmethod
    def verify(self, lm: Any, weights: Any) -> float:
        """Run the kernel beside MLX's ops; raise ValueError where they differ."""


class ModuleStack:
    """One module's stacked weights for a persistent kernel (Mimi's transformer, its quantizer),
    made and checked once per set of weights: `prepare(module)` outside compiled graphs, then
    `current(module)` when the module runs."""

    def __init__(self, kernel: PersistentKernel) -> None:
        self.kernel = kernel
        self._derived: Derived | None = None

    def prepare(self, module: Any) -> bool:
        """Stack and `verify` the kernel for `module`'s current weights unless done; a failed
        check turns the kernel off for the process (`Kernel.try_check`). Returns whether the
        module runs on it; off CUDA, unsupported or failed: False, and MLX's ops run."""
        kernel = self.kernel
        if not kernel.enabled() or kernel.supports(module) is not None:
            self._derived = None
            return False
        sources = kernel.stack_sources(module)
        if current(self._derived, sources) is None:
            stack = kernel.stack(module)
            self._derived = None
            if not kernel.try_check(lambda: kernel.verify(module, stack)):
                return False
            self._derived = Derived(sources, stack)
        return True

    def current(self, module: Any) -> Any | None:
        """The stack, while the kernel is on and it was made (and checked) from `module`'s
        current weights (None: run MLX's ops)."""
        if not self.kernel.enabled():
            return None
        return current(self._derived, self.kernel.stack_sources(module))


def launch(
    kernel: Any,
    inputs: list[mx.array],
    shapes: list[tuple[int, ...]],
    dtypes: list[mx.Dtype],
    threads: int,
) -> list[mx.array]:
    """Run a persistent kernel: one block of `threads` per SM, outputs zeroed (the work buffer's
    barrier counter and error flag must start at 0)."""
    return kernel(
        inputs=inputs,
        grid=((sm_count() or 1) * threads, 1, 1),
        threadgroup=(threads, 1, 1),
        output_shapes=shapes,
        output_dtypes=dtypes,
        init_value=0,
    )


# A kernel's output rows are compared with MLX's ops' rows in two ways. The relative L2 error
# (|got - ref| <= ROW_TOLERANCE * |ref| for each row, cosine >= ~0.99995) bounds what bfloat16
# allows: both round to the activation dtype at the same places and differ by float32
# summation order and the odd rounding flip, which add up to 0.5-1.6e-2 of a row's norm
# through 32 layers on the 7B shapes with random weights (measured on an H200: 1.56e-2 at the
# worst, layer 20's keys). A bound on each row's norm,
# rather than on the largest value anywhere, lets no outlier channel hide an error in all the
# others. Rounding noise is uncorrelated with the row, so its projection on the row averages
# out, as 1/sqrt(n) over a row of n values; the row's gain <got, ref> / <ref, ref> must stay
# within `gain_tolerance(n)` of 1: 3 * ROW_TOLERANCE / sqrt(n), three standard deviations of
# that projection when the row's error is at the L2 bound, and never below 2e-3 (2e-3 for the
# 7B's rows of 2048-4096 values, 5.6e-3 for a test model's 256 logits, where an H200 measured
# 3.78e-3 on bfloat16 8-bit sampled logits, over the 2 * ROW_TOLERANCE / sqrt(n) bound used
# before). It catches a weight or scale off by 1% that the L2 bound alone lets through
# (measured on the 7B shapes: a layer's norm weight x1.01 moves its keys' gain by 7.5e-3).
ROW_TOLERANCE = 3e-2


def gain_tolerance(n: int) -> float:
    """How far from 1 the gain of a row of n values may be."""
    return max(2e-3, 3 * ROW_TOLERANCE / n**0.5)


def compare(got: mx.array, ref: mx.array, what: str, tolerance: float = ROW_TOLERANCE) -> float:
    """Raise ValueError unless every row (last axis) of `got` is within `tolerance` of the same
    row of `ref`, relative to that row's norm, and has a gain within `gain_tolerance` of 1 (NaN
    fails). Returns the worst relative error."""
    got = got.astype(mx.float32).reshape(-1, got.shape[-1])
    ref = ref.astype(mx.float32).reshape(-1, ref.shape[-1])
    energy = mx.maximum(mx.sum(ref * ref, axis=-1), 1e-30)
    error = (mx.linalg.norm(got - ref, axis=-1) / mx.sqrt(energy)).max().item()
    gain = (mx.abs(mx.sum(got * ref, axis=-1) / energy - 1)).max().item()
    if not error <= tolerance:  # also catches NaN (and a timed-out barrier's garbage)
        raise ValueError(f"its {what} are off by {error:.3g} of a row's norm")
    if not gain <= gain_tolerance(ref.shape[-1]):
        raise ValueError(f"its {what} have a gain off by {gain:.3g}")
    return error


def near_tie(ref: np.ndarray, got: np.ndarray, picked: int, best: int) -> bool:
    """Whether entry `picked` of the row `ref` (MLX's scores) is as good as its best entry to the
    precision at which `got` (the kernel's scores for the same row) agrees with `ref`: two
    scores each off by at most e can swap order only if they are within 2e."""
    e = float(np.abs(got - ref).max())
    return bool(ref[best] - ref[picked] <= 2 * e)


def same_argmax(got: mx.array, ref: mx.array, what: str) -> None:
    """Raise ValueError unless each row's largest entry is at the same index in both, or the
    two entries are a `near_tie`."""
    got_np = np.array(got.astype(mx.float32)).reshape(-1, got.shape[-1])
    ref_np = np.array(ref.astype(mx.float32)).reshape(-1, ref.shape[-1])
    a, b = got_np.argmax(axis=-1), ref_np.argmax(axis=-1)
    for row, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y and not near_tie(ref_np[row], got_np[row], int(x), int(y)):
            raise ValueError(f"its {what} pick {a.tolist()} where MLX's ops pick {b.tolist()}")
