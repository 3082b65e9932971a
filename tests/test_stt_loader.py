"""Loading Kyutai STT checkpoints: the two real repositories' variants (end-of-turn heads declared
in config.json or only present in the weights, as in stt-1b-en_fr-candle), quantization, the hub,
and every broken checkpoint ending in one sentence."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from model.config import MimiConfig
from model.errors import CheckpointError
from model.stt import SttStream, load_stt, stt_1b_en_fr
from model.stt.config import SttConfig, moshi_hidden
from tests.fake_hub import fake_hub, unreachable_hub
from tests.stt_reference import MIMI_FILE, TOKENIZER_FILE, write_tiny_stt_repo


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_stt_repo(tmp_path_factory.mktemp("stt") / "base")


@pytest.fixture
def copy(base: Path, tmp_path: Path) -> Callable[[], Path]:
    def make() -> Path:
        return Path(shutil.copytree(base, tmp_path / "repo"))

    return make


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def one_sentence(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and text.endswith(".") and "Traceback" not in text
    return text


def test_published_config_defaults() -> None:
    cfg = stt_1b_en_fr()
    t = cfg.transformer
    assert (t.d_model, t.num_heads, t.num_layers, t.context) == (2048, 16, 16, 750)
    assert t.dim_feedforward == 5632 == moshi_hidden(2048, 4.125)  # linear_in 2048 -> 11264
    assert (cfg.n_q, cfg.card, cfg.text_card, cfg.text_pad_id, cfg.text_epad_id) == (
        32,
        2048,
        8000,
        3,
        0,
    )
    assert t.max_period == 100000.0 and t.norm_eps == 1e-8
    assert (cfg.delay_frames, cfg.flush_frames) == (6, 7)
    assert moshi_hidden(64, 4.0) == 168  # moshi's 21/8 rule when the FFN is 4 * dim


def test_heads_only_in_the_weights_are_found(copy) -> None:
    folder = copy()
    edit_config(folder, extra_heads_num_heads=None, extra_heads_dim=None)
    stt = load_stt(folder, dtype=mx.float32)
    assert (stt.config.extra_heads, stt.config.extra_heads_dim) == (4, 6)
    step = SttStream(stt.lm).step(mx.zeros((32,), mx.int32))
    mx.eval(step.end_of_turn)
    assert step.end_of_turn.shape == (4,)


def test_a_model_without_heads_transcribes(tmp_path: Path) -> None:
    folder = write_tiny_stt_repo(tmp_path / "plain", extra_heads=0)
    stt = load_stt(folder, dtype=mx.float32)
    assert stt.config.extra_heads == 0
    step = SttStream(stt.lm).step(mx.zeros((32,), mx.int32))
    mx.eval(step.text_token, step.end_of_turn)
    assert step.end_of_turn.shape == (0,) and 0 <= step.text_token.item() < 400


def test_ffn_size_from_the_weights_when_config_is_silent(copy) -> None:
    folder = copy()
    edit_config(folder, hidden_scale=None)  # moshi would then build 4 * dim (hidden 168)
    stt = load_stt(folder, dtype=mx.float32)
    assert stt.config.transformer.dim_feedforward == moshi_hidden(64, 4.125) == 176


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_load_runs(base: Path, bits: int) -> None:
    stt = load_stt(base, dtype=mx.float32, quantize=bits)
    layer = stt.lm.transformer.layers[0]
    assert layer.self_attn.in_proj.bits == bits and layer.gating.linear_in.bits == bits
    assert not hasattr(layer.gating.linear_out, "bits")  # 176 inputs: no group of 64 fits
    assert not hasattr(stt.lm.text_linear, "bits")  # heads and embeddings stay float
    step = SttStream(stt.lm).step(mx.zeros((32,), mx.int32))
    mx.eval(step.text_token, step.head_probs)
    assert np.allclose(np.array(step.head_probs).sum(-1), 1, atol=1e-5)


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "no config": (lambda f: (f / "config.json").unlink(), "has no config.json"),
    "bad json": (lambda f: (f / "config.json").write_text("{nope"), "is not valid JSON"),
    "tts model": (lambda f: edit_config(f, model_type="tts"), "not a speech-to-text"),
    "depformer": (lambda f: edit_config(f, dep_q=8), "'dep_q'"),
    "delays": (lambda f: edit_config(f, delays=[0] + [1] * 32), "'delays'"),
    "short delays": (lambda f: edit_config(f, delays=[0] * 9), "'delays'"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "lacks model.safetensors"),
    "more layers": (lambda f: edit_config(f, num_layers=3), "has no tensor for"),
    "wider": (lambda f: edit_config(f, dim=128, hidden_scale=None), "has shape"),
    "fewer codebooks": (lambda f: edit_config(f, n_q=8, delays=[0] * 9), "unexpected tensor"),
    "ffn": (lambda f: edit_config(f, hidden_scale=2.0), "feed-forward"),
    "heads": (lambda f: edit_config(f, extra_heads_num_heads=2), "2"),
    "no mimi": (lambda f: (f / MIMI_FILE).unlink(), "lacks its Mimi file"),
    "no tokenizer": (lambda f: (f / TOKENIZER_FILE).unlink(), "tokenizer"),
    "norm": (lambda f: edit_config(f, norm="layer_norm"), "'norm'"),
    "path in name": (lambda f: edit_config(f, mimi_name="../x.safetensors"), "'mimi_name'"),
    "endless delay": (
        lambda f: edit_config(f, stt_config={"audio_delay_seconds": 1e9}),
        "'stt_config.audio_delay_seconds' must be a number from 0.0 to 60.0, not 1000000000.0.",
    ),
    "endless prefix": (
        lambda f: edit_config(f, stt_config={"audio_silence_prefix_seconds": 1e6}),
        "'stt_config.audio_silence_prefix_seconds' must be a number from 0.0 to 60.0, not 1000000.0.",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_checkpoints_end_in_one_sentence(copy, case: str) -> None:
    folder = copy()
    breaks, expected = BROKEN[case]
    breaks(folder)
    with pytest.raises(CheckpointError) as error:
        load_stt(folder, dtype=mx.float32)
    assert expected in one_sentence(error.value)


@pytest.mark.parametrize("case", ["no weights", "no mimi"])
def test_a_missing_file_is_named_and_no_download_is_asked(copy, case: str) -> None:
    """A folder, or a repo that lacks the file once fetched, is not mended by downloading it
    again (the hub's own incomplete cache has its sentences in model.checkpoints.hub)."""
    folder = copy()
    BROKEN[case][0](folder)
    with pytest.raises(CheckpointError) as error:
        load_stt(folder, dtype=mx.float32)
    text = one_sentence(error.value)
    assert text.startswith(f"{folder} is an incomplete STT model: it lacks ")
    assert text.endswith(", which its config.json names.") and "download" not in text


def test_declared_heads_missing_from_weights(tmp_path: Path) -> None:
    folder = write_tiny_stt_repo(tmp_path / "plain", extra_heads=0)
    edit_config(folder, extra_heads_num_heads=4)
    with pytest.raises(CheckpointError) as error:
        load_stt(folder)
    assert "declares 4 extra heads" in one_sentence(error.value)


def test_not_a_folder_names_the_stt_flag(tmp_path: Path) -> None:
    """The app's flag when the app gives it (`flag=`), none from the library alone."""
    with pytest.raises(CheckpointError) as error:
        load_stt(tmp_path / "missing" / "dir", flag="--stt-model")
    text = one_sentence(error.value)
    assert "--stt-model" in text and "kyutai/stt-1b-en_fr" in text
    with pytest.raises(CheckpointError) as error:
        load_stt(tmp_path / "missing" / "dir")
    text = one_sentence(error.value)
    assert "--" not in text and "give a local checkpoint folder" in text


def test_repo_id_downloads_through_the_hub(
    copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    served = copy()
    (served / "model.q8.safetensors").write_bytes(b"\0" * 4096)  # not named by config.json
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with fake_hub("kyutai/stt-1b-en_fr", served, bytes_per_s=5e7) as url:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        stt = load_stt(None, dtype=mx.float32)  # the default repo
    assert stt.config.extra_heads == 4 and (stt.folder / MIMI_FILE).is_file()
    assert not (stt.folder / "model.q8.safetensors").exists()  # only the files it needs


def test_unreachable_hub_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable_hub(monkeypatch, tmp_path)
    with pytest.raises(CheckpointError) as error:
        load_stt("kyutai/stt-1b-en_fr", flag="--stt-model")
    assert "--stt-model" in one_sentence(error.value)


def test_config_dataclass_reads_the_real_keys() -> None:
    cfg = SttConfig.from_dict(
        {"dim": 64, "num_heads": 4, "num_layers": 1, "n_q": 8, "delays": [0] * 9, "context": 10}
    )
    assert cfg.n_streams == 9 and cfg.transformer.context == 10


def test_model_stt_is_pure_computation() -> None:
    from tests.import_probe import modules_loaded_by

    mods = modules_loaded_by("import model.stt")
    for banned in ("textual", "sounddevice", "personaplex_tui", "torch"):
        assert banned not in mods, f"importing model.stt loaded {banned}"


def test_the_config_is_handed_out_before_the_weights_are_read(copy) -> None:
    """`load_stt(on_config=...)` gets the configuration before the weights load (the app starts
    compiling the STT's kernels there), and the app's loader starts them from it."""
    from unittest import mock

    from model.stt import loader
    from personaplex_tui import kernels_ahead, stt_loader
    from personaplex_tui.user_transcript import SttChoice

    folder = copy()
    events: list[object] = []
    read_weights = loader.lm_from_file

    def lm_from_file(*args: object, **kwargs: object) -> object:
        events.append("weights")
        return read_weights(*args, **kwargs)

    with mock.patch.object(loader, "lm_from_file", lm_from_file):
        stt = load_stt(folder, dtype=mx.float32, on_config=events.append)
    assert events == [stt.config, "weights"]

    started: list[tuple] = []
    with (
        mock.patch.object(stt_loader, "stt_bits", return_value=8),
        mock.patch.object(kernels_ahead, "compile_stt_ahead", lambda *a: started.append(a)),
    ):

        class Persona:
            mimi = SimpleNamespace(cfg=MimiConfig())

            def listen(self, stt: object, source: str | None = None) -> None:
                self.stt = stt

        persona = Persona()
        assert stt_loader.attach_stt(persona, SttChoice(True, str(folder), None), print)
    assert len(started) == 1
    assert started[0][0] == persona.stt.config.transformer and started[0][2] == 8
    # and the listener's quantizer: PersonaPlex's Mimi, the STT's codebooks
    assert started[0][4] is Persona.mimi.cfg and started[0][5] == persona.stt.config.n_q
