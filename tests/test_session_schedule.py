"""`Session` against a step-by-step implementation of the reference schedule, token for token
(greedy, float32). The schedule: docs/driving-personaplex.md §The reference step."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from model.config import SamplingConfig
from model.conversation.persona import load
from model.conversation.prompt_plan import plan_prompt
from model.conversation.session_settings import SessionSettings
from model.lm.kv_cache import Window
from model.lm.ring_mask import ENV_VAR, MODES
from model.sampling import GREEDY
from tests.checkpoints import small_config, write_small_checkpoint
from tests.reference_schedule import ReferenceSchedule
from tests.textdata import load_wav_24k

GREEDY_SETTINGS = SessionSettings(
    voice=None, sampling=SamplingConfig(audio_temperature=0.0, text_temperature=0.0)
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = write_small_checkpoint(tmp_path_factory.mktemp("ckpt"))
    return load(folder, dtype=mx.float32)


def _user_frames(model, n: int) -> list[np.ndarray]:
    pcm = load_wav_24k("shipping.wav")[: n * 1920]
    return [pcm[i * 1920 : (i + 1) * 1920] for i in range(n)]


def _reference(model, voice, system_tokens):
    lm = model.lm
    caches = lm.make_cache()

    def forward(column, embedding):
        x = embedding if embedding is not None else lm.embed(mx.array(column, dtype=mx.int32))
        logits, h = lm.forward(x, caches)
        return np.array(logits[0, -1]), h

    def depformer(h, text, forced, provided):
        out = lm.depformer_step(
            h,
            mx.array(text, dtype=mx.int32),
            forced=mx.array(forced, dtype=mx.int32),
            provided=mx.array(provided),
            params=GREEDY,
        )
        return np.array(out)

    cfg = lm.config
    ref = ReferenceSchedule(forward, depformer, cfg.delays, cfg.text_initial, cfg.audio_initial)
    if voice is not None:
        rows = [voice.embeddings[i].reshape(1, 1, -1) for i in range(voice.frames)]
        ref.voice_prompt(rows, voice.cache)
    ref.prompt(system_tokens)
    return ref, caches


def _user_codes(model, frames):
    codec = model.mimi
    state = codec.model.init_encode_state()
    out = []
    for pcm in frames:
        codes, state = codec.model.encode_step(mx.array(pcm), state)
        out.append(np.array(codes))
    return out


@pytest.mark.parametrize("voice_name", ["VARF2", None])
def test_session_matches_the_reference_schedule_one_frame_earlier(model, voice_name):
    n = 12
    frames = _user_frames(model, n + 1)
    voice = model.voice(voice_name) if voice_name else None
    tokens = model.system_tokens("casual")
    ref, ref_caches = _reference(model, voice, tokens)
    ref_out = [ref.step(user=codes) for codes in _user_codes(model, frames)]
    assert all(o is not None for o in ref_out)

    session = model.session(GREEDY_SETTINGS, voice=voice, system_tokens=tokens)
    ours = [session.step(pcm) for pcm in frames[:n]]
    for i, frame in enumerate(ours):
        got = np.concatenate([[frame.text_id], frame.agent_codes, frame.user_codes])
        # The reference returns agent frame p-1 with user frame p; the session returns frame p.
        np.testing.assert_array_equal(got, ref_out[i + 1], err_msg=f"frame {i}")
    # The text of the first output is the prompt phase's (forced) PAD in the reference's frame 0.
    assert ref_out[0][0] == model.lm.config.text_pad_id


def test_batched_prefill_equals_stepwise_cache_and_logits(model):
    voice = model.voice("NATF2")
    tokens = model.system_tokens("teacher")
    ref, ref_caches = _reference(model, voice, tokens)
    # One more reference step runs the forward at position O-1, which the session prefills.
    ref.step(user=_user_codes(model, _user_frames(model, 1))[0])
    session = model.session(GREEDY_SETTINGS, voice=voice, system_tokens=tokens)
    n = session.position
    assert n == ref_caches[0].offset == session.prompt_positions
    for ours, theirs in zip(session._caches, ref_caches, strict=True):
        for a, b in zip(ours.state, theirs.state, strict=True):
            np.testing.assert_allclose(np.array(a[:, :, :n]), np.array(b[:, :, :n]), atol=2e-5)
    # Next-step logits: batched forward over the plan vs one position at a time.
    lm = model.lm
    plan = plan_prompt(lm.config, tokens, voice_frames=voice.frames, voice_cache=voice.cache)
    x = mx.concatenate([voice.embeddings[None], lm.embed(mx.array(plan.columns))], axis=1)
    batched, _ = lm.forward(x, lm.make_cache())
    caches = lm.make_cache()
    stepwise = [lm.forward(x[:, i : i + 1], caches)[0] for i in range(x.shape[1])]
    np.testing.assert_allclose(
        np.array(batched[0]), np.array(mx.concatenate(stepwise, axis=1)[0]), atol=5e-5
    )


def test_skipping_the_user_depformer_steps_changes_no_agent_token(model):
    frames = _user_frames(model, 10)
    a = model.session(GREEDY_SETTINGS.replace(voice="NATM0"))
    b = model.session(GREEDY_SETTINGS.replace(voice="NATM0"), depformer_steps=16)
    for pcm in frames:
        fa, fb = a.step(pcm), b.step(pcm)
        assert fa.text_id == fb.text_id
        np.testing.assert_array_equal(fa.agent_codes, fb.agent_codes)
        np.testing.assert_allclose(fa.pcm, fb.pcm, atol=1e-6)


def test_phase_timing_mode_gives_the_same_frames(model):
    frames = _user_frames(model, 6)
    a = model.session(SessionSettings("VARF2", "casual", seed=7))
    b = model.session(SessionSettings("VARF2", "casual", seed=7), measure_phases=True)
    for pcm in frames:
        fa, fb = a.step(pcm), b.step(pcm)
        assert fa.text_id == fb.text_id
        np.testing.assert_array_equal(fa.agent_codes, fb.agent_codes)
        assert fb.timings.encode_ms > 0 and fb.timings.depformer_ms > 0
        assert fb.timings.temporal_ms > 0 and fb.timings.decode_ms > 0


def test_seeded_sessions_repeat_and_reset_starts_over(model):
    frames = _user_frames(model, 5)
    a = model.session(SessionSettings("VARF2", "casual", seed=3))
    first = [a.step(p).agent_codes for p in frames]
    a.reset()
    again = [a.step(p).agent_codes for p in frames]
    b = model.session(SessionSettings("VARF2", "casual", seed=4))
    other = [b.step(p).agent_codes for p in frames]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))


def test_step_codes_is_the_lm_part_of_step(model):
    frames = _user_frames(model, 6)
    codes = _user_codes(model, frames)
    a = model.session(SessionSettings("VARF2", "casual", seed=9))
    b = model.session(SessionSettings("VARF2", "casual", seed=9))
    for pcm, user in zip(frames, codes, strict=True):
        fa = a.step(pcm)
        text, agent = b.step_codes(user)
        assert text == fa.text_id
        np.testing.assert_array_equal(agent, fa.agent_codes)


@pytest.fixture(scope="module")
def short_ring_model(tmp_path_factory):
    """A ring of 40 positions: the conversation fills it (and Mimi's caches) within 30 frames."""
    config = small_config(context=40)
    folder = write_small_checkpoint(tmp_path_factory.mktemp("short"), config=config)
    return load(folder, dtype=mx.float32)


@pytest.mark.parametrize("hide", MODES)
def test_windows_and_filled_caches_keep_the_reference_schedule(short_ring_model, monkeypatch, hide):
    monkeypatch.setattr(
        "model.lm.model.SMALLEST_WINDOW", 8
    )  # windows 8, 16, 32, 40, then the full ring
    monkeypatch.setenv(ENV_VAR, hide)
    model = short_ring_model
    n = 30
    frames = _user_frames(model, n + 1)
    tokens = model.system_tokens("casual")[:4]  # a short prompt: two masked windows ahead
    ref, _ = _reference(model, None, tokens)
    ref_out = [ref.step(user=codes) for codes in _user_codes(model, frames)]

    graphs = model.step_graphs()
    warmed = model.session(GREEDY_SETTINGS, system_tokens=tokens)
    warmed.warm_up()
    built = graphs.keys()
    windows = {k[2] for k in built if k[0] == "lm" and k[3] == hide}
    ahead = {n for n in (8, 16, 32, 40) if n > warmed.position}
    assert {w.length for w in windows if w.masked} == ahead and len(ahead) >= 2
    assert Window(40, False) in windows
    assert {k[1] for k in built if k[0] == "encode"} == {False, True}
    traces = graphs.traces
    cold = model.session(GREEDY_SETTINGS, system_tokens=tokens)
    for i, pcm in enumerate(frames[:n]):
        a, b = warmed.step(pcm), cold.step(pcm)
        got = np.concatenate([[a.text_id], a.agent_codes, a.user_codes])
        np.testing.assert_array_equal(got, ref_out[i + 1], err_msg=f"frame {i}")
        np.testing.assert_array_equal(a.agent_codes, b.agent_codes)
        np.testing.assert_array_equal(a.pcm, b.pcm)
    assert warmed.position > 40  # the ring wrapped
    assert graphs.keys() == built and graphs.traces == traces  # warm_up built every graph needed
