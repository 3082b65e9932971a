"""Configuration dataclasses for PersonaPlex: the LM, the depformer, Mimi, sampling, quantization.

`PersonaPlexConfig.from_dict` reads a converted checkpoint's `config.json`
(docs/checkpoint-layouts.md §config.json), ignoring keys it does not know; `config_7b()` is the
published model and `tiny()` a small model of the same structure for tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from model.checks import sampling_values
from model.config_check import Section
from model.errors import SettingValueError

DELAYS_7B: tuple[int, ...] = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)


@dataclass
class TransformerConfig:
    """One transformer stack (the temporal one or the depformer)."""

    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: int  # hidden size of the gated FFN: linear_in is d_model -> 2*dim_feedforward
    context: int  # KV window in positions (3000 frames for the temporal transformer)
    max_period: float = 10000.0
    norm_eps: float = 1e-8

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model {self.d_model} is not a multiple of num_heads {self.num_heads}"
            )


def gated_hidden(dim: int, hidden_scale: float) -> int:
    """Hidden size of Moshi's gated SiLU FFN: int(2/3 * hidden_scale * dim) (11264 for 4096)."""
    return int(2 * hidden_scale * dim / 3)


@dataclass
class LMConfig:
    """The PersonaPlex language model: temporal transformer, depformer, embeddings, heads."""

    temporal: TransformerConfig
    depformer: TransformerConfig
    text_card: int = 32000
    card: int = 2048
    dep_q: int = 16  # depformer steps (8 agent + 8 user codebooks)
    delays: tuple[int, ...] = DELAYS_7B
    text_pad_id: int = 3
    text_epad_id: int = 0

    def __post_init__(self) -> None:
        self.delays = tuple(int(d) for d in self.delays)
        if len(self.delays) != 1 + self.n_audio:
            raise ValueError("delays must have one entry per stream (text + audio)")
        if self.dep_q > self.n_audio:
            raise ValueError(f"dep_q {self.dep_q} exceeds the {self.n_audio} audio streams")

    @property
    def n_audio(self) -> int:
        """Audio streams (agent + user codebooks); 16 for the 7B model."""
        return len(self.delays) - 1

    @property
    def n_streams(self) -> int:
        return len(self.delays)

    @property
    def n_q_agent(self) -> int:
        """Codebooks per speaker (8)."""
        return self.n_audio // 2

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def text_initial(self) -> int:
        """Initial text token (the extra input row): 32000."""
        return self.text_card

    @property
    def audio_initial(self) -> int:
        """Initial audio token (the extra input row): 2048."""
        return self.card


@dataclass
class MimiConfig:
    """Kyutai's Mimi codec; defaults are the published model (docs/driving-personaplex.md
    §Architecture)."""

    sample_rate: int = 24000
    frame_rate: float = 12.5
    channels: int = 1
    # SEANet
    dimension: int = 512
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    n_residual_layers: int = 1
    # transformer
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    context: int = 250
    layer_scale: float = 0.01
    max_period: float = 10000.0
    # quantizer
    n_q: int = 32  # codebooks stored in the checkpoint
    num_codebooks: int = 8  # codebooks in use (PersonaPlex: 8)
    codebook_size: int = 2048
    codebook_dim: int = 256

    def __post_init__(self) -> None:
        self.ratios = tuple(int(r) for r in self.ratios)

    @property
    def hop_length(self) -> int:
        """Samples per encoder step before the final downsampling (960 at 25 Hz)."""
        out = 1
        for r in self.ratios:
            out *= r
        return out

    @property
    def frame_size(self) -> int:
        """Samples per codec frame (1920 = 80 ms at 24 kHz)."""
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def steps_per_frame(self) -> int:
        """Encoder/transformer steps per codec frame (2: 25 Hz inside, 12.5 Hz codes)."""
        return self.frame_size // self.hop_length


# Samples in one 80 ms frame at 24 kHz, the published Mimi's (and mimi_tiny's): what a session
# steps on. The app's audio code, which may not import `model`, states it once more in
# personaplex_tui/audio/frames.py; tests/test_audio_format.py checks that the two agree.
FRAME_SAMPLES: int = MimiConfig().frame_size


def mimi_tiny() -> MimiConfig:
    """A small Mimi of the published structure (same 1920-sample frame, 2048-entry codebooks)."""
    return MimiConfig(
        dimension=32,
        n_filters=4,
        num_heads=4,
        num_layers=2,
        dim_feedforward=64,
        context=7,  # odd and short: the streaming ring wraps within a second of audio
        n_q=10,
        codebook_dim=16,
    )


@dataclass(frozen=True)
class SamplingConfig:
    """Temperature and top-k of the agent's audio and text; temperature 0 means argmax, top-k 0
    no cut. Checked when made (`SettingValueError`: a finite temperature >= 0, a whole top-k).

    The defaults are the reference's, written here only: a checkpoint's config.json may change
    them, and a session's settings (`model.conversation.session_settings`) hold one of these."""

    audio_temperature: float = 0.8
    audio_top_k: int = 250
    text_temperature: float = 0.7
    text_top_k: int = 25

    def __post_init__(self) -> None:
        sampling_values(self.audio_temperature, self.audio_top_k, "audio")
        sampling_values(self.text_temperature, self.text_top_k, "text")


@dataclass
class QuantizationConfig:
    """MLX affine quantization of the converted checkpoint's projections."""

    bits: int = 4
    group_size: int = 64
    quantized_components: tuple[str, ...] = ("temporal", "depformer")

    def __post_init__(self) -> None:
        self.quantized_components = tuple(self.quantized_components)
        if isinstance(self.bits, bool) or self.bits not in (2, 3, 4, 5, 6, 8):
            raise SettingValueError(  # (a ValueError too)
                f"Quantization takes 2, 3, 4, 5, 6 or 8 bits, not {self.bits!r}."
            )


@dataclass
class PersonaPlexConfig:
    """Everything a checkpoint's config.json describes."""

    lm: LMConfig
    mimi: MimiConfig = field(default_factory=MimiConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    quantization: QuantizationConfig | None = None
    voices: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonaPlexConfig:
        """Build from a converted checkpoint's config.json (unknown keys are ignored).

        Every value is checked: a missing section or key takes the 7B's value, a bad one raises
        CheckpointError with one sentence naming the key (`model.config_check`)."""
        top = Section.top(data)
        t, d = top.section("temporal"), top.section("depformer")
        base = config_7b()
        temporal = _transformer(t, base.lm.temporal, rope=True)
        depformer = _transformer(d, base.lm.depformer, rope=False)
        delays = top.integers("delays", DELAYS_7B, low=0, high=MAX_DELAY)
        if len(delays) < 3 or len(delays) % 2 == 0:
            raise top.fail(
                "delays", "one delay for the text and two equal sets for the audio", list(delays)
            )
        n_audio = len(delays) - 1
        lm = LMConfig(
            temporal=temporal,
            depformer=depformer,
            text_card=t.integer("text_card", d.integer("text_card", 32000)),
            card=t.integer("card", d.integer("card", 2048)),
            dep_q=d.integer("num_steps", n_audio, low=n_audio // 2, high=n_audio),
            delays=delays,
        )
        mimi = _mimi(top.section("mimi"), lm.n_q_agent)
        sampling = _sampling(top.section("sampling"))
        quant = _quantization(top) if top.data.get("quantization") else None
        voices = top.strings("voices", ())
        return cls(lm=lm, mimi=mimi, sampling=sampling, quantization=quant, voices=voices)

    def to_dict(self) -> dict[str, Any]:
        """The config.json form, in the converted checkpoint's schema."""
        t, d = self.lm.temporal, self.lm.depformer
        out: dict[str, Any] = {
            "model_type": "personaplex",
            "temporal": {
                "dim": t.d_model,
                "num_layers": t.num_layers,
                "num_heads": t.num_heads,
                "dim_feedforward": t.dim_feedforward,
                "n_q": self.lm.n_q_agent,
                "card": self.lm.card,
                "text_card": self.lm.text_card,
                "context": t.context,
                "max_period": t.max_period,
            },
            "depformer": {
                "dim": d.d_model,
                "num_layers": d.num_layers,
                "num_heads": d.num_heads,
                "dim_feedforward": d.dim_feedforward,
                "num_steps": self.lm.dep_q,
                "card": self.lm.card,
                "text_card": self.lm.text_card,
                "context": d.context,
                "weights_per_step": True,
                "multi_linear": True,
            },
            "mimi": {**asdict(self.mimi), "ratios": list(self.mimi.ratios)},
            "sampling": {
                "audio_temp": self.sampling.audio_temperature,
                "audio_top_k": self.sampling.audio_top_k,
                "text_temp": self.sampling.text_temperature,
                "text_top_k": self.sampling.text_top_k,
            },
            "delays": list(self.lm.delays),
            "voices": list(self.voices),
        }
        if self.quantization is not None:
            q = asdict(self.quantization)
            q["quantized_components"] = list(self.quantization.quantized_components)
            out["quantization"] = q
        return out


MAX_CONTEXT = 100_000  # KV positions a cache may hold (the 7B's temporal context is 3000)
MAX_DELAY = 16
# Sizes a config.json may give: far above any Moshi-family model (the 7B: 32 and 6 layers,
# width 4096), low enough that an absurd value is one sentence, not a layout of a billion
# layers built before the weights are read (tests/test_fuzz.py found that).
MAX_LAYERS = 1_000
MAX_WIDTH = 65_536
_MIMI_ALIASES = {
    "seanet_ratios": "ratios",
    "transformer_layers": "num_layers",
    "transformer_heads": "num_heads",
    "transformer_dim_feedforward": "dim_feedforward",
    "transformer_context": "context",
}


def _transformer(s: Section, base: TransformerConfig, *, rope: bool) -> TransformerConfig:
    dim = s.integer("dim", base.d_model, high=MAX_WIDTH)
    heads = s.integer("num_heads", base.num_heads, high=MAX_WIDTH)
    if dim % heads or (rope and (dim // heads) % 2):
        wanted = "a multiple of num_heads" + (" giving an even head size" if rope else "")
        raise s.fail("dim", f"{wanted} ({heads})", dim)
    if s.has("dim_feedforward"):
        hidden = s.integer("dim_feedforward", 0)
    else:
        hidden = gated_hidden(dim, s.number("hidden_scale", 4.125, positive=True))
        if hidden < 1:
            raise s.fail(
                "hidden_scale",
                "large enough for a hidden size of at least 1",
                s.data["hidden_scale"],
            )
    return TransformerConfig(
        d_model=dim,
        num_heads=heads,
        num_layers=s.integer("num_layers", base.num_layers, high=MAX_LAYERS),
        dim_feedforward=hidden,
        context=s.integer("context", base.context, high=MAX_CONTEXT),
        max_period=s.number("max_period", base.max_period, positive=True),
        norm_eps=s.number("norm_eps", base.norm_eps, positive=True),
    )


def _mimi(s: Section, codebooks: int) -> MimiConfig:
    s = Section({_MIMI_ALIASES.get(k, k): v for k, v in s.data.items()}, s.where)
    base = MimiConfig()
    values: dict[str, Any] = {}
    for f in fields(MimiConfig):
        default = getattr(base, f.name)
        if f.name == "num_codebooks":
            continue
        if f.name == "context":
            values[f.name] = s.integer(f.name, default, high=MAX_CONTEXT)
        elif isinstance(default, tuple):
            values[f.name] = s.integers(f.name, default)
        elif isinstance(default, int):
            high = MAX_LAYERS if "layers" in f.name else MAX_WIDTH
            values[f.name] = s.integer(f.name, default, high=high)
        elif f.name == "layer_scale":
            values[f.name] = s.number(f.name, default, low=None)
        else:
            values[f.name] = s.number(f.name, default, positive=True)
    # The converted config's `num_codebooks` counts the codebooks Moshi uses (16 = 8 per
    # speaker); PersonaPlex codes each speaker with the first 8 of Mimi's quantizer.
    mimi = MimiConfig(**values, num_codebooks=codebooks)
    if mimi.n_q < codebooks:
        raise s.fail("n_q", f"at least the {codebooks} codebooks a speaker uses", mimi.n_q)
    if mimi.dimension % mimi.num_heads:
        raise s.fail("dimension", f"a multiple of num_heads ({mimi.num_heads})", mimi.dimension)
    if mimi.frame_size < 1 or mimi.frame_size % mimi.hop_length:
        raise s.fail(
            "ratios",
            f"a product dividing the frame of {mimi.frame_size} samples (sample_rate / frame_rate)",
            list(mimi.ratios),
        )
    return mimi


def _sampling(s: Section) -> SamplingConfig:
    base = SamplingConfig()
    return SamplingConfig(  # config.json's keys: docs/checkpoint-layouts.md §config.json
        audio_temperature=s.number("audio_temp", base.audio_temperature),
        audio_top_k=s.integer("audio_top_k", base.audio_top_k),
        text_temperature=s.number("text_temp", base.text_temperature),
        text_top_k=s.integer("text_top_k", base.text_top_k),
    )


def _quantization(top: Section) -> QuantizationConfig:
    q = top.section("quantization")
    bits = q.integer("bits", 4)
    if bits not in (2, 3, 4, 5, 6, 8):
        raise q.fail("bits", "one of 2, 3, 4, 5, 6, 8", bits)
    components = q.strings("quantized_components", ("temporal", "depformer"))
    if not set(components) <= {"temporal", "depformer"}:
        raise q.fail(
            "quantized_components", "a list of 'temporal' and 'depformer'", list(components)
        )
    group_size = q.integer("group_size", 64)
    if group_size not in (32, 64, 128):
        raise q.fail("group_size", "one of 32, 64, 128", group_size)
    return QuantizationConfig(bits=bits, group_size=group_size, quantized_components=components)


def config_7b() -> PersonaPlexConfig:
    """PersonaPlex 7B as published (docs/driving-personaplex.md §Architecture)."""
    temporal = TransformerConfig(
        d_model=4096, num_heads=32, num_layers=32, dim_feedforward=11264, context=3000
    )
    depformer = TransformerConfig(
        d_model=1024, num_heads=16, num_layers=6, dim_feedforward=2816, context=16
    )
    return PersonaPlexConfig(lm=LMConfig(temporal=temporal, depformer=depformer))


def tiny(
    *,
    d_model: int = 64,
    num_layers: int = 2,
    context: int = 3000,
    text_card: int = 1000,
    card: int = 2048,
    mimi: MimiConfig | None = None,
) -> PersonaPlexConfig:
    """A small model of exactly the 7B's structure, for tests and CPU benchmarks."""
    temporal = TransformerConfig(
        d_model=d_model,
        num_heads=4,
        num_layers=num_layers,
        dim_feedforward=gated_hidden(d_model, 4.125),
        context=context,
    )
    depformer = TransformerConfig(
        d_model=32, num_heads=2, num_layers=2, dim_feedforward=gated_hidden(32, 4.125), context=16
    )
    lm = LMConfig(temporal=temporal, depformer=depformer, text_card=text_card, card=card)
    return PersonaPlexConfig(lm=lm, mimi=mimi or MimiConfig())
