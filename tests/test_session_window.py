"""Past the ring's wrap, `Session.step` (compiled, fused, as the app runs it) attends to exactly
the last `context` positions: every step equals a cache-free reference forward of the whole
token history in float64, with each layer's attention limited to its last `context` positions.

Why the reference runs the whole history rather than only the last `context` inputs: with more
than one layer, the keys cached for position q were computed when q's own window was live, so
the model's memory reaches back `num_layers * (context - 1)` positions through its depth — as in
Moshi's streaming and its batched forward (tests/test_lm_parity.py). A recompute over only the
last `context` inputs is the same thing for one layer only; the test shows it differs for two.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.config import SamplingConfig
from model.conversation.persona import load
from model.conversation.prompt_plan import plan_prompt
from model.conversation.session_settings import SessionSettings
from model.sampling import GREEDY
from tests.checkpoints import small_config, write_small_checkpoint
from tests.textdata import load_wav_24k

CONTEXT, STEPS = 8, 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A greedy session of 40 steps on a context-8 model, with what each step was given."""
    folder = write_small_checkpoint(
        tmp_path_factory.mktemp("ckpt"), config=small_config(context=CONTEXT)
    )
    model = load(folder, dtype=mx.float32)
    greedy = SamplingConfig(audio_temperature=0.0, text_temperature=0.0)
    settings = SessionSettings("VARF2", "casual", sampling=greedy, seed=0)
    session = model.session(settings, collect_stats=True)
    pcm = load_wav_24k("conversation.wav")[: STEPS * 1920]
    columns, stats, text_out, agent_out = [], [], [], []
    for i in range(STEPS):
        # The column this step runs on: the previous step's text and agent tokens, this frame's
        # semantic user code and the previous frame's acoustic ones
        # (docs/driving-personaplex.md §Delays).
        text, agent = int(session._text.item()), np.array(session._agent)
        user_acoustic = np.array(session._user_acoustic)
        frame = session.step(pcm[i * 1920 : (i + 1) * 1920])
        assert frame.text_id == text and frame.agent_codes[0] == agent[0]
        columns.append([text, *agent, frame.user_codes[0], *user_acoustic])
        stats.append(session.last_stats)
        text_out.append(int(session._text.item()))
        agent_out.append(np.array(session._agent))
    return model, session, np.array(columns), stats, text_out, agent_out


def _inputs(model, session, columns: np.ndarray) -> np.ndarray:
    """Every temporal input of the session: voice embeddings, prompt columns, step columns."""
    lm, voice = model.lm, session.voice
    plan = plan_prompt(
        lm.config, session.system_tokens, voice_frames=voice.frames, voice_cache=voice.cache
    )
    tokens = np.concatenate([plan.columns, columns])
    x = lm.embed(mx.array(tokens, dtype=mx.int32))[0]
    return np.concatenate([np.array(voice.embeddings, np.float64), np.array(x, np.float64)])


def _rms(x: np.ndarray, alpha: mx.array, eps: float) -> np.ndarray:
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * np.array(alpha, np.float64).ravel()


def _rope(x: np.ndarray, base: float) -> np.ndarray:
    """Interleaved RoPE at absolute positions 0..T-1; x is [T, heads, head_dim]."""
    dh = x.shape[-1]
    angles = np.arange(len(x))[:, None] * base ** (-np.arange(0, dh, 2) / dh)[None]
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
    return out


def reference(model, x: np.ndarray, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Text logits and normed h of every position: no cache, float64, plain causal attention,
    each query limited to the `window` positions ending at itself (None: the whole history)."""
    cfg = model.lm.config.temporal
    w = lambda linear: np.array(linear.weight, np.float64)  # noqa: E731
    t, heads = len(x), cfg.num_heads
    q_pos, k_pos = np.arange(t)[:, None], np.arange(t)[None, :]
    allowed = (k_pos <= q_pos) & ((q_pos - k_pos < window) if window else True)
    for layer in model.lm.transformer.layers:
        attn = layer.self_attn
        qkv = (_rms(x, layer.norm1.alpha, cfg.norm_eps) @ w(attn.in_proj).T).reshape(
            t, 3, heads, -1
        )
        q, k, v = _rope(qkv[:, 0], cfg.max_period), _rope(qkv[:, 1], cfg.max_period), qkv[:, 2]
        scores = np.einsum("qhd,khd->hqk", q, k) * attn.scale
        scores = np.where(allowed[None], scores, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", p, v).reshape(t, -1) @ w(attn.out_proj).T
        gate, value = np.split(
            _rms(x, layer.norm2.alpha, cfg.norm_eps) @ w(layer.gating.linear_in).T, 2, -1
        )
        x = x + (gate / (1 + np.exp(-gate)) * value) @ w(layer.gating.linear_out).T
    h = _rms(x, model.lm.out_norm.alpha, cfg.norm_eps)
    return h @ w(model.lm.text_linear).T, h


def _stats(logits: np.ndarray, h: np.ndarray) -> tuple[float, float, list[int], np.ndarray]:
    logp = logits - logits.max()
    logp -= np.log(np.exp(logp).sum())
    p = np.exp(logp)
    top = np.argsort(-logp)[:5]
    return float(np.linalg.norm(h)), float(-(p * logp).sum()), top.tolist(), p[top]


def test_the_ring_wraps_many_times(run):
    model, session, *_ = run
    assert model.lm.config.temporal.context == CONTEXT
    assert session.position >= 6 * CONTEXT  # prefill and steps wrapped the ring over and over


def test_every_step_equals_the_windowed_reference(run):
    model, session, columns, stats, text_out, agent_out = run
    x = _inputs(model, session, columns)
    logits, h = reference(model, x, CONTEXT)
    first = len(x) - STEPS
    assert first == session.prompt_positions and len(x) == session.position
    for i in range(STEPS):
        norm, entropy, top, probs = _stats(logits[first + i], h[first + i])
        got = stats[i]
        assert got.hidden_norm == pytest.approx(norm, rel=1e-5)
        assert got.text_entropy == pytest.approx(entropy, abs=3e-5)
        assert got.top_tokens == top
        np.testing.assert_allclose(got.top_probs, probs, atol=1e-6)
        assert text_out[i] == top[0]  # greedy text is the reference's argmax
        h_ref = mx.array(h[first + i].astype(np.float32)).reshape(1, 1, -1)
        agent = model.lm.depformer_step(h_ref, mx.array(text_out[i]), n_steps=8, params=GREEDY)
        assert np.array(agent).tolist() == agent_out[i].tolist()


def test_a_wrong_window_would_be_caught(run):
    """The comparison is sharp: seeing the whole history, or recomputing only the last
    `context` inputs (a one-layer view of the window), gives other numbers at every step."""
    model, session, columns, stats, *_ = run
    x = _inputs(model, session, columns)
    first = len(x) - STEPS
    unlimited, _ = reference(model, x, None)
    last_inputs = [
        reference(model, x[p - CONTEXT + 1 : p + 1], None)[0][-1] for p in range(first, len(x))
    ]
    for wrong in (unlimited[first:], np.array(last_inputs)):
        entropies = np.array([_stats(row, np.zeros(1))[1] for row in wrong])
        got = np.array([s.text_entropy for s in stats])
        assert np.abs(entropies - got).min() > 5e-4
