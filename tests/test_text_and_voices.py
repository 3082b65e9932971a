"""Tokenizer, system prompts, voice presets and the safe reader for PyTorch voice files."""

from __future__ import annotations

import io
import pickle
import tarfile

import mlx.core as mx
import numpy as np
import pytest
import torch

from model.checkpoints.torch_file import read_torch_tensors
from model.checkpoints.voices import (
    VOICE_PRESETS,
    available_voices,
    canonical_voice,
    load_voice,
    voice_category,
)
from model.config import SamplingConfig
from model.conversation.prompts import (
    CUSTOM_PROMPT,
    PROMPT_PRESETS,
    resolve_prompt,
    wrap_system_prompt,
)
from model.conversation.session_settings import SESSION_KEYS, SessionSettings
from model.conversation.tokenizer import TextTokenizer
from model.errors import CheckpointError, UnknownPromptError, UnknownVoiceError
from tests.textdata import train_tiny_spm


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return TextTokenizer(train_tiny_spm(tmp_path_factory.mktemp("spm") / "tok.model"))


def test_prompt_presets_and_free_text():
    assert set(PROMPT_PRESETS) == {"assistant", "focused", "customer-service", "teacher", "casual"}
    assert resolve_prompt("teacher").startswith("You are a wise and friendly teacher.")
    assert resolve_prompt("Casual") == "You enjoy having a good conversation."
    assert resolve_prompt("teacher", "  Be a pirate. ") == PROMPT_PRESETS["teacher"]
    assert resolve_prompt(CUSTOM_PROMPT, "  Be a pirate. ") == "Be a pirate."
    with pytest.raises(UnknownPromptError, match="The system prompt text is empty"):
        resolve_prompt(CUSTOM_PROMPT, "  ")
    with pytest.raises(UnknownPromptError, match="Unknown system prompt preset 'pirate'; choose"):
        resolve_prompt("pirate")
    assert wrap_system_prompt(" hi ") == "<system> hi <system>"
    assert wrap_system_prompt("<system> hi <system>") == "<system> hi <system>"


def test_session_settings_name_each_setting_once():
    s = SessionSettings("VARF2", CUSTOM_PROMPT, "  Be brief. ", seed=4).replace(text_top_k=9)
    assert s.sampling == SamplingConfig(text_top_k=9) and s.system_prompt == "Be brief."
    assert set(s.flat()) == SESSION_KEYS
    assert SESSION_KEYS == {"voice", "prompt", "prompt_text", "seed"} | {
        "audio_temperature",
        "audio_top_k",
        "text_temperature",
        "text_top_k",
    }
    assert SessionSettings().replace(**s.flat()) == s
    assert (
        SessionSettings(prompt="teacher", prompt_text="old").system_prompt
        == (PROMPT_PRESETS["teacher"])
    )


def test_system_prompt_tokens_match_sentencepiece(tokenizer):
    ids = tokenizer.encode_system_prompt("You enjoy having a good conversation.")
    expected = tokenizer._sp.EncodeAsIds("<system> You enjoy having a good conversation. <system>")
    assert ids == list(expected)
    assert not {1, 2} & set(ids)  # no BOS/EOS
    assert tokenizer.decode(ids) == "<system> You enjoy having a good conversation. <system>"


def test_pieces_skip_pad_and_epad(tokenizer):
    ids = tokenizer.encode("the part")
    stream = [3, ids[0], 0, 3, *ids[1:], 3]
    assert tokenizer.piece(3) == "" and tokenizer.piece(0) == ""
    assert tokenizer.decode(stream) == "the part"
    assert tokenizer.piece(10**6) == ""


def test_bad_tokenizer_file(tmp_path):
    bad = tmp_path / "tok.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="is not a SentencePiece model"):
        TextTokenizer(bad)
    with pytest.raises(CheckpointError, match="is missing"):
        TextTokenizer(tmp_path / "nope.model")


def test_voice_presets():
    assert len(VOICE_PRESETS) == 18
    assert voice_category("VARF2") == "varied female" and voice_category("NATM0") == "natural male"
    assert canonical_voice("varf2") == "VARF2"
    with pytest.raises(UnknownVoiceError, match="Unknown voice 'BOB'; choose one of: NATF0"):
        canonical_voice("BOB")


def _voice_tensors(t: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(t, 1, 1, d, generator=g)
    cache = torch.randint(0, 2048, (1, 17, 4), generator=g)
    return emb, cache


def test_voice_from_converted_safetensors(tmp_path):
    emb, cache = _voice_tensors(7, 16, 0)
    (tmp_path / "voices").mkdir()
    mx.save_safetensors(
        str(tmp_path / "voices" / "VARF2.safetensors"),
        {
            "embeddings": mx.array(emb.numpy()).astype(mx.float16),
            "cache": mx.array(cache.float().numpy()),
        },
    )
    v = load_voice(tmp_path, "varf2", d_model=16, n_streams=17, ring_columns=4, dtype=mx.float32)
    assert v.name == "VARF2" and v.frames == 7
    np.testing.assert_allclose(np.array(v.embeddings), emb.view(7, 16).half().float().numpy())
    np.testing.assert_array_equal(v.cache, cache.view(17, 4).numpy())
    with pytest.raises(UnknownVoiceError, match="choose one of: VARF2"):
        load_voice(tmp_path, "NATM1", d_model=16, n_streams=17, ring_columns=4, dtype=mx.float32)
    with pytest.raises(CheckpointError, match=r"'embeddings' has shape \(7, 1, 1, 16\), expected"):
        load_voice(tmp_path, "VARF2", d_model=32, n_streams=17, ring_columns=4, dtype=mx.float32)
    with pytest.raises(CheckpointError, match=r"'cache' holds text token ids outside 0..100;"):
        load_voice(
            tmp_path, "VARF2", d_model=16, n_streams=17, ring_columns=4, dtype=mx.float32,
            text_card=100, card=2048,
        )  # fmt: skip


def test_voice_from_original_tgz_without_running_pickles(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, name in enumerate(["NATF0", "VARM4"]):
            emb, cache = _voice_tensors(5 + i, 16, i)
            pt = io.BytesIO()
            torch.save({"embeddings": emb.to(torch.bfloat16), "cache": cache}, pt)
            info = tarfile.TarInfo(f"voices/{name}.pt")
            info.size = len(pt.getvalue())
            tar.addfile(info, io.BytesIO(pt.getvalue()))
    (tmp_path / "voices.tgz").write_bytes(buf.getvalue())
    assert available_voices(tmp_path) == ("NATF0", "VARM4")
    v = load_voice(tmp_path, "VARM4", d_model=16, n_streams=17, ring_columns=4, dtype=mx.float32)
    emb, cache = _voice_tensors(6, 16, 1)
    np.testing.assert_array_equal(
        np.array(v.embeddings), emb.view(6, 16).bfloat16().float().numpy()
    )
    np.testing.assert_array_equal(v.cache, cache.view(17, 4).numpy())


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_torch_reader_refuses_arbitrary_objects(capsys):
    pt = io.BytesIO()
    torch.save({"embeddings": torch.zeros(2), "x": _Evil()}, pt)
    with pytest.raises(
        CheckpointError, match=r"holds an object of type \S*print; only plain tensors are read"
    ):
        read_torch_tensors(pt.getvalue(), "evil.pt")
    assert "pwned" not in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="not a PyTorch zip archive"):
        read_torch_tensors(pickle.dumps({"a": 1}), "plain.pkl")


def test_torch_reader_dtypes_and_strides():
    t = torch.arange(24, dtype=torch.float32).view(4, 6)
    pt = io.BytesIO()
    torch.save({"t": t.t(), "h": t.half(), "l": t.long()[1:]}, pt)
    out = read_torch_tensors(pt.getvalue())
    np.testing.assert_array_equal(out["t"], t.t().numpy())
    np.testing.assert_array_equal(out["h"], t.half().numpy())
    np.testing.assert_array_equal(out["l"], t.long()[1:].numpy())
