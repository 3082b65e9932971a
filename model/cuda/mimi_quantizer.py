"""Mimi's split residual quantizer (one latent's codes, every codebook) as one persistent CUDA kernel.

Each codec frame's latent picks one entry of each codebook: the semantic codebook on its own
projection, then the acoustic ones in residual on theirs. As MLX's ops that is four small
kernels per codebook one after another (the scores' matmul, the argmax, the entry's gather, the
subtraction): 8 codebooks for PersonaPlex, 32 with the user's transcript on (the Kyutai STT
reads all 32). This kernel keeps one block per SM resident (see `model/cuda/persistent.py`):

1. the grid computes both input projections, a row per warp -- barrier;
2. per codebook: the grid scores the entries (`x . c - |c|^2 / 2`, four per warp), each warp
   writes its best -- barrier; then every block reduces all the warps' candidates to the code
   itself (the first entry of a tie, as MLX's argmax) and updates its own copy of the residual,
   so the next codebook needs no other barrier.

Float32, as MLX runs Mimi; the tables are the quantizer's own arrays (its codebooks, and the
half norms it derives), plus the projections' rows stacked (1 MB). `verify` checks the kernel's
picks at load against scores computed on the host in float64 from the quantizer's own weights
and the kernel's own picks
(teacher-forced, so that one near-tie cannot derail the comparison): each pick must be the best
entry, or within a rounding error of it. `PPX_MIMI=mlx` turns it off, with the transformer's
kernel (docs/cuda-kernels.md §Mimi's quantizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model.cuda import persistent

THREADS = 128  # per block, one block per SM (__launch_bounds__)
PICK_TOLERANCE = 1e-4  # a pick's score may trail the best by this much of the scores' scale


@dataclass(frozen=True)
class QuantizerStack:
    """proj: the semantic and acoustic input projections' rows [2 * CB, D]; books: the codebooks
    [NQ, BINS, CB]; bias: -|c|^2 / 2 of every entry [NQ, BINS] (float32 each)."""

    proj: mx.array
    books: mx.array
    bias: mx.array


def _dims(q: Any) -> dict[str, int]:
    n, bins, cb = q.codebooks.shape
    return {"D": q.semantic_input_proj.shape[1], "CB": cb, "BINS": bins, "NQ": n}


class MimiQuantizerKernel(persistent.PersistentKernel):
    """The quantizer's encode of one latent as one kernel (`run`) on a `QuantizerStack`
    (`stack`); `lm` in the base class's methods is a `model.mimi.quantizer.SplitResidualQuantizer`."""

    env_var = "PPX_MIMI"
    what = "the Mimi quantizer kernel"
    path = "model/cuda/mimi_quantizer.py"
    name = "ppx_mimi_quantizer"
    source_name = "mimi_quantizer"
    header_name = "mimi"  # the mat-vec rows it shares with Mimi's transformer kernel
    outputs = ("codes", "work")
    threads = THREADS

    def inputs(self, consts: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return ["x", "proj", "books", "bias"], {}

    def supports(self, lm: Any) -> str | None:
        """Why the kernel cannot run this quantizer (None: it can)."""
        d = _dims(lm)
        if d["D"] % 128 or d["CB"] % 128 or d["BINS"] % 4 or d["NQ"] < 1:
            return "its shapes are not ones it handles"
        if lm.codebooks.dtype != mx.float32 or lm.semantic_input_proj.dtype != mx.float32:
            return "its tables are not float32"
        return None

    def stack(self, lm: Any) -> QuantizerStack:
        """The kernel's arrays for the quantizer `lm` (its codebooks; the rest derived)."""
        proj = mx.contiguous(mx.concatenate([lm.semantic_input_proj, lm.acoustic_input_proj]))
        bias = mx.stack([-0.5 * mx.sum(c * c, axis=-1) for c in lm.codebooks])
        stacked = QuantizerStack(proj, mx.contiguous(lm.codebooks), bias)
        mx.eval(stacked.proj, stacked.books, stacked.bias)
        return stacked

    def stack_sources(self, lm: Any) -> tuple[mx.array, ...]:
        """The arrays `stack(lm)` reads (to tell when a stack is stale)."""
        return (lm.semantic_input_proj, lm.acoustic_input_proj, lm.codebooks)

    def work_size(self, lm: Any) -> int:
        d = _dims(lm)
        return self._scores_at(lm) + d["NQ"]

    def _scores_at(self, lm: Any) -> int:
        """Where the work buffer holds each code's score (after the warps' candidates)."""
        d = _dims(lm)
        warps = (persistent.sm_count() or 1) * self.threads // 32  # the grid `launch` starts
        return persistent.SYNC_WORDS + 2 * d["CB"] + d["NQ"] * warps * 2

    def consts(self, lm: Any) -> list[tuple[str, Any]]:
        return [*_dims(lm).items(), ("NT", self.threads), ("SYNC", persistent.SYNC_WORDS)]

    def run(self, lm: Any, weights: QuantizerStack, x: mx.array) -> tuple[mx.array, mx.array]:
        """The codes [NQ] (int32) of one latent x (D values, float32). Returns (codes, the work
        buffer: word 1 is the barrier's error flag)."""
        d = _dims(lm)
        codes, work = persistent.launch(
            self.compiled(self.consts(lm)),
            [x.reshape(-1).astype(mx.float32), weights.proj, weights.books, weights.bias],
            [(d["NQ"],), (self.work_size(lm),)],
            [mx.int32, mx.float32],
            self.threads,
        )
        return codes, work

    def verify(self, lm: Any, weights: QuantizerStack) -> float:
        """Run the kernel on random latents and raise ValueError unless every pick is the best
        entry of the float64 scores of its input (teacher-forced on the kernel's own picks), or
        within `PICK_TOLERANCE` of the scores' scale of it, and the kernel's own score of each
        pick is that score to the same tolerance (so that tables a little off fail even where
        they pick the same entries). Returns the worst such difference."""
        d = _dims(lm)
        rng = np.random.default_rng(7)
        # the module's own weights, not the stack: a stale or wrong stack fails too
        f64 = np.float64
        proj = np.concatenate(
            [np.array(lm.semantic_input_proj, f64), np.array(lm.acoustic_input_proj, f64)]
        )
        books = np.array(lm.codebooks, dtype=f64)
        bias = -0.5 * np.sum(books * books, axis=-1)
        latents = rng.standard_normal((6, d["D"])).astype(np.float32)
        latents[1] *= 10.0  # louder and quieter frames
        latents[2] *= 0.05
        runs = [self.run(lm, weights, mx.array(z)) for z in latents]
        mx.eval(runs)
        worst = 0.0
        for n, (z, (codes, work)) in enumerate(zip(latents, runs, strict=True)):
            if np.array(work[:2]).view(np.uint32)[1]:
                raise ValueError("its grid barrier timed out (blocks not resident together)")
            picks = np.array(codes).tolist()
            at = self._scores_at(lm)
            kernel_scores = np.array(work[at : at + d["NQ"]], dtype=np.float64)
            p = proj @ z.astype(np.float64)
            semantic, residual = p[: d["CB"]], p[d["CB"] :]
            for q, pick in enumerate(picks):
                x = semantic if q == 0 else residual
                scores = books[q] @ x + bias[q]
                scale = np.abs(scores).max() + 1e-30
                if not 0 <= pick < d["BINS"]:
                    raise ValueError(f"it picks entry {pick} of codebook {q} (latent {n})")
                shortfall = float(scores.max() - scores[pick]) / scale
                if not shortfall <= PICK_TOLERANCE:
                    raise ValueError(
                        f"its pick in codebook {q} trails the best entry by {shortfall:.3g} of "
                        f"the scores' scale (latent {n})"
                    )
                off = abs(float(kernel_scores[q] - scores[pick])) / scale
                if not off <= PICK_TOLERANCE:
                    raise ValueError(
                        f"its score of its pick in codebook {q} is off by {off:.3g} of the "
                        f"scores' scale (latent {n})"
                    )
                worst = max(worst, shortfall, off)
                if 1 <= q < d["NQ"] - 1:
                    residual = residual - books[q][pick]
        return worst


KERNEL = MimiQuantizerKernel()
