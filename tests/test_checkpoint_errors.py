"""Every bad checkpoint ends in one clear sentence (CheckpointError / ModelNotFoundError)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from model.checkpoints.hub import resolve_model
from model.checkpoints.layout import ORIGINAL
from model.checkpoints.load import load_lm
from model.checkpoints.random_weights import random_weights
from model.checkpoints.safetensors_io import read_header
from model.checkpoints.write import layout_tensors, write_checkpoint
from model.errors import CheckpointError, ModelNotFoundError
from tests.import_probe import modules_loaded_by
from tests.lm_helpers import small_config

CONFIG = small_config(d_model=64, num_layers=1, dep_layers=1)


@pytest.fixture
def folder(tmp_path) -> Path:
    """A valid converted checkpoint (float16) of a small model."""
    return write_checkpoint(tmp_path, CONFIG, layout_tensors(random_weights(CONFIG), CONFIG))


def rewrite(path: Path, change) -> None:
    arrays = dict(mx.load(str(path)))
    change(arrays)
    mx.save_safetensors(str(path), arrays)


def load_error(folder: Path, error=CheckpointError, **kwargs) -> str:
    with pytest.raises(error) as info:
        load_lm(folder, dtype=mx.float32, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_valid_checkpoint_loads(folder):
    lm, config = load_lm(folder, dtype=mx.float32)
    assert config.lm == CONFIG.lm and config.quantization is None
    assert lm.text_linear.weight.dtype == mx.float32


def test_missing_file(folder):
    (folder / "depformer.safetensors").unlink()
    message = load_error(folder)
    assert message == (
        f"{folder} is an incomplete PersonaPlex checkpoint: it lacks depformer.safetensors, "
        "which the converted MLX layout needs next to config.json."
    )


def test_missing_files_are_all_named_and_no_download_is_asked(folder):
    """A local folder is not fixed by downloading again (an incomplete hub cache is said by
    `resolve_model`): the sentence names every LM file it lacks."""
    (folder / "temporal.safetensors").unlink()
    (folder / "embeddings.safetensors").unlink()
    message = load_error(folder)
    assert message == (
        f"{folder} is an incomplete PersonaPlex checkpoint: it lacks temporal.safetensors and "
        "embeddings.safetensors, which the converted MLX layout needs next to config.json."
    )
    assert "download" not in message


def test_config_json_without_weights(folder):
    for name in ("temporal", "depformer", "embeddings"):
        (folder / f"{name}.safetensors").unlink()
    message = load_error(folder)
    assert message.startswith(
        f"{folder} is not a PersonaPlex checkpoint: it has config.json but no weights (neither "
        "temporal.safetensors, depformer.safetensors and embeddings.safetensors"
    )


def test_missing_key(folder):
    rewrite(folder / "embeddings.safetensors", lambda a: a.pop("linears.3.weight"))
    message = load_error(folder)
    assert "has no tensor 'linears.3.weight'" in message
    assert "expected float16 or bfloat16 or float32 [64, 32]" in message


def test_unexpected_key(folder):
    rewrite(folder / "temporal.safetensors", lambda a: a.update(extra=mx.zeros((2, 3))))
    message = load_error(folder)
    assert "temporal.safetensors has an unexpected tensor 'extra' (float32 [2, 3])" in message


def test_wrong_shape(folder):
    rewrite(
        folder / "temporal.safetensors", lambda a: a.update({"out_norm.alpha": mx.ones((1, 1, 32))})
    )
    message = load_error(folder)
    assert "Tensor 'out_norm.alpha'" in message
    assert "has shape [1, 1, 32], expected [1, 1, 64]" in message


def test_wrong_dtype(folder):
    key = "layers.0.norm1.alpha"
    rewrite(
        folder / "temporal.safetensors",
        lambda a: a.update({key: mx.ones((1, 1, 64), dtype=mx.int32)}),
    )
    message = load_error(folder)
    assert f"Tensor '{key}'" in message and "is int32, expected float16" in message


def test_truncated_file(folder):
    path = folder / "embeddings.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    message = load_error(folder)
    assert f"{path} is truncated" in message and "download the model again" in message


def test_header_cut_short(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes((1000).to_bytes(8, "little") + b'{"a": ')
    with pytest.raises(CheckpointError, match="is truncated: its header alone needs 1008 bytes"):
        read_header(path)


def test_not_safetensors(folder):
    (folder / "depformer.safetensors").write_bytes(b"<html>rate limited</html>")
    message = load_error(folder)
    assert "depformer.safetensors is not a safetensors file" in message


def test_folder_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    message = load_error(tmp_path)
    assert f"{tmp_path} is not a PersonaPlex checkpoint" in message


def test_config_of_another_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    message = load_error(tmp_path)
    assert "is not a PersonaPlex checkpoint: its config.json has no 'temporal' section" in message


def test_invalid_config_json(folder):
    (folder / "config.json").write_text("{ not json")
    assert "config.json is not valid JSON" in load_error(folder)


def test_config_and_weights_disagree(folder):
    data = json.loads((folder / "config.json").read_text())
    data["temporal"]["num_layers"] = 2
    (folder / "config.json").write_text(json.dumps(data))
    assert "has no tensor 'layers.1.self_attn.in_proj_weight'" in load_error(folder)


def test_requantizing_a_quantized_checkpoint(tmp_path):
    config = small_config(d_model=256, bits=4, dep_dim=64, dep_dim_feedforward=192)
    write_checkpoint(tmp_path, config, layout_tensors(random_weights(config), config))
    message = load_error(tmp_path, quantize=8)
    assert "already quantized to 4 bits" in message


def test_quantizing_sizes_that_do_not_fit_the_group_size(folder):
    message = load_error(folder, quantize=4)
    assert "cannot be quantized with group size 64" in message


def test_original_layout_with_moshi_state_dict_names(tmp_path):
    tensors = layout_tensors(random_weights(CONFIG), CONFIG, ORIGINAL)
    model = tensors["model.safetensors"]
    model["transformer.layers.0.self_attn.in_projs.0.weight"] = model.pop(
        "transformer.layers.0.self_attn.in_proj_weight"
    )
    write_checkpoint(tmp_path, CONFIG, tensors)
    message = load_error(tmp_path)
    assert "has no tensor 'transformer.layers.0.self_attn.in_proj_weight'" in message


def test_missing_folder(tmp_path):
    """The library says what to give, not which flag (it has none); an app names its own."""
    message = load_error(tmp_path / "nowhere", ModelNotFoundError)
    assert "No model folder at" in message and "give a local checkpoint folder" in message
    assert "--" not in message
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(tmp_path / "nowhere", flag="--model")
    assert "pass --model PATH with a local checkpoint folder" in str(info.value)


def test_hub_unreachable(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("someone/some-model", cache_dir=tmp_path, endpoint="http://127.0.0.1:9")
    message = str(info.value)
    assert "Could not download someone/some-model" in message
    assert "give a local checkpoint folder" in message and "HF_HUB_OFFLINE" in message


def _resolve_in_subprocess(spec: str, hf_home: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        "from model.checkpoints.hub import resolve_model\n"
        "from model.errors import ModelNotFoundError\n"
        "try:\n"
        f"    print(resolve_model({spec!r}))\n"
        "except ModelNotFoundError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(hf_home))
    env.pop("HF_HUB_CACHE", None)
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True
    )


def test_offline_without_cache(tmp_path):
    result = _resolve_in_subprocess("aufklarer/PersonaPlex-7B-MLX-4bit", tmp_path)
    assert result.returncode == 3, result.stderr
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in result.stdout
    assert "give a local checkpoint folder" in result.stdout


def test_offline_uses_the_cache(tmp_path):
    repo = tmp_path / "hub" / "models--someone--cached-model"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    result = _resolve_in_subprocess("someone/cached-model", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert Path(result.stdout.strip()) == snapshot


def test_loader_imports_stay_light():
    loaded = modules_loaded_by(
        "import model.checkpoints.load, model.conversation.session, model.checkpoints.random_weights"
    )
    # the hub client is imported only to download
    assert loaded & {"torch", "huggingface_hub", "textual"} == set()


def test_the_quantization_a_load_gives_is_known_from_config_json_alone(tmp_path, folder):
    from model.checkpoints.load import loaded_quantization

    config = small_config(d_model=256, bits=4, dep_dim=64, dep_dim_feedforward=192)
    quantized = tmp_path / "quantized"
    write_checkpoint(quantized, config, layout_tensors(random_weights(config), config))
    for name in list(quantized.iterdir()):
        if name.name != "config.json":
            name.unlink()
    q = loaded_quantization(quantized)
    assert (q.bits, q.group_size) == (4, config.quantization.group_size)
    with pytest.raises(CheckpointError, match="already quantized to 4 bits"):
        loaded_quantization(quantized, 8)
    assert loaded_quantization(folder) is None  # float weights, as stored
    q = loaded_quantization(folder, 8)
    assert (q.bits, q.group_size) == (8, 64)


def test_an_stt_folder_is_named_as_such(tmp_path):
    """Kyutai's STT (model_type "stt", its own Moshi layout) given as PersonaPlex is called what
    it is, not reported by one of its config fields (its dep_q of 0)."""
    import model
    from tests.stt_reference import write_tiny_stt_repo

    folder = write_tiny_stt_repo(tmp_path / "stt", seed=1)
    with pytest.raises(CheckpointError) as info:
        model.load(folder)
    message = str(info.value)
    assert "speech-to-text model (Kyutai STT), not a PersonaPlex checkpoint" in message
    assert "dep_q" not in message and "\n" not in message


def _download_failing_with(monkeypatch, error: BaseException) -> str:
    import huggingface_hub

    def snapshot_download(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("me/small", flag="--model")
    return str(info.value)


def test_a_connection_lost_mid_download_is_one_sentence(monkeypatch):
    """The hub's client raises its own errors after its retries (the connection refused or cut
    mid-file, a read that times out): they went up as a traceback, and killed a run whose
    optional STT download failed."""
    import httpx2

    for error in (
        httpx2.ConnectError("[Errno 111] Connection refused"),
        httpx2.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx2.ReadTimeout("The read operation timed out"),
    ):
        message = _download_failing_with(monkeypatch, error)
        assert message.startswith("The connection to Hugging Face failed while downloading me/sm")
        assert type(error).__name__ in message and "run again to resume" in message
        assert "pass --model PATH with a local checkpoint folder" in message


def test_a_full_disk_during_a_download_says_so(monkeypatch):
    """It was "failed (OSError); retry"."""
    import errno

    message = _download_failing_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    assert message.startswith("The disk is full: downloading me/small into the Hugging Face cache")
    assert "(No space left on device); free some space (or set HF_HOME" in message


def test_repo_ids_the_hub_refuses_are_no_model_folder():
    """`me/-x`, `me/a--b`, `me/x.` passed our pattern, and the hub's validation error was a
    traceback."""
    for spec in ("me/-x", "me/a--b", "me/x.", "me/small.."):
        with pytest.raises(ModelNotFoundError) as info:
            resolve_model(spec, flag="--model")
        assert str(info.value).startswith(f"No model folder at {spec}; pass --model PATH")


def test_a_hub_that_never_answers_falls_back_to_the_cache_or_says_why(
    small_checkpoint, tmp_path, monkeypatch
):
    """A network that takes the connection and never answers (a captive portal) hung the start
    forever, a cached model's too: the hub's client had no timeout for the repo's info."""
    import socket
    import threading
    import time

    import huggingface_hub

    from model.checkpoints import hub
    from tests.fake_hub import fake_hub

    monkeypatch.setattr(hub, "HUB_READ_TIMEOUT_S", 1.0, raising=False)
    monkeypatch.setattr(hub, "HUB_CONNECT_TIMEOUT_S", 1.0, raising=False)
    monkeypatch.setattr(hub, "_bounded", False, raising=False)
    huggingface_hub.close_session()  # (the next call makes its client with the timeouts)
    cache = tmp_path / "hub"
    with fake_hub("someone/small", small_checkpoint, bytes_per_s=1e9) as url:
        cached = resolve_model("someone/small", cache_dir=cache, endpoint=url)

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(iter(lambda: silent.accept()[0], None)),
                     daemon=True).start()  # fmt: skip
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    found: dict[str, object] = {}

    def start() -> None:  # (on a thread: the old code never returned)
        found["cached"] = resolve_model("someone/small", cache_dir=cache, endpoint=endpoint)
        try:
            resolve_model("someone/other", cache_dir=cache, endpoint=endpoint)
        except ModelNotFoundError as error:
            found["error"] = str(error)

    worker = threading.Thread(target=start, daemon=True)
    began = time.monotonic()
    worker.start()
    worker.join(timeout=30)
    took = time.monotonic() - began
    silent.close()
    huggingface_hub.close_session()
    assert not worker.is_alive(), "still waiting for the hub after 30 s"
    assert found["cached"] == cached and took < 30
    assert "Could not download someone/other" in str(found["error"])


def test_a_hub_answering_with_a_server_error_is_not_called_unreachable(monkeypatch):
    import httpx2
    from huggingface_hub import errors

    request = httpx2.Request("GET", "https://huggingface.co/api/models/me/small")
    down = errors.HfHubHTTPError("500 Server Error", response=httpx2.Response(500, request=request))
    try:
        raise errors.LocalEntryNotFoundError("no cached snapshot") from down
    except errors.LocalEntryNotFoundError as error:
        message = _download_failing_with(monkeypatch, error)
    assert message.startswith(
        "Could not download me/small (the Hugging Face hub answered with an error, HTTP 500) and"
    )


def test_an_incomplete_cache_with_hf_hub_offline_says_to_unset_it(monkeypatch):
    from huggingface_hub import constants, errors

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = _download_failing_with(
        monkeypatch, errors.IncompleteSnapshotError("incomplete", snapshot_path="/cache/x")
    )
    assert "is incomplete and HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE" in message
