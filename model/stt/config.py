"""The STT model's configuration, read from a Kyutai STT repository's config.json (moshi's schema).

Kyutai's STT repositories (`kyutai/stt-1b-en_fr`, `kyutai/stt-1b-en_fr-candle`) keep the LM kwargs
of the PyPI `moshi` package's `LMModel` at the top level of config.json (`dim`, `num_heads`,
`num_layers`, `hidden_scale`, `context`, `max_period`, `n_q`, `dep_q`, `card`, `text_card`,
`delays`, `existing_text_padding_id`, `extra_heads_num_heads`, `extra_heads_dim`, ...), next to
what `moshi.models.loaders.CheckpointInfo` pops off (`moshi_name`, `mimi_name`, `tokenizer_name`,
`mimi_config_name`, `model_type`, `lm_gen_config`, `stt_config`). Values absent from a file take
stt-1b-en_fr's. The extra heads and the feed-forward size are also implied by the weights, which
`model.stt.loader` checks against what is read here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from model.config import MAX_CONTEXT, MAX_LAYERS, TransformerConfig
from model.config_check import Section

MOSHI_NAME = "model.safetensors"
MIMI_NAME = "mimi-pytorch-e351c8d8@125.safetensors"
TOKENIZER_NAME = "tokenizer_en_fr_audio_8000.model"
FRAME_RATE = 12.5
# The text's delay and the silence fed before a file, at most (Kyutai's models: 0.5 s and 2.5 s
# of delay): every file is followed by the delay's silent frames, so a config of 1e9 seconds
# had `transcribe` run on for years.
MAX_STT_SECONDS = 60.0
# moshi's RMSNorm epsilon by norm name (`moshi.modules.transformer.create_norm_fn`).
_NORM_EPS = {"rms_norm_f32": 1e-8, "rms_norm": 1e-5}


def moshi_hidden(dim: int, hidden_scale: float) -> int:
    """Hidden size of moshi's gated FFN for `hidden_scale` (`LMModel` and `ActivationGating`)."""
    feedforward = int(hidden_scale * dim)
    return (21 * dim) // 8 if feedforward == 4 * dim else (2 * feedforward) // 3


@dataclass
class SttConfig:
    """A delayed-streams STT model: n_q Mimi codebooks in, one text token out per frame."""

    transformer: TransformerConfig
    n_q: int = 32  # Mimi codebooks fed in per frame
    card: int = 2048  # audio codes; the embedding tables have card + 1 rows (initial token)
    text_card: int = 8000  # text ids out; the text embedding has text_card + 1 rows
    text_pad_id: int = 3
    text_epad_id: int = 0
    extra_heads: int = 0  # end-of-turn heads (4 in stt-1b-en_fr-candle, none in stt-1b-en_fr)
    extra_heads_dim: int = 6
    audio_delay_seconds: float = 0.5  # how far the text trails the audio
    audio_silence_prefix_seconds: float = 0.0
    hidden_scale_given: bool = False  # config.json states the feed-forward size
    moshi_name: str = MOSHI_NAME
    mimi_name: str = MIMI_NAME
    tokenizer_name: str = TOKENIZER_NAME
    mimi_config_name: str | None = None  # a moshi `mimi_config` JSON file (tiny test models)

    @property
    def n_streams(self) -> int:
        """Text plus audio streams (33)."""
        return 1 + self.n_q

    @property
    def text_initial(self) -> int:
        return self.text_card

    @property
    def audio_initial(self) -> int:
        return self.card

    @property
    def delay_frames(self) -> int:
        """Whole frames the text trails the audio (6 for 0.5 s at 12.5 Hz, as Kyutai's server)."""
        return int(self.audio_delay_seconds * FRAME_RATE)

    @property
    def flush_frames(self) -> int:
        """Silent frames that flush the last words out at the end of a file (7 for 0.5 s, as
        Kyutai's scripts: the delay rounded up)."""
        return math.ceil(self.audio_delay_seconds * FRAME_RATE)

    @classmethod
    def from_dict(cls, data: Any) -> SttConfig:
        """Build from config.json's object; a bad or unsupported value raises CheckpointError."""
        top = Section.top(data)
        dim = top.integer("dim", 2048)
        heads = top.integer("num_heads", 16)
        if dim % heads or (dim // heads) % 2:
            raise top.fail(
                "dim", f"a multiple of num_heads ({heads}) giving an even head size", dim
            )
        given = top.has("hidden_scale")
        hidden = moshi_hidden(dim, top.number("hidden_scale", 4.125, positive=True))
        if hidden < 1:
            raise top.fail("hidden_scale", "large enough for a hidden size of at least 1", hidden)
        norm = top.data.get("norm", "rms_norm_f32")
        if norm not in _NORM_EPS:
            raise top.fail("norm", "rms_norm_f32 or rms_norm", norm)
        _require(top, "gating", "silu")
        _require(top, "positional_embedding", "rope")
        for key in ("layer_scale", "conditioners", "fuser"):
            if top.has(key):
                raise top.fail(key, "absent or null for an STT model", top.data[key])
        if top.data.get("causal", True) is not True:
            raise top.fail("causal", "true", top.data["causal"])
        transformer = TransformerConfig(
            d_model=dim,
            num_heads=heads,
            num_layers=top.integer("num_layers", 16, high=MAX_LAYERS),
            dim_feedforward=hidden,
            context=top.integer("context", 750, high=MAX_CONTEXT),
            max_period=top.number("max_period", 100000.0, positive=True),
            norm_eps=_NORM_EPS[norm],
        )
        n_q = top.integer("n_q", 32, high=64)
        top.integer("dep_q", 0, low=0, high=0)  # no depformer: the model only reads audio
        delays = top.integers("delays", (0,) * (n_q + 1), low=0, high=0)
        if len(delays) != n_q + 1:
            raise top.fail("delays", f"{n_q + 1} zeros (text and {n_q} codebooks)", list(delays))
        stt = top.section("stt_config")
        return cls(
            transformer=transformer,
            n_q=n_q,
            card=top.integer("card", 2048),
            text_card=top.integer("text_card", 8000),
            text_pad_id=top.integer("existing_text_padding_id", 3, low=0),
            text_epad_id=top.integer("existing_text_end_padding_id", 0, low=0),
            extra_heads=top.integer("extra_heads_num_heads", 0, low=0, high=64),
            extra_heads_dim=top.integer("extra_heads_dim", 6),
            audio_delay_seconds=stt.number("audio_delay_seconds", 0.5, high=MAX_STT_SECONDS),
            audio_silence_prefix_seconds=stt.number(
                "audio_silence_prefix_seconds", 0.0, high=MAX_STT_SECONDS
            ),
            hidden_scale_given=given,
            moshi_name=_file_name(top, "moshi_name", MOSHI_NAME),
            mimi_name=_file_name(top, "mimi_name", MIMI_NAME),
            tokenizer_name=_file_name(top, "tokenizer_name", TOKENIZER_NAME),
            mimi_config_name=_file_name(top, "mimi_config_name", None),
        )


def _require(top: Section, key: str, value: str) -> None:
    if top.has(key) and top.data[key] != value:
        raise top.fail(key, value, top.data[key])


def _file_name(top: Section, key: str, default: str | None) -> str | None:
    value = top.data.get(key, default)
    if value is None:
        return None
    bad = not isinstance(value, str) or not value or "/" in value or "\\" in value or ".." in value
    if bad:
        raise top.fail(key, "a file name in the model folder", value)
    return value


def stt_1b_en_fr() -> SttConfig:
    """kyutai/stt-1b-en_fr as published (its -candle twin adds 4 extra heads of 6 classes)."""
    return SttConfig.from_dict({})
