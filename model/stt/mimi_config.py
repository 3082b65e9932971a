"""Read a `mimi_config` JSON file in the PyPI `moshi` package's schema into a `MimiConfig`.

A repository names one with `mimi_config_name` in config.json (moshi's `CheckpointInfo` reads it
the same way); the published STT repositories have none and use the released Mimi.
"""

from __future__ import annotations

from typing import Any

from model.config import MAX_CONTEXT, MAX_LAYERS, MimiConfig
from model.config_check import Section


def mimi_config_from_moshi(data: Any, num_codebooks: int) -> MimiConfig:
    """The MimiConfig of moshi's `mimi_config` dict (seanet / transformer / quantizer sections),
    using `num_codebooks` of its codebooks. Raises CheckpointError on a bad value."""
    top = Section.top(data)
    base = MimiConfig()
    seanet, tr, q = top.section("seanet"), top.section("transformer"), top.section("quantizer")
    cfg = MimiConfig(
        sample_rate=top.integer("sample_rate", base.sample_rate),
        frame_rate=top.number("frame_rate", base.frame_rate, positive=True),
        channels=top.integer("channels", base.channels, high=1),
        dimension=seanet.integer("dimension", base.dimension),
        n_filters=seanet.integer("n_filters", base.n_filters),
        ratios=seanet.integers("ratios", base.ratios),
        kernel_size=seanet.integer("kernel_size", base.kernel_size),
        residual_kernel_size=seanet.integer("residual_kernel_size", base.residual_kernel_size),
        last_kernel_size=seanet.integer("last_kernel_size", base.last_kernel_size),
        dilation_base=seanet.integer("dilation_base", base.dilation_base),
        compress=seanet.integer("compress", base.compress),
        n_residual_layers=seanet.integer(
            "n_residual_layers", base.n_residual_layers, high=MAX_LAYERS
        ),
        num_heads=tr.integer("num_heads", base.num_heads),
        num_layers=tr.integer("num_layers", base.num_layers, high=MAX_LAYERS),
        dim_feedforward=tr.integer("dim_feedforward", base.dim_feedforward),
        context=tr.integer("context", base.context, high=MAX_CONTEXT),
        layer_scale=tr.number("layer_scale", base.layer_scale, low=None),
        max_period=tr.number("max_period", base.max_period, positive=True),
        n_q=q.integer("n_q", base.n_q),
        codebook_size=q.integer("bins", base.codebook_size),
        codebook_dim=q.integer("dimension", base.codebook_dim),
        num_codebooks=num_codebooks,
    )
    if cfg.n_q < num_codebooks:
        raise q.fail("n_q", f"at least the {num_codebooks} codebooks the STT model reads", cfg.n_q)
    if cfg.dimension % cfg.num_heads:
        raise seanet.fail("dimension", f"a multiple of num_heads ({cfg.num_heads})", cfg.dimension)
    if cfg.frame_size % cfg.hop_length:
        raise seanet.fail("ratios", "a product dividing the frame size", list(cfg.ratios))
    return cfg
