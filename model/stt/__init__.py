"""Kyutai's streaming speech-to-text (stt-1b-en_fr) on the project's own Mimi and LM layers."""

from model.stt.config import SttConfig, stt_1b_en_fr
from model.stt.loader import DEFAULT_STT_MODEL, SttModel, load_stt
from model.stt.model import SttLM
from model.stt.stream import SttStep, SttStream

__all__ = [
    "DEFAULT_STT_MODEL",
    "SttConfig",
    "SttLM",
    "SttModel",
    "SttStep",
    "SttStream",
    "load_stt",
    "stt_1b_en_fr",
]
