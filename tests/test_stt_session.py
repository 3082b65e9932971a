"""The user's transcript inside a PersonaPlex session: one Mimi encode with the STT's 32
codebooks, the STT step in the same evaluation; PersonaPlex's tokens do not change, and the
STT's tokens are those of the STT run alone on the same audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import model
from model import SessionSettings
from model.errors import CheckpointError
from model.stt import load_stt
from model.stt.transcribe import transcribe_frames
from tests.mimi_reference import load_test_audio
from tests.stt_app import write_pair
from tests.stt_reference import write_tiny_stt_repo

SEED = 11


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    pcm = load_test_audio("greeting.wav")
    return pcm[: len(pcm) // 1920 * 1920]


def run(persona, pcm: np.ndarray, **options) -> list:
    session = persona.session(SessionSettings(seed=SEED), **options)
    session.warm_up()
    return [session.step(pcm[i : i + 1920]) for i in range(0, len(pcm), 1920)]


def tokens(frames: list) -> list:
    return [(f.text_id, f.agent_codes.tolist(), f.user_codes.tolist()) for f in frames]


@pytest.mark.parametrize("phases", [False, True])
def test_personaplex_tokens_are_unchanged_and_the_user_is_transcribed(
    pair, speech, phases: bool
) -> None:
    persona_dir, stt_dir = pair
    persona = model.load(persona_dir)
    plain = run(persona, speech)
    stt = load_stt(stt_dir)
    persona.listen(stt)
    heard = run(persona, speech, measure_phases=phases)
    assert tokens(heard) == tokens(plain)
    assert all(f.user_text_id is None and f.end_of_turn == () for f in plain)
    # the same tokens and heads as the STT alone on its own Mimi (no flush: the same frames)
    alone = list(transcribe_frames(stt, speech, flush=False))
    assert [f.user_text_id for f in heard] == [f.text_token for f in alone]
    assert len({f.user_text_id for f in heard}) > 3  # the random model does say things
    got = np.array([f.end_of_turn for f in heard])
    want = np.array([f.end_of_turn for f in alone])
    assert got.shape == (len(heard), 4) and np.allclose(got, want, atol=1e-5)
    assert [f.user_text for f in heard] == [f.piece for f in alone]
    if phases:
        assert all(f.timings.stt_ms > 0 for f in heard)
    # a session can still leave the transcript off
    off = run(persona, speech, transcribe_user=False)
    assert tokens(off) == tokens(plain) and all(f.user_text_id is None for f in off)


def test_launching_the_encode_early_changes_no_output(pair, speech) -> None:
    """`Session.launch_early` (the encode and the STT step launched before the rest of the step
    is built) gives the same tokens, transcript and audio as launching all at the end."""
    persona_dir, stt_dir = pair
    persona = model.load(persona_dir)
    persona.listen(load_stt(stt_dir))
    outputs = {}
    for early in (True, False):
        session = persona.session(SessionSettings(seed=SEED))
        assert session.launch_early  # the default
        session.launch_early = early
        session.warm_up()
        outputs[early] = [session.step(speech[i : i + 1920]) for i in range(0, 30 * 1920, 1920)]
    early, at_end = outputs[True], outputs[False]
    assert tokens(early) == tokens(at_end)
    assert [f.user_text_id for f in early] == [f.user_text_id for f in at_end]
    assert len({f.user_text_id for f in early}) > 1
    for a, b in zip(early, at_end, strict=True):
        np.testing.assert_array_equal(a.pcm, b.pcm)
        assert a.end_of_turn == b.end_of_turn


def test_reset_starts_the_transcript_again(pair, speech) -> None:
    persona_dir, stt_dir = pair
    persona = model.load(persona_dir)
    persona.listen(load_stt(stt_dir))
    session = persona.session(SessionSettings(seed=SEED))
    pcm = speech[: 20 * 1920]
    first = [session.step(pcm[i : i + 1920]).user_text_id for i in range(0, len(pcm), 1920)]
    session.reset()
    again = [session.step(pcm[i : i + 1920]).user_text_id for i in range(0, len(pcm), 1920)]
    assert first == again


def test_another_mimi_is_one_sentence(pair, tmp_path: Path) -> None:
    persona_dir, _ = pair
    persona = model.load(persona_dir)
    other = load_stt(write_tiny_stt_repo(tmp_path / "other", seed=5))  # its own random Mimi
    with pytest.raises(CheckpointError) as error:
        persona.listen(other)
    text = str(error.value)
    assert "another Mimi" in text and "\n" not in text and text.endswith(".")
    assert persona.listener is None


def test_hearing_outside_a_session_gives_the_sessions_tokens(pair, speech) -> None:
    """Turn-based listening runs the STT alone on the same encoder: the same tokens and heads
    as a session's steps; a session told not to transcribe its steps skips the STT."""
    persona_dir, stt_dir = pair
    persona = model.load(persona_dir)
    persona.listen(load_stt(stt_dir))
    in_session = run(persona, speech)
    hearing = persona.listener.hearing(persona)
    hearing.warm_up()
    for _ in range(2):  # and again after a reset
        heard = [hearing.hear(speech[i : i + 1920]) for i in range(0, len(speech), 1920)]
        assert [h.user_text_id for h in heard] == [f.user_text_id for f in in_session]
        assert [h.user_text for h in heard] == [f.user_text for f in in_session]
        got = np.array([h.end_of_turn for h in heard])
        assert np.allclose(got, [f.end_of_turn for f in in_session], atol=1e-5)
        hearing.reset()
    session = persona.session(SessionSettings(seed=SEED))
    session.transcribe_steps = False
    frames = [session.step(speech[i : i + 1920]) for i in range(0, 10 * 1920, 1920)]
    assert all(f.user_text_id is None for f in frames)
    assert tokens(frames) == tokens(in_session[:10])


def test_a_bfloat16_copy_of_the_same_mimi_is_accepted(pair, speech, tmp_path: Path) -> None:
    """The STT's Mimi stored in bfloat16: the same network up to rounding, so it is accepted,
    and PersonaPlex still hears its own codes (its projections and first codebooks are used)."""
    import shutil

    import mlx.core as mx

    from tests.stt_reference import MIMI_FILE

    persona_dir, stt_dir = pair
    folder = Path(shutil.copytree(stt_dir, tmp_path / "stt"))
    weights = mx.load(str(folder / MIMI_FILE))
    mx.save_safetensors(
        str(folder / MIMI_FILE), {k: v.astype(mx.bfloat16) for k, v in weights.items()}
    )
    persona = model.load(persona_dir)
    plain = run(persona, speech[: 30 * 1920])
    persona.listen(load_stt(folder))
    heard = run(persona, speech[: 30 * 1920])
    assert tokens(heard) == tokens(plain)
    assert all(f.user_text_id is not None for f in heard)


def test_a_deferred_warm_up_transcribes_eagerly_then_compiled(pair, speech) -> None:
    """With compiling deferred (`warm_up(defer=True)`), the STT runs eagerly too until
    `compile_next` has warmed its graphs; the transcript is the compiled session's."""
    persona_dir, stt_dir = pair
    persona = model.load(persona_dir)
    persona.listen(load_stt(stt_dir))
    session = persona.session(SessionSettings(seed=SEED))
    session.warm_up(defer=True)
    graphs = persona.listener.graphs
    frames, names = [], []
    for i in range(0, len(speech), 1920):
        if i >= 5 * 1920 and session.steps_eagerly:
            names.append(session.compile_next())
        frames.append(session.step(speech[i : i + 1920]))
        if i < 5 * 1920:
            assert not graphs  # eager: no STT graph built
    assert not session.steps_eagerly
    assert any(n.startswith("speech-to-text") for n in names) and graphs
    persona_plain = model.load(persona_dir)
    persona_plain.listen(load_stt(stt_dir))
    plain = run(persona_plain, speech)
    assert tokens(frames) == tokens(plain)
    assert [f.user_text_id for f in frames] == [f.user_text_id for f in plain]
