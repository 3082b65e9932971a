"""Test helpers: a tiny SentencePiece model trained on the fly (the real one is 32k pieces)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import sentencepiece as spm

from model.conversation.prompts import PROMPT_PRESETS

SENTENCES = [
    *PROMPT_PRESETS.values(),
    "Can you guarantee that the replacement part will be shipped tomorrow?",
    "What should I wear if it rains this afternoon?",
    "Hi there. Could you tell me a little about yourself?",
    "Sure, I can help you with that. The part will ship first thing in the morning.",
    "Take an umbrella and a light jacket, it will be cool and wet.",
    "I am a helpful assistant and I enjoy talking with people about many things.",
    "<system> hello <system>",
]


def train_tiny_spm(path: Path, vocab_size: int = 300) -> Path:
    """Train a SentencePiece model (PAD=3 and EPAD=0 ids free of real pieces, as in the real one)."""
    corpus = "\n".join(SENTENCES * 20)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus.splitlines()),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        user_defined_symbols=["<system>"],
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


AUDIO_DIR = Path(__file__).parent / "data" / "audio"


def load_wav_24k(name: str) -> np.ndarray:
    """A test WAV (24 kHz mono 16-bit) as float32 in [-1, 1]."""
    import wave

    with wave.open(str(AUDIO_DIR / name), "rb") as w:
        assert w.getframerate() == 24000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (data.astype(np.float32) / 32768.0).copy()
