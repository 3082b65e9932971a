"""Load the STT model next to a loaded PersonaPlex (on the engine thread): the user's transcript,
or one sentence saying why there is none and the conversation goes on without it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from model.errors import PersonaPlexError
from personaplex_tui.errors import AppError
from personaplex_tui.user_transcript import NO_TRANSCRIPT, STT_FLAG, SttChoice, stt_bits

log = logging.getLogger(__name__)


def attach_stt(
    persona: Any, choice: SttChoice, notify: Callable[[str], None], *, tqdm_class: Any = None
) -> bool:
    """Load the STT and let `persona` (a loaded `model.PersonaPlex`) transcribe its user in every
    new session. Returns whether it did; on any problem, `notify(one sentence)` and False.
    Call it on the engine thread (it loads MLX arrays)."""
    persona.listen(None)
    if not choice.enabled:
        return False
    from model.backend import on_cuda
    from model.checkpoints.load import default_dtype
    from model.stt import load_stt
    from model.stt.loader import GROUP_SIZE
    from personaplex_tui import kernels_ahead

    # PersonaPlex's Mimi: the listener's quantizer is its own with the STT's codebooks after
    mimi_config = persona.mimi.cfg
    try:
        bits = stt_bits(choice.quantize, on_cuda())
        # the STT's kernels compile on other threads while its weights load (kernels_ahead: on
        # CUDA; the transformer's when quantized, the listener's quantizer's always; never an
        # error)
        stt = load_stt(
            choice.model,
            quantize=bits,
            tqdm_class=tqdm_class,
            flag=STT_FLAG,
            on_config=lambda config: kernels_ahead.compile_stt_ahead(
                config.transformer, default_dtype(), bits, GROUP_SIZE, mimi_config, config.n_q
            ),
        )
        persona.listen(stt, source=choice.source)
    except (PersonaPlexError, AppError, OSError, ValueError) as error:
        log.info("no user transcript: %s", error)  # `notify` tells the user, once
        notify(f"{NO_TRANSCRIPT}: {_sentence(error)}")
        return False
    return True


def _sentence(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = text[0].lower() + text[1:] if text[:2] != text[:2].upper() else text
    return text if text.endswith(".") else text + "."
