"""Fuzzing, bounded in time: the audio-file reader and the config loaders take anything and either
work or fail with their one-sentence error — never another exception.

By default the examples are derandomized (the suite stays deterministic) and each test runs in
a few seconds; `PPX_FUZZ=1` draws fresh random examples, ten times as many.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.checkpoints.config_io import read_config
from model.checkpoints.layout import CONVERTED, ORIGINAL, expected_layout
from model.checkpoints.load import load_lm
from model.config import PersonaPlexConfig
from model.errors import CheckpointError
from personaplex_tui.audio import AudioFileError, read_audio
from tests.checkpoints import small_config
from tests.lm_helpers import moshi_kwargs
from tests.lm_helpers import small_config as sized_config

EXTENDED = bool(os.environ.get("PPX_FUZZ"))
FUZZ = settings(
    max_examples=2000 if EXTENDED else 200,
    derandomize=not EXTENDED,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def one_sentence(message: str) -> None:
    assert message and "\n" not in message and message.endswith("."), repr(message)


# -- audio files ------------------------------------------------------------------------------
def _bases() -> dict[str, bytes]:
    """Small valid files of the kinds users have: WAV (16-bit, float, stereo), FLAC."""
    out = {}
    tone = 0.3 * np.sin(np.arange(2400) / 5.0)
    with tempfile.TemporaryDirectory() as d:
        for name, data, rate, subtype in [
            ("pcm16.wav", tone, 24000, "PCM_16"),
            ("float.wav", tone, 44100, "FLOAT"),
            ("stereo.wav", np.stack([tone, -tone], 1), 16000, "PCM_24"),
            ("mono.flac", tone, 48000, "PCM_16"),
        ]:
            path = Path(d) / name
            sf.write(path, data, rate, subtype=subtype)
            out[name] = path.read_bytes()
    return out


BASES = _bases()

mutation = st.tuples(st.integers(0, 300), st.integers(0, 255))  # (offset, new byte)
mutated_file = st.tuples(
    st.sampled_from(sorted(BASES)),
    st.lists(mutation, max_size=8),  # bytes changed, mostly in the headers
    st.one_of(st.none(), st.integers(0, 6000)),  # cut the file here
    st.binary(max_size=64),  # garbage appended
)


def _read(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"input{suffix}"
        path.write_bytes(data)
        try:
            clip = read_audio(path)
        except AudioFileError as e:
            one_sentence(str(e))
            return
    assert clip.pcm.ndim == 1 and clip.pcm.dtype == np.float32 and clip.pcm.size > 0
    assert np.isfinite(clip.pcm).all()


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".mp3", ""]))
def test_random_bytes_are_audio_or_one_sentence(data, suffix):
    _read(data, suffix)


@FUZZ
@given(case=mutated_file)
def test_mutated_wav_and_flac_are_audio_or_one_sentence(case):
    name, changes, cut, tail = case
    data = bytearray(BASES[name])
    for offset, value in changes:
        data[offset % len(data)] = value
    data = bytes(data[:cut] if cut is not None else data) + tail
    _read(data, Path(name).suffix)


# -- configs ----------------------------------------------------------------------------------
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2, 3, 7, 8, 16, 64, 2**31, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)


def _valid_converted() -> dict:
    return json.loads(json.dumps(small_config(context=50).to_dict()))


def _valid_quantized() -> dict:
    """A 4-bit config whose sizes fit the group size; mutated sizes often do not."""
    config = sized_config(context=50, d_model=256, dep_dim=64, dep_dim_feedforward=192, bits=4)
    return json.loads(json.dumps(config.to_dict()))


def _valid_moshi() -> dict:
    kwargs = moshi_kwargs(small_config(context=50))
    return json.loads(json.dumps({k: v for k, v in kwargs.items() if _plain(v)}))


def _plain(value) -> bool:
    return isinstance(value, (int, float, str, bool, list)) or value is None


def _keys(config: dict) -> list[tuple[str, ...]]:
    paths = []
    for key, value in config.items():
        paths.append((key,))
        if isinstance(value, dict):
            paths += [(key, sub) for sub in value]
    return paths


edit = st.tuples(st.integers(0, 10**6), st.one_of(st.just("delete"), json_value))


def _mutate(config: dict, edits: list) -> dict:
    """Replace (or delete) the values at some keys of a valid config."""
    paths = _keys(config)
    for index, value in edits:
        path = paths[index % len(paths)]
        holder = config
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder.get(key), dict) else None
            if holder is None:
                break
        if holder is None:
            continue
        if value == "delete":
            holder.pop(path[-1], None)
        else:
            holder[path[-1]] = value
    return config


def _load(folder: Path, layout: str) -> None:
    try:
        config = read_config(folder, layout)
    except CheckpointError as e:
        one_sentence(str(e))
        return
    assert isinstance(config, PersonaPlexConfig)
    lm = config.lm
    assert lm.temporal.d_model % lm.temporal.num_heads == 0
    assert lm.temporal.context >= 1 and math.isfinite(lm.temporal.max_period)
    try:
        expected_layout(config, layout)
        inconsistent = None
    except ValueError as error:
        inconsistent = str(error)
    with pytest.raises(CheckpointError) as info:  # no weights beside the config: always an error
        load_lm(folder)
    one_sentence(str(info.value))
    if inconsistent is not None:
        assert str(info.value) == f"{folder / 'config.json'} is inconsistent: {inconsistent}."


def _write_and_load(config: object, layout: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        (folder / "config.json").write_text(json.dumps(config))
        if layout == ORIGINAL:
            (folder / "model.safetensors").write_bytes(b"")
        _load(folder, layout)


@FUZZ
@given(data=json_value)
def test_any_json_is_a_config_or_one_sentence(data):
    for layout in (CONVERTED, ORIGINAL):
        _write_and_load(data, layout)
    try:
        PersonaPlexConfig.from_dict(data)
    except CheckpointError as e:
        one_sentence(str(e))


@FUZZ
@given(edits=st.lists(edit, min_size=1, max_size=4))
def test_a_mutated_converted_config_loads_or_names_the_key(edits):
    _write_and_load(_mutate(_valid_converted(), edits), CONVERTED)


@FUZZ
@given(edits=st.lists(edit, min_size=1, max_size=4))
def test_a_mutated_quantized_config_loads_or_names_the_key(edits):
    _write_and_load(_mutate(_valid_quantized(), edits), CONVERTED)


@FUZZ
@given(edits=st.lists(edit, min_size=1, max_size=4))
def test_a_mutated_moshi_config_loads_or_names_the_key(edits):
    _write_and_load(_mutate(_valid_moshi(), edits), ORIGINAL)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("temporal", "num_heads", 0), "'temporal.num_heads' must be a whole number from 1 to 65536, not 0."),
        (("temporal", "num_heads", 3), "'temporal.dim' must be a multiple of num_heads giving an even head size (3), not 64."),
        (("temporal", "context", float("inf")), "'temporal.context' must be a whole number from 1 to 100000, not inf."),
        (("temporal", "dim", "64"), "'temporal.dim' must be a whole number from 1 to 65536, not '64'."),
        (("temporal", "num_layers", 10**9), "'temporal.num_layers' must be a whole number from 1 to 1000, not 1000000000."),
        (("depformer", "num_layers", 1001), "'depformer.num_layers' must be a whole number from 1 to 1000, not 1001."),
        (("mimi", "num_layers", 10**12), "'mimi.num_layers' must be a whole number from 1 to 1000, not 1000000000000."),
        (("depformer", "num_steps", 17), "'depformer.num_steps' must be a whole number from 8 to 16, not 17."),
        (("mimi", "ratios", []), "'mimi.ratios' must be a non-empty list of whole numbers, not []."),
        (("mimi", "n_q", 4), "'mimi.n_q' must be at least the 8 codebooks a speaker uses, not 4."),
        (("sampling", "text_temp", -1), "'sampling.text_temp' must be a number of at least 0.0, not -1.0."),
        (("quantization", "bits", 7), "'quantization.bits' must be one of 2, 3, 4, 5, 6, 8, not 7."),
        ((None, "delays", [0, 1]), "'delays' must be one delay for the text and two equal sets for the audio, not [0, 1]."),
        ((None, "temporal", [1, 2]), "'temporal' must be a JSON object, not [1, 2]."),
        ((None, "voices", "NATF2"), "'voices' must be a list of names, not 'NATF2'."),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(tmp_path, change, message):
    section, key, value = change
    config = _valid_converted()
    config.setdefault("quantization", {"bits": 4, "group_size": 64})
    (config[section] if section else config)[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        read_config(tmp_path, CONVERTED)
    assert str(info.value) == f"{tmp_path / 'config.json'} is invalid: {message}"


@pytest.mark.parametrize("key", ["num_layers", "depformer_num_layers"])
def test_a_moshi_config_of_a_billion_layers_is_one_sentence(tmp_path, key):
    """Sizes are bounded as they are read: a layout of a billion layers was built (and filled
    memory for minutes) before the missing weights were noticed."""
    config = _valid_moshi()
    config[key] = 10**9
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        read_config(tmp_path, ORIGINAL)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'} is invalid: "
        f"'{key}' must be a whole number from 1 to 1000, not 1000000000."
    )


def test_sizes_the_group_size_does_not_divide_are_one_sentence(tmp_path):
    config = _valid_quantized()
    config["temporal"]["dim_feedforward"] = 100
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        load_lm(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'config.json'} is inconsistent: "
        "an input size of 100 cannot be quantized with group size 64."
    )
