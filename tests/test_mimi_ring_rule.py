"""The algorithm of Mimi's transformer kernel (`src/mimi.cu`), written out in NumPy, against MLX's
`mlx_step`, on any machine.

The kernel itself runs only on NVIDIA GPUs (tests/test_mimi_transformer_kernel.py compares it
with MLX's ops there). What it computes can be checked everywhere: its cache is a ring (position
p in slot p % context, written before the attention), the query at q sees each slot whose latest
position lies in 0..q, and the attention is summed in runs of slots whose partial maxima, sums
and values are combined afterwards (flash-decoding). This mirror of those rules, in float64, must
give MLX's outputs through a ring that wraps several times: a change of the streaming rules on
either side fails here, in CI, before a GPU sees it (docs/cuda-kernels.md §Mimi's transformer).
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from model.config import mimi_tiny
from model.mimi import MimiCodec


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _rope(v: np.ndarray, pos: int, base: float) -> np.ndarray:
    """Interleaved pairs (2i, 2i+1) turned by pos * base^(-2i / n), as the kernel does."""
    n = v.shape[-1]
    out = v.copy()
    for i in range(n // 2):
        theta = pos * base ** (-2 * i / n)
        c, s = math.cos(theta), math.sin(theta)
        a, b = v[..., 2 * i], v[..., 2 * i + 1]
        out[..., 2 * i], out[..., 2 * i + 1] = a * c - b * s, a * s + b * c
    return out


def _np(a: mx.array) -> np.ndarray:
    return np.array(a, dtype=np.float64)


def kernel_rules_step(
    tr, x: np.ndarray, p0: int, rings: list[np.ndarray], runs: int, ahead: int = 0
) -> np.ndarray:
    """One call of the kernel's algorithm: x [TS, D] at positions p0.. ; rings [heads, ctx, 2dh]
    updated in place. `ahead`: how far past its own position a query sees (0; 1 is a bug)."""
    ts, d = x.shape
    attn0 = tr.layers[0].self_attn
    heads, dh, ctx = attn0._heads, attn0._head_dim, tr._context
    plast = p0 + ts - 1
    run = -(-ctx // runs)
    for layer, ring in zip(tr.layers, rings, strict=True):
        attn = layer.self_attn
        xn = _layer_norm(x, _np(layer.norm1.weight), _np(layer.norm1.bias), layer.norm1.eps)
        qkv = xn @ _np(attn.in_proj.weight)  # [ts, 3d]: q, k, v head by head
        q = np.stack(
            [_rope(qkv[t, :d].reshape(heads, dh), p0 + t, attn._max_period) for t in range(ts)]
        )
        for t in range(ts):
            k = _rope(qkv[t, d : 2 * d].reshape(heads, dh), p0 + t, attn._max_period)
            ring[:, (p0 + t) % ctx] = np.concatenate([k, qkv[t, 2 * d :].reshape(heads, dh)], -1)
        y = np.zeros((ts, d))
        for h in range(heads):
            for t in range(ts):
                parts = []
                for c in range(runs):  # the partials of each run of slots
                    m, total, o = -np.inf, 0.0, np.zeros(dh)
                    slots = range(c * run, min(ctx, (c + 1) * run))
                    scores = {}
                    for s in slots:
                        kp = plast - (plast - s) % ctx  # the position slot s holds
                        if 0 <= kp <= p0 + t + ahead:
                            scores[s] = float(q[t, h] @ ring[h, s, :dh]) * attn._scale
                    if scores:
                        m = max(scores.values())
                        for s, score in scores.items():
                            w = math.exp(score - m)
                            total += w
                            o += w * ring[h, s, dh:]
                    parts.append((m, total, o))
                best = max(m for m, _, _ in parts)  # the combine: rescale to the largest max
                weights = [0.0 if m == -np.inf else math.exp(m - best) for m, _, _ in parts]
                total = sum(w * t_ for w, (_, t_, _) in zip(weights, parts, strict=True))
                out = sum(w * o for w, (_, _, o) in zip(weights, parts, strict=True))
                y[t, h * dh : (h + 1) * dh] = out / total
        x = x + y @ (_np(attn.out_proj.weight) * _np(layer.layer_scale_1.scale))
        xn = _layer_norm(x, _np(layer.norm2.weight), _np(layer.norm2.bias), layer.norm2.eps)
        hidden = xn @ _np(layer.linear1.weight)
        hidden = hidden * (1 + np.vectorize(math.erf)(hidden / math.sqrt(2))) / 2
        x = x + hidden @ (_np(layer.linear2.weight) * _np(layer.layer_scale_2.scale))
    return x


def _worst_error(runs: int, frames: int, ahead: int = 0) -> float:
    """The largest relative row error of the mirror against MLX's steps over `frames` frames of
    mimi_tiny (a 7-slot ring, two steps per frame) from empty caches."""
    tr = MimiCodec.random(mimi_tiny(), seed=2).model.encoder_transformer
    attn = tr.layers[0].self_attn
    d, ts = tr.layers[0].linear1.weight.shape[0], tr._per_frame
    rings = [np.zeros((attn._heads, tr._context, 2 * attn._head_dim)) for _ in tr.layers]
    state = tr.init_state()
    rng = np.random.default_rng(0)
    worst = 0.0
    for frame in range(frames):
        x = rng.standard_normal((ts, d)).astype(np.float32)
        want, state = tr.mlx_step(mx.array(x)[None], state, tr.is_full(frame * ts, ts))
        got = kernel_rules_step(tr, x.astype(np.float64), frame * ts, rings, runs, ahead)
        want = np.array(want[0], dtype=np.float64)
        error = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
        worst = max(worst, float(error.max()))
    return worst


@pytest.mark.parametrize("runs", [1, 3])
def test_the_kernels_rules_give_mlx_steps_through_a_wrapping_ring(runs):
    """12 frames wrap the 7-slot ring three times."""
    assert _worst_error(runs, frames=12) < 1e-4


def test_a_ring_rule_off_by_one_fails():
    """The same mirror with each query seeing the next step's key too (a bug of one position)
    differs from MLX's steps: the comparison above can fail."""
    assert _worst_error(1, frames=4, ahead=1) > 1e-3
