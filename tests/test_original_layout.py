"""The original `nvidia/personaplex-7b-v1` layout, end to end: a small checkpoint with the hub's
file and tensor names (written without the project's writer, see tests/original_checkpoint.py)
loads through `model.load` and `ppx-tui respond`, float and quantized on load, and computes what
PyPI `moshi` computes from the same files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import wave
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from moshi.models import loaders
from moshi.models.lm import LMModel
from safetensors.torch import load_file

import model
from model.checkpoints.config_io import read_config
from model.checkpoints.layout import ORIGINAL
from tests.lm_helpers import assert_close, moshi_depformer_logits, moshi_forward, random_columns
from tests.mimi_reference import stream_encode
from tests.original_checkpoint import (
    LM_FILE,
    LM_KWARGS,
    MIMI_CONFIG,
    MIMI_FILE,
    VOICES,
    VOICES_FILE,
    write_original_checkpoint,
)
from tests.textdata import load_wav_24k

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "data" / "audio"
STEPS = 8
PPX_TUI = Path(sys.executable).with_name("ppx-tui")  # the console script `pip install` made


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_original_checkpoint(tmp_path_factory.mktemp("personaplex-7b-v1"))


@pytest.fixture(scope="module")
def moshi_lm(folder) -> LMModel:
    """moshi's LMModel (float32) with the checkpoint's weights, loaded strictly by name."""
    lm = LMModel(**LM_KWARGS).eval()
    state = {k: v.float() for k, v in load_file(str(folder / LM_FILE)).items()}
    lm.load_state_dict(state, strict=True)
    return lm


@pytest.fixture(scope="module")
def loaded(folder) -> model.PersonaPlex:
    return model.load(folder, dtype=mx.float32)


def test_the_files_are_the_hub_s(folder):
    names = {p.name for p in folder.iterdir()}
    assert {LM_FILE, MIMI_FILE, "tokenizer_spm_32k_3.model", VOICES_FILE} <= names
    assert not names & {"temporal.safetensors", "mimi.safetensors", "voices"}


def test_moshi_loads_every_tensor_by_name(folder, moshi_lm):
    """moshi's own models take both weight files with strict=True: no name is missing or extra."""
    mimi = loaders.get_mimi(None, MIMI_CONFIG, num_codebooks=8)
    mimi.load_state_dict(load_file(str(folder / MIMI_FILE)), strict=True)
    stored = load_file(str(folder / LM_FILE))
    assert {str(t.dtype) for t in stored.values()} == {"torch.bfloat16"}
    # The packed per-step projection is split by moshi into the steps' own linears.
    packed = stored["depformer.layers.1.self_attn.in_proj_weight"].float()
    step3 = moshi_lm.depformer.layers[1].self_attn.in_projs[3].weight
    assert torch.equal(step3, packed.view(16, -1, packed.shape[-1])[3])


def test_model_load_reads_the_moshi_config(loaded):
    lm = loaded.config.lm
    assert (lm.temporal.d_model, lm.temporal.num_layers, lm.temporal.dim_feedforward) == (
        256,
        2,
        704,
    )
    assert (lm.depformer.d_model, lm.depformer.dim_feedforward, lm.dep_q) == (64, 128, 16)
    assert lm.text_card == 400 and list(lm.delays) == LM_KWARGS["delays"]
    assert (loaded.config.mimi.dimension, loaded.config.mimi.n_q) == (32, 10)
    assert loaded.quantization == "float32" and loaded.voices == VOICES


def test_temporal_and_depformer_equal_moshi(loaded, moshi_lm):
    cols = random_columns(loaded.config, STEPS, seed=4)
    ref_logits, ref_h = moshi_forward(moshi_lm, cols)
    lm = loaded.lm
    logits, h = lm.forward(lm.embed(mx.array(cols)), lm.make_cache())
    assert_close(np.array(logits[0]), ref_logits)
    assert_close(np.array(h[0]), ref_h)
    ref = moshi_depformer_logits(moshi_lm, cols, ref_h)
    h_ref = mx.array(ref_h)[None]
    for t in range(STEPS):
        got = lm.depformer_logits(h_ref[:, t : t + 1], mx.array(cols[t, 0]), mx.array(cols[t, 1:]))
        assert_close(np.array(got), ref[t])


def test_mimi_codes_equal_moshi(folder, loaded):
    reference = loaders.get_mimi(str(folder / MIMI_FILE), MIMI_CONFIG, num_codebooks=8)
    pcm = load_wav_24k("shipping.wav")[: 4 * 1920]
    assert np.array_equal(loaded.mimi.encode_numpy(pcm), stream_encode(reference, pcm))


def test_voices_come_from_the_archive(folder, loaded):
    with tarfile.open(folder / VOICES_FILE) as tar:
        member = tar.extractfile("voices/VARM1.pt")
        assert member is not None
        saved = torch.load(io.BytesIO(member.read()))
    voice = loaded.voice("VARM1")
    assert voice.frames == saved["embeddings"].shape[0] == 5
    emb = saved["embeddings"].float().reshape(5, -1).numpy()
    assert np.array_equal(np.array(voice.embeddings), emb)
    assert np.array_equal(voice.cache, saved["cache"][0].numpy())


def test_model_load_responds(loaded):
    reply = loaded.respond(load_wav_24k("weather.wav")[:24000], voice="VARM1", max_steps=4)
    assert reply.audio.shape == (4 * 1920,) and np.isfinite(reply.audio).all()


def _frames(path: Path) -> tuple[int, int]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getnframes()


@pytest.mark.parametrize("bits", [None, 4, 8], ids=["bf16", "q4", "q8"])
def test_cli_respond(folder, tmp_path, bits):
    out = tmp_path / "reply.wav"
    quantize = [] if bits is None else ["--quantize", str(bits)]
    proc = subprocess.run(
        [str(PPX_TUI), "respond", "--model", str(folder),
         "--input", str(AUDIO / "shipping.wav"), "--output", str(out), "--max-steps", "6",
         "--voice", "NATF2", "--json", *quantize],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _frames(out) == (24000, 6 * 1920)
    meta = json.loads(proc.stdout)
    assert meta["voice"] == "NATF2" and meta["reply_steps"] == 6
    assert meta["quantization"] == (f"{bits}-bit" if bits else "float32")


def _mimi_config_error(folder: Path, name: object, mimi: object = None) -> str:
    (folder / "config.json").write_text(json.dumps({**LM_KWARGS, "mimi_config_name": name}))
    if mimi is not None:
        (folder / "mimi.json").write_text(json.dumps(mimi))
    with pytest.raises(model.CheckpointError) as info:
        read_config(folder, ORIGINAL)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    return message


def _changed(part: str, key: str, value: object) -> dict:
    config = json.loads(json.dumps(MIMI_CONFIG))
    config[part][key] = value
    return config


def test_mimi_config_name_errors_are_one_sentence(tmp_path):
    config, mimi = tmp_path / "config.json", tmp_path / "mimi.json"
    assert _mimi_config_error(tmp_path, "mimi.json") == (
        f"{config} names the Mimi config mimi.json, which is not in {tmp_path}."
    )
    assert _mimi_config_error(tmp_path, "../mimi.json") == (
        f"{config} is invalid: 'mimi_config_name' must be a file name in the checkpoint folder, not '../mimi.json'."
    )
    assert _mimi_config_error(tmp_path, "mimi.json", _changed("quantizer", "n_q", 4)) == (
        f"{mimi} is invalid: 'n_q' must be at least the 8 codebooks a speaker uses, not 4."
    )
    assert _mimi_config_error(tmp_path, "mimi.json", _changed("transformer", "d_model", 48)) == (
        f"{mimi} is invalid: 'transformer.d_model' must be the SEANet dimension (32), not 48."
    )
    assert _mimi_config_error(tmp_path, "mimi.json", {**MIMI_CONFIG, "seanet": [1]}) == (
        f"{mimi} is invalid: 'seanet' must be a JSON object, not [1]."
    )
