"""The whole depformer of one column (every step, layer and draw) as one persistent CUDA kernel.

The depformer runs up to 16 sub-steps of 6 small layers per column; as MLX ops that is ~390
kernels for ~100 MB of weights per step: its time is launch latency and host encoding, not
bandwidth. This kernel keeps one block per SM resident for the whole column and separates the
phases that need all of a previous phase's outputs with a grid-wide barrier (see
`model/cuda/persistent.py`). Per layer and step:

1. every block RMS-normalises the residual stream x (1024 values, in shared memory) and the grid
   computes the packed q/k/v projection, one output row per warp -- barrier;
2. every block computes the attention of all heads over steps 0..k from the stored q/k/v, then
   the grid computes `x + out_proj(attention)` -- barrier;
3. every block normalises x' and the grid computes `silu(gate) * value` of `linear_in` -- barrier;
4. the grid computes `x' + linear_out(hidden)` -- barrier.

Then the grid computes the step's logits (the float `linears[k]`), and every block draws the
token itself (argmax, or the top-k cut by a radix select and the Gumbel-max draw with the noise
MLX drew), so the next step's input `depformer_in[k+1](h) + emb[token]` needs no barrier: 25
barriers per step, one kernel per column. Intermediate values are rounded to the activation
dtype where MLX's ops round them, and accumulated in float32. Weights are MLX-affine 4/8-bit
(the depformer's projections), read from a few stacked arrays (`stack`): the modules' own
weights become views of them, so memory stays the same.

`verify` runs the kernel at load on the model's weights against MLX's ops (teacher-forced logits
and the draws from them) and turns it off, with the reason, if anything differs (a timed-out
barrier included). `PPX_DEPFORMER=mlx` turns it off. Measured on an H200, 8 steps with top-k
sampling: 1.3-1.4 ms against 4.0-6.5 ms for MLX's ops (`python -m benchmarks.kernels_ab`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from model.cuda import persistent
from model.derived import stack_into
from model.quantized import BITS, DTYPES
from model.sampling import GREEDY, SamplingParams, draw, gumbel_noise, split_key

THREADS = 512  # per block, one block per SM (H100, 8 steps: 256 1.60, 512 1.49, 1024 1.54 ms)


@dataclass(frozen=True)
class DepformerStack(persistent.StackedWeights):
    """The depformer's weights as the kernel reads them (the modules hold views of these).

    qa/sa/ba: every 1024-input projection (rows per layer: in_proj of all steps, out_proj of all
    steps, then `linear_in` of step 0, 1, ...); qb/sb/bb: every `linear_out` (layer-major, then
    step); heads: the float `linears` stacked; emb: `depformer_text_emb` then `depformer_emb`;
    norms: norm1/norm2 weights of each layer in the activation dtype.
    """

    heads: mx.array | None = None
    emb: mx.array | None = None


def _projections(lm: Any) -> list[Any]:
    """The depformer layers' projections, layer by layer (attention, then each step's FFN)."""
    out: list[Any] = []
    for layer in lm.depformer.layers:
        out += [layer.self_attn.in_proj, layer.self_attn.out_proj]
        out += [lin for g in layer.gating for lin in (g.linear_in, g.linear_out)]
    return out


# Data, not a lazy `mx.zeros`: a lazy array made at import belongs to the importing thread's
# stream, and evaluating it on the engine's thread fails ("There is no Stream(gpu, 0) in current
# thread"), which turned the kernel off in the app (`tests/test_thread_safe_constants.py`).
_NO_INT = mx.array([0], dtype=mx.int32)
_NO_FLOAT = mx.array([0.0], dtype=mx.float32)
_NO_LOGITS = {dtype: mx.array([0.0] * 8, dtype=dtype) for dtype in DTYPES}  # 16 bytes or more


_INPUTS = [
    "dep_in", "text", "tlog", "tnoise", "noise", "forced", "provided", "params",
    "qa", "sa", "ba", "qb", "sb", "bb", "heads", "emb", "norms",
]  # fmt: skip


def _hidden(weights: DepformerStack) -> int:
    """The FFN's hidden width: `linear_out`'s inputs."""
    return weights.qb.shape[1] * 32 // weights.bits


@dataclass(frozen=True)
class TextDraw:
    """The text token for the kernel to draw at its start, as `sampling.draw(logits, params,
    noise)` does: logits [text_card] (activation dtype), noise float32 [text_card] (None when
    greedy)."""

    logits: mx.array
    params: SamplingParams
    noise: mx.array | None


class DepformerKernel(persistent.PersistentKernel):
    """The depformer of one column as one kernel (`run`), on `DepformerStack`s (`stack`)."""

    env_var = "PPX_DEPFORMER"
    what = "the depformer kernel"
    path = "model/cuda/depformer.py"
    name = "ppx_depformer"
    source_name = "depformer"
    outputs = ("tokens", "work")
    threads = THREADS

    def inputs(self, consts: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """The same inputs for every set of constants (`_INPUTS`)."""
        return _INPUTS, {}

    def supports(self, lm: Any) -> str | None:
        """Why the kernel cannot run `lm`'s depformer (None: it can)."""
        cfg = lm.config
        d, dep = cfg.depformer, lm.depformer
        if not dep.layers:
            return "the depformer has no layers"
        layer = dep.layers[0]
        linears = _projections(lm)
        if any(getattr(x, "bits", None) not in BITS for x in linears):
            return "its projections are not 4- or 8-bit quantized"
        if len({(x.bits, x.group_size) for x in linears}) != 1:
            return "its projections are quantized in different ways"
        if any(getattr(x, "mode", "affine") != "affine" for x in linears):
            return "its projections are not affine quantized"
        bits, group = linears[0].bits, linears[0].group_size
        if lm.dtype not in DTYPES or any(h.weight.dtype != lm.dtype for h in lm.linears):
            return "its output heads are not float weights of the activation dtype"
        card = cfg.card
        hidden = layer.gating[0].linear_out.weight.shape[1] * 32 // bits
        head_dim = d.d_model // d.num_heads
        chunk = 128 // bits
        if (
            card & (card - 1)
            or head_dim % 32
            or d.d_model % 16
            or hidden % 16
            or d.d_model % chunk
            or hidden % chunk
            or group % chunk
            or d.d_model % group
            or hidden % group
        ):
            return "its shapes are not ones it handles"
        return None

    def stack(self, lm: Any) -> DepformerStack:
        """The kernel's arrays for `lm`'s depformer, its modules' weights becoming views of them
        (`derived.stack_into`: no extra memory once done)."""
        dep = lm.depformer
        parts = ("weight", "scales", "biases")
        first = []
        for layer in dep.layers:
            first += [layer.self_attn.in_proj, layer.self_attn.out_proj]
            first += [g.linear_in for g in layer.gating]
        second = [g.linear_out for layer in dep.layers for g in layer.gating]
        qa, sa, ba = (stack_into(first, p) for p in parts)
        qb, sb, bb = (stack_into(second, p) for p in parts)
        heads = stack_into(list(lm.linears), "weight")
        emb = stack_into([lm.depformer_text_emb, *lm.depformer_emb], "weight")
        norms = mx.concatenate(
            [n.alpha.reshape(-1) for layer in dep.layers for n in (layer.norm1, layer.norm2)]
        ).astype(lm.dtype)
        mx.eval(norms)
        head = dep.layers[0].self_attn.in_proj
        eps = dep.layers[0].norm1.eps
        return DepformerStack(
            qa, sa, ba, qb, sb, bb, norms, head.bits, head.group_size, eps, heads=heads, emb=emb
        )

    def stack_sources(self, lm: Any) -> tuple[mx.array, ...]:
        """The arrays `self.stack(lm)` reads (to tell when a stack is stale)."""
        parts = ("weight", "scales", "biases")
        out = [lin[p] for lin in _projections(lm) for p in parts if p in lin]
        out += [n.alpha for layer in lm.depformer.layers for n in (layer.norm1, layer.norm2)]
        out += [h.weight for h in lm.linears]
        out += [lm.depformer_text_emb.weight] + [e.weight for e in lm.depformer_emb]
        return tuple(out)

    def run(
        self,
        lm: Any,
        weights: DepformerStack,
        dep_in: mx.array,
        text_token: mx.array,
        n_steps: int,
        params: SamplingParams,
        noise: mx.array | None,
        forced: mx.array | None = None,
        provided: mx.array | None = None,
    ) -> tuple[mx.array, mx.array, mx.array]:
        """Tokens int32 [n_steps] of one column, its logits float32 [n_steps, card] and the whole
        work buffer (word 1: the barrier's error flag, as float bits).

        dep_in: `depformer_in[k](h)` of steps 0..n_steps-1, [n_steps * D] (activation dtype);
        noise: Gumbel noise float32 [n_steps, card] (None when greedy); forced / provided as
        `LM.depformer_step` takes them.
        """
        tokens, work = self._launch(
            lm, weights, dep_in, text_token, None, n_steps, params, noise, forced, provided
        )
        return tokens[:n_steps], self._logits(lm, weights, work, n_steps), work

    def run_drawing_text(
        self,
        lm: Any,
        weights: DepformerStack,
        dep_in: mx.array,
        text: TextDraw,
        n_steps: int,
        params: SamplingParams,
        noise: mx.array | None,
    ) -> tuple[mx.array, mx.array, mx.array]:
        """`run` with the text token drawn by the kernel itself (`text`) instead of given: one
        kernel for the text token's draw and the column (docs/cuda-kernels.md §The depformer).
        Returns the text token (int32 scalar), the column's tokens [n_steps] and the work
        buffer."""
        tokens, work = self._launch(
            lm, weights, dep_in, None, text, n_steps, params, noise, None, None
        )
        return tokens[n_steps], tokens[:n_steps], work

    def work_size(self, lm: Any, weights: DepformerStack) -> int:
        """Words of the kernel's work buffer: the barrier's words, x1, x2, every step's q/k/v,
        the hidden units, then every step's logits (`_logits`)."""
        cfg = lm.config
        d = cfg.depformer
        return (
            persistent.SYNC_WORDS
            + 2 * d.d_model
            + d.num_layers * cfg.dep_q * 3 * d.d_model
            + _hidden(weights)
            + cfg.dep_q * cfg.card
        )

    def extra_words(self, lm: Any) -> int:
        """Words allocated after the work buffer's layout (a profile's marks; none here)."""
        return 0

    def _logits(self, lm: Any, weights: DepformerStack, work: mx.array, n_steps: int) -> mx.array:
        """The column's logits [n_steps, card], at the end of the work buffer's layout."""
        cfg = lm.config
        start = self.work_size(lm, weights) - cfg.dep_q * cfg.card
        return work[start : start + n_steps * cfg.card].reshape(n_steps, cfg.card)

    def _launch(
        self,
        lm: Any,
        weights: DepformerStack,
        dep_in: mx.array,
        text_token: mx.array | None,
        text: TextDraw | None,
        n_steps: int,
        params: SamplingParams,
        noise: mx.array | None,
        forced: mx.array | None,
        provided: mx.array | None,
    ) -> tuple[mx.array, mx.array]:
        """The kernel's outputs: tokens int32 [n_steps + 1] (the column's, then the text token,
        given as `text_token` or drawn as `text` says) and the work buffer."""
        cfg = lm.config
        d = cfg.depformer
        hidden = _hidden(weights)
        dtype = lm.dtype
        scalars = [
            weights.eps,
            _inverse_temperature(params),
            (d.d_model // d.num_heads) ** -0.5 * math.log2(math.e),
            n_steps,
            params.top_k,
            0.0 if forced is None else 1.0,
            0.0 if text is None else _inverse_temperature(text.params),
            0 if text is None else text.params.top_k,
            0.0 if text is None else 1.0,
        ]
        work_size = self.work_size(lm, weights) + self.extra_words(lm)
        consts: list[tuple[str, Any]] = [
            ("T", dtype),
            ("BITS", weights.bits),
            ("G", weights.group_size),
            ("D", d.d_model),
            ("HID", hidden),
            ("NH", d.num_heads),
            ("NL", d.num_layers),
            ("S", cfg.dep_q),
            ("CARD", cfg.card),
            ("TV", cfg.text_card),
            ("TEXT_ROWS", cfg.text_card + 1),
            ("NT", THREADS),
            ("SYNC", persistent.SYNC_WORDS),
        ]
        tokens, work = persistent.launch(
            self.compiled(consts),
            [
                dep_in.reshape(-1).astype(dtype),
                _NO_INT if text_token is None else text_token.reshape(1).astype(mx.int32),
                _NO_LOGITS[dtype] if text is None else text.logits.reshape(-1).astype(dtype),
                _NO_FLOAT
                if text is None or text.noise is None
                else text.noise.astype(mx.float32).reshape(-1),
                _NO_FLOAT if noise is None else noise.astype(mx.float32).reshape(-1),
                _NO_INT if forced is None else forced.astype(mx.int32).reshape(-1),
                _NO_INT if provided is None else provided.astype(mx.int32).reshape(-1),
                mx.array(scalars, dtype=mx.float32),
                *weights.projections,
                weights.heads,
                weights.emb,
                weights.norms,
            ],
            [(n_steps + 1,), (work_size,)],
            [mx.int32, mx.float32],
            THREADS,
        )
        return tokens, work

    def verify(self, lm: Any, weights: DepformerStack) -> float:
        """Run the kernel with `weights` beside MLX's ops and raise ValueError where they differ;
        returns the worst relative row error of the logits.

        Greedy: each step's logits must match MLX's depformer teacher-forced with the kernel's
        tokens, per row (`persistent.compare`), and each token must be the argmax of MLX's
        logits. Sampling (top-k 250, temperature 0.8): each token must be what MLX's draw gives for
        MLX's logits and the same noise.
        """
        cfg = lm.config
        n = cfg.dep_q
        keys = split_key(mx.random.key(1), 3)
        h = mx.random.normal((1, 1, cfg.temporal.d_model), key=keys[0]).astype(lm.dtype)
        text = mx.array(3, dtype=mx.int32)
        dep_in = lm.depformer_inputs_flat(h, n)
        tokens, logits, work = self.run(lm, weights, dep_in, text, n, SamplingParams(0.0, 0), None)
        ref = lm.depformer_logits(h, text, tokens, n)
        mx.eval(tokens, logits, ref, work)
        if np.array(work[:2]).view(np.uint32)[1]:
            raise ValueError("its grid barrier timed out (blocks not resident together)")
        worst = persistent.compare(logits, ref, "greedy logits")
        _same_picks(tokens, logits, ref, SamplingParams(0.0, 0), None, "greedy")
        params = SamplingParams(0.8, 250)
        noise = gumbel_noise(keys[1], (n, cfg.card))
        tokens, logits, _ = self.run(lm, weights, dep_in, text, n, params, noise)
        ref = lm.depformer_logits(h, text, tokens, n)
        mx.eval(tokens, logits, ref)
        worst = max(worst, persistent.compare(logits, ref, "sampled logits"))
        _same_picks(tokens, logits, ref, params, noise, "sampled")
        if cfg.text_card % 8 == 0:  # where the kernel draws the text token too
            self._verify_text_draw(lm, weights, dep_in, params, noise, tokens, keys[2])
        return worst

    def _verify_text_draw(
        self,
        lm: Any,
        weights: DepformerStack,
        dep_in: mx.array,
        params: SamplingParams,
        noise: mx.array,
        column: mx.array,
        key: mx.array,
    ) -> None:
        """Raise ValueError unless the text token the kernel draws is exactly what
        `sampling.draw` picks from the same logits and noise, and the column after the token 3
        it draws from logits that make it certain is the column `run` gives for the token 3.

        The draws: greedy and top-k 25 at temperature 0.7 over logits with ties (at the top and
        at the cut), and top-k 25 where the noise makes the 25th largest logit win, and would make
        the 26th win if the cut let it through (so that a cut one off either way picks another
        token)."""
        card = lm.config.text_card
        rng = np.random.default_rng(11)
        # rounded to a coarse grid, so that many logits tie
        grid = (np.round(rng.standard_normal(card) * 8.0) / 4.0).astype(np.float32)
        tnoise = np.array(gumbel_noise(key, (card,)))
        edge = np.full(card, -5.0, dtype=np.float32) - grid.clip(0, None)
        top = rng.permutation(card)[:26]
        edge[top] = 10.0 + 0.125 * np.arange(26)[::-1]  # distinct in any float type
        boosted = tnoise.copy()
        boosted[top[24]] += 50.0  # the 25th largest, the last one the cut lets through, wins
        boosted[top[25]] += 100.0  # unless the 26th, just past the cut, is let through too
        top_k = SamplingParams(0.7, 25)
        cases = [(grid, GREEDY, None), (grid, top_k, tnoise), (edge, top_k, boosted)]
        for logits, tparams, tn in cases:
            got, _, _ = self.run_drawing_text(
                lm,
                weights,
                dep_in,
                TextDraw(
                    mx.array(logits).astype(lm.dtype), tparams, None if tn is None else mx.array(tn)
                ),
                1,
                params,
                noise[:1],
            )
            want = numpy_draw(logits, tparams, tn)
            if int(got.item()) != want:
                raise ValueError(
                    f"its text token {int(got.item())} is not the draw's {want} "
                    f"(temperature {tparams.temperature}, top-k {tparams.top_k})"
                )
        certain = np.where(np.arange(card) == 3, 100.0, -100.0).astype(np.float32)
        certain = mx.array(certain).astype(lm.dtype)
        n = column.shape[0]
        got, tokens, _ = self.run_drawing_text(
            lm, weights, dep_in, TextDraw(certain, params, mx.array(tnoise)), n, params, noise
        )
        if int(got.item()) != 3 or np.array(tokens).tolist() != np.array(column).tolist():
            raise ValueError(
                f"its column after the text token it draws ({int(got.item())}: "
                f"{np.array(tokens).tolist()}) is not the column after the token 3 "
                f"({np.array(column).tolist()})"
            )


def numpy_draw(logits: np.ndarray, params: SamplingParams, noise: np.ndarray | None) -> int:
    """`sampling.draw` of one row of float32 logits in NumPy (the host's reference for the
    kernel's draws, with no MLX kernel to compile at load): the same cut, the same float32
    products and sums, the first index of a tie."""
    if params.greedy or noise is None:
        return int(np.argmax(logits))
    vocab = logits.shape[-1]
    scores = logits * np.float32(_inverse_temperature(params))
    if 0 < params.top_k < vocab:
        kth = np.partition(logits, vocab - params.top_k)[vocab - params.top_k]
        scores = np.where(logits >= kth, scores, np.float32(-np.inf))
    return int(np.argmax(scores + noise.astype(np.float32)))


def _inverse_temperature(params: SamplingParams) -> float:
    """1 / temperature as the float32 that `sampling.draw` multiplies by (0: greedy)."""
    return 0.0 if params.greedy else float(np.float32(1.0 / params.temperature))


def _same_picks(
    tokens: mx.array,
    logits: mx.array,
    ref: mx.array,
    params: SamplingParams,
    noise: mx.array | None,
    what: str,
) -> None:
    """The kernel's tokens are exactly what MLX's draw picks from the kernel's own logits, and
    what it picks from MLX's logits up to a near tie: with the two rows' logits at most e
    apart, the scores (logits / temperature + noise, as `sampling.draw` ranks them) of the two
    picks within 2e / temperature, or MLX's pick cut by the kernel's top-k while it lies within
    2e of MLX's own cut."""
    got = np.array(tokens)
    own = np.array(draw(logits.astype(ref.dtype), params, noise))
    if not np.array_equal(got, own):
        raise ValueError(f"{what} tokens {got.tolist()} are not its logits' picks {own.tolist()}")
    mine, theirs = np.array(logits.astype(mx.float32)), np.array(ref.astype(mx.float32))
    vocab = theirs.shape[-1]
    temperature = 1.0 if params.greedy else params.temperature
    gumbel = 0.0 if params.greedy else np.array(noise.astype(mx.float32))
    cutting = not params.greedy and 0 < params.top_k < vocab
    kth = vocab - params.top_k if cutting else 0
    cut_mine = np.partition(mine, kth, axis=-1)[:, kth] if cutting else np.full(len(got), -np.inf)
    cut_theirs = (
        np.partition(theirs, kth, axis=-1)[:, kth] if cutting else np.full(len(got), -np.inf)
    )
    scores = theirs / temperature + gumbel
    ranked = np.where(theirs >= cut_theirs[:, None], scores, -np.inf)
    want = ranked.argmax(axis=-1)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        if a == b:
            continue
        e = float(np.abs(mine[k] - theirs[k]).max())
        eligible = theirs[k, a] >= cut_theirs[k] - 2 * e  # in MLX's top-k, up to a tie at the cut
        close = scores[k, b] - scores[k, a] <= 2 * e / temperature
        cut_off = mine[k, b] < cut_mine[k] and theirs[k, b] <= cut_theirs[k] + 2 * e
        if not (eligible and (close or cut_off)):
            raise ValueError(f"{what} tokens {got.tolist()} differ from MLX's {want.tolist()}")


KERNEL = DepformerKernel()
