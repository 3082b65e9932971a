"""The fused quantized mat-vec: one activation row times an MLX-affine quantized weight.

One CUDA kernel, with fused epilogues.

An LM step multiplies a single row by ~350 quantized weights. MLX's CUDA mat-vec reads 8 bytes
per thread at a time and converts codes with integer-to-float instructions; a residual add or
the gated FFN's SiLU then run as kernels of their own. This kernel gives each warp one output
row, reads 16-byte chunks, turns a code into a float by placing its bits under the exponent of
2^23 (a byte permute and a subtraction), folds the affine dequantization per chunk
(`sum((q*s + b) * x) = s * sum(q*x) + b * sum(x)`, float32 accumulation) and fuses the epilogue:

- `matvec(x, q)`: `x @ W.T`;
- `matvec(x, q, residual=r)`: `r + x @ W.T` (one rounding instead of two);
- `gated_matvec(x, q)`: `silu(x @ G.T) * (x @ V.T)`, G and V the two halves of W's rows.

Measured against MLX's kernels plus separate adds and SiLU (`python -m benchmarks.matvec_ab`):
32 temporal layers of 4 projections and two norms each, compiled: H100 8-bit 5.27 -> 4.13 ms,
4-bit 5.83 -> 4.30 ms; H200 (this version, two runs) 8-bit 4.94 -> 4.55 and 4.92 -> 4.20 ms,
4-bit 5.72 -> 4.44 and 5.40 -> 4.09 ms. The whole LM step on an H200
(rounds alternating the two in one process, median of the rounds' medians): 8-bit 10.73 -> 10.30
and 12.42 -> 10.67 ms, 4-bit 11.75 -> 11.12 and 14.19 -> 14.33 ms (noisy shared machines);
1076 -> 807 kernels per step. Applying the RMSNorm
inside the kernel as well (each warp reads all of x) was tried and was slower (+1.5 to 2 ms).
The kernel is compiled once per process (NVRTC, about 2 s; MLX does not cache custom kernels on
disk), when `check` first runs it against MLX's ops while the model loads. `usable(...)` says
when it applies (CUDA, one row, 4 or 8 bits, shapes it handles); otherwise
`model.lm.layers.matvec` runs MLX's own ops, so callers need not care.
`PPX_MATVEC=mlx` turns it off (for comparisons). With the temporal and depformer kernels on
(`model/cuda/temporal.py`, `model/cuda/depformer.py`), which do their own mat-vecs, it runs the
stacked `depformer_in` projection and whatever those kernels leave to MLX.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from model.activations import silu
from model.cuda import precompiled, source
from model.cuda.kernel import Kernel
from model.quantized import BITS, DTYPES, Quantized
from model.sampling import split_key

ROWS = 1  # output rows per warp (1, 2 and 4 measured: 1 is fastest)
UNROLL = 2  # 16-byte chunks per thread the loop is unrolled by (2, 4 and 8 measured)
THREADS = 256  # per block (8 warps)
# Relative L2 error of the output row: both round the same float32 sums to bfloat16, so they
# differ by summation order and the odd rounding flip (see persistent.ROW_TOLERANCE).
CHECK_TOLERANCE = 1e-2


class MatvecKernel(Kernel):
    """The fused mat-vec: `usable` per product, `check`ed once per kind of quantized weight."""

    env_var = "PPX_MATVEC"
    what = "the fused quantized mat-vec kernel"
    path = "model/cuda/matvec.py"
    name = "ppx_matvec"

    def __init__(self) -> None:
        super().__init__()
        self.body = source.read("matvec.cu")
        self.header = source.header()
        self.checked: set[tuple[Any, int, int]] = set()
        self._kernel: Any = None

    def _compiled(self) -> Any:
        if self._kernel is None:
            self._kernel = precompiled.make_kernel(
                name=self.name,
                input_names=["x", "w", "scales", "biases", "r"],
                output_names=["out"],
                source=self.body,
                header=self.header,
            )
        return self._kernel

    def check(self, dtype: mx.Dtype, bits: int, group_size: int) -> bool:
        """Run the kernel once on a small random problem of this kind (plain, residual and gated)
        and compare it with MLX's ops; outside compiled graphs (`LM.prepare` calls it).

        A failure (no runtime compiler, an MLX whose custom kernels work differently, a wrong
        result) turns the kernel off for the process, with the reason in `disabled_reason`
        (`Kernel.try_check`): the model then runs on MLX's kernels instead of failing mid-conversation. The kernel compiled
        here is the one the model's graphs use (same source and template), so it costs no extra
        compilation. Returns whether the kernel is on.
        """
        key = (dtype, bits, group_size)
        if not self.enabled() or key in self.checked:
            return self.enabled()
        self.checked.add(key)
        inputs, rows = 4 * max(group_size, 128 // bits * 32), 64
        keys = split_key(mx.random.key(0), 3)
        w = mx.random.normal((rows, inputs), key=keys[0]) * inputs**-0.5
        q = Quantized(*mx.quantize(w.astype(dtype), group_size, bits), group_size, bits)
        x = mx.random.normal((1, 1, inputs), key=keys[1]).astype(dtype)
        r = mx.random.normal((1, 1, rows), key=keys[2]).astype(dtype)

        def verify() -> None:
            if not self.usable(x, q):
                raise ValueError(f"{bits}-bit, group {group_size} is not a shape it handles")
            want = mx.quantized_matmul(
                x, q.weight, q.scales, q.biases, transpose=True, group_size=group_size, bits=bits
            )
            gate, value = mx.split(want, 2, axis=-1)
            pairs = [
                (self.run(x, q, rows, mx.zeros((1,), dtype=dtype)), want),
                (self.run(x, q, rows, r.reshape(-1)), r + want),
                (self.run(x, q, rows // 2, mx.zeros((2,), dtype=dtype)), silu(gate) * value),
            ]
            for got, ref in pairs:
                got, ref = got.astype(mx.float32).reshape(-1), ref.astype(mx.float32).reshape(-1)
                error = (mx.linalg.norm(got - ref) / mx.linalg.norm(ref)).item()
                if not error <= CHECK_TOLERANCE:  # also catches NaN
                    raise ValueError(f"its result is off by {error:.3g} of the output's norm")

        return self.try_check(verify)

    def usable(self, x: mx.array, q: Quantized) -> bool:
        """The kernel handles this product: one row of a supported dtype, 4 or 8 bits, whole
        16-byte chunks per row, chunks inside one quantization group."""
        return (
            self.enabled()
            and x.size == q.inputs
            and x.dtype in DTYPES
            and q.bits in BITS
            and q.weight.shape[1] % 4 == 0
            and q.group_size % (128 // q.bits) == 0
            and q.inputs % q.group_size == 0
            and q.rows > 4  # the kernel tells its modes apart by lengths 1 and 2 of `r`
        )

    def run(self, x: mx.array, q: Quantized, n_out: int, r: mx.array) -> mx.array:
        """`x @ W.T` for one row x with the epilogue `r` selects (see matvec.cu), n_out rows."""
        warps = -(-n_out // ROWS)
        template: list[tuple[str, Any]] = [
            ("T", x.dtype),
            ("BITS", q.bits),
            ("G", q.group_size),
            ("R", ROWS),
            ("U", UNROLL),
        ]
        (out,) = self._compiled()(
            inputs=[x.reshape(-1), q.weight, q.scales, q.biases, r],
            template=template,
            grid=(warps * 32, 1, 1),
            threadgroup=(THREADS, 1, 1),
            output_shapes=[(n_out,)],
            output_dtypes=[x.dtype],
        )
        return out.reshape(*x.shape[:-1], n_out)


KERNEL = MatvecKernel()
