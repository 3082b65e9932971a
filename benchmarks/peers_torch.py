"""Peer worker: Kyutai's PyTorch `moshi` (PyPI) on PersonaPlex's shapes with random weights.

`lm`: `LMGen.step` per frame (temporal transformer, text sampling, `--depformer-steps` depformer
steps, tokens copied to the host), and the full-duplex step as moshi's server runs it (Mimi
encode, `LMGen.step`, Mimi decode of the agent's 8 codes, audio copied to the host).
`mimi`: Mimi's streaming encode and decode of one 80 ms frame, timed separately.

On CUDA: the LM in bfloat16, Mimi in float32, and moshi's own CUDA graphs (LMGen and Mimi capture
them during the warm-up steps) and torch.compile, as shipped. On the CPU: float32 throughout and
torch.compile off (it takes minutes there and is not what a CPU user would run), one thread.
`--bits` is accepted and ignored: moshi's PyTorch LM has no 4- or 8-bit path of its own.

    python benchmarks/peers_torch.py lm --depformer-steps 8 --steps 300
"""

from __future__ import annotations

import contextlib
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers_common import (  # noqa: E402
    codec_timed,
    emit,
    emit_missing,
    noise_frames,
    shapes,
    timed,
    user_codes,
    worker_parser,
)
from model.checkpoints.config_io import moshi_hidden  # noqa: E402
from model.config import MimiConfig, PersonaPlexConfig  # noqa: E402


def _moshi_ff(hidden: int, dim: int) -> int:
    """The `dim_feedforward` for which moshi's gated FFN has `hidden` units (PersonaPlex's)."""
    ff = -(-3 * hidden // 2)
    if moshi_hidden(ff, dim) != hidden:
        raise ValueError(f"moshi cannot build a gated FFN of {hidden} units for dim {dim}")
    return ff


def lm_kwargs(cfg: PersonaPlexConfig, dep_q: int) -> dict:
    """moshi's LMModel kwargs for PersonaPlex's shapes (the 7B's settings, `dep_q` steps)."""
    from moshi.models import loaders

    t, d, lm = cfg.lm.temporal, cfg.lm.depformer, cfg.lm
    kw = dict(loaders._lm_kwargs)
    ff = _moshi_ff(t.dim_feedforward, t.d_model)
    kw.update(
        dim=t.d_model,
        num_heads=t.num_heads,
        num_layers=t.num_layers,
        hidden_scale=(ff + 0.5) / t.d_model,  # LMModel takes int(hidden_scale * dim) = ff
        context=t.context,
        max_period=t.max_period,
        text_card=lm.text_card,
        card=lm.card,
        n_q=lm.n_audio,
        dep_q=dep_q,
        depformer_dim=d.d_model,
        depformer_num_heads=d.num_heads,
        depformer_num_layers=d.num_layers,
        depformer_dim_feedforward=_moshi_ff(d.dim_feedforward, d.d_model),
        delays=list(lm.delays),
    )
    return kw


def build_mimi(cfg: MimiConfig, device: str):
    """moshi's MimiModel with random weights: the published one, or the tiny test shape."""
    from moshi.models import loaders

    extra = None
    if cfg != MimiConfig():
        from tests.mimi_reference import moshi_mimi_config

        extra = moshi_mimi_config(cfg)
    return loaders.get_mimi(None, extra, device=device, num_codebooks=cfg.num_codebooks)


def main(argv: list[str] | None = None) -> int:
    args = worker_parser(__doc__.splitlines()[0]).parse_args(argv)
    try:
        import torch
        from moshi.models import LMGen, loaders
        from moshi.utils.compile import no_compile
    except ImportError as exc:
        return emit_missing("PyTorch moshi", exc)

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)  # frame-sized work: extra threads only spin on a busy CPU
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(args.seed)
    cfg = shapes(args.small)
    n = args.warmup_steps + args.steps
    pcm = torch.from_numpy(noise_frames(n, args.seed)).to(device)[:, None, None, :]
    where = f"gpu ({torch.cuda.get_device_name()})" if cuda else "cpu"
    version = f"PyTorch moshi {metadata.version('moshi')}, torch {torch.__version__} on {where}"
    graphs = ", CUDA graphs" if cuda else ""
    compiled = contextlib.nullcontext() if cuda else no_compile()

    with torch.no_grad(), compiled:
        mimi = build_mimi(cfg.mimi, device)
        q = cfg.mimi.num_codebooks
        if args.part == "mimi":

            def encode(i: int):
                codes = mimi.encode(pcm[i])
                sync()
                return codes

            with mimi.streaming(1):
                enc, dec = codec_timed(
                    encode, lambda c: mimi.decode(c).cpu(), args.warmup_steps, args.steps
                )
            dtype = str(next(mimi.parameters()).dtype).split(".")[-1]
            emit(f"{version}, Mimi {dtype}{graphs}", {"encode": enc, "decode": dec})
            return 0

        dtype = torch.bfloat16 if cuda else torch.float32
        lm = loaders.get_moshi_lm(None, lm_kwargs(cfg, args.depformer_steps), device, dtype)
        lm.eval()
        s = cfg.sampling
        gen = LMGen(
            lm, temp=s.audio_temperature, temp_text=s.text_temperature, top_k=s.audio_top_k,
            top_k_text=s.text_top_k,
        )  # fmt: skip
        need = lm.num_codebooks - lm.dep_q - 1  # the user's codes LMGen takes (0 with 16 steps)
        codes = torch.from_numpy(user_codes(n, q, cfg.lm.card, args.seed)).to(device)
        codes = codes[:, None, :need, None]

        def lm_step(i: int) -> None:
            out = gen.step(codes[i])
            if out is not None:
                out.cpu()
            sync()

        def full_step(i: int) -> None:
            user = mimi.encode(pcm[i])
            out = gen.step(user[:, :need])
            if out is not None:
                mimi.decode(out[:, 1 : 1 + q]).cpu()
            sync()

        with gen.streaming(1):
            lm_ms = timed(lm_step, args.warmup_steps, args.steps)
        with gen.streaming(1), mimi.streaming(1):
            full_ms = timed(full_step, args.warmup_steps, args.steps)
    label = f"{version}, {str(dtype).split('.')[-1]}{graphs}"
    emit(label, {"lm": lm_ms, "full": full_ms}, depformer_steps=args.depformer_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
