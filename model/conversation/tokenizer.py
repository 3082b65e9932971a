"""SentencePiece text tokenizer: system-prompt encoding and inner-monologue decoding."""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from model.conversation.prompts import wrap_system_prompt
from model.errors import CheckpointError

TEXT_PAD = 3
TEXT_EPAD = 0


class TextTokenizer:
    """The checkpoint's SentencePiece model, with the two conversions PersonaPlex needs."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"The tokenizer file {path} is missing.")
        self.path = path
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except Exception as exc:  # sentencepiece raises OSError/RuntimeError with C++ text
            raise CheckpointError(
                f"The tokenizer file {path} is not a SentencePiece model ({type(exc).__name__})."
            ) from None
        self._pieces = [self._sp.IdToPiece(i) for i in range(self._sp.GetPieceSize())]

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def encode(self, text: str) -> list[int]:
        """Plain ids (no BOS/EOS)."""
        return list(self._sp.EncodeAsIds(text))

    def encode_system_prompt(self, text: str) -> list[int]:
        """Ids of `<system> text <system>` (text already wrapped is used as is)."""
        return self.encode(wrap_system_prompt(text))

    def piece(self, token: int) -> str:
        """The text of one inner-monologue token: "" for PAD/EPAD and control ids, "▁" as a space."""
        if token in (TEXT_PAD, TEXT_EPAD) or not 0 <= token < len(self._pieces):
            return ""
        if self._sp.IsControl(token) or self._sp.IsUnknown(token):
            return ""
        return self._pieces[token].replace("\u2581", " ")

    def decode(self, tokens: list[int]) -> str:
        """The transcript of a token sequence (PAD/EPAD skipped)."""
        return "".join(self.piece(t) for t in tokens).strip()
