"""Token dumps (`respond`/`transcribe --dump-tokens`): a JSON line per frame, whole lines only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from model.errors import PersonaPlexError


class TokenDumpError(PersonaPlexError):
    """The token dump could not be created or written (one sentence)."""


class TokenDump:
    """Writes `{frame, text, agent[8], user[8]}` lines straight to the OS, so a killed process
    leaves every frame it made. A write that fails (a full disk) cuts the file back to its last
    whole line and raises TokenDumpError saying how many frames it keeps."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()  # as check_output_file checked it
        self.frames = 0
        self._size = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise TokenDumpError(
                f"Cannot write the token dump {self.path}: {e.strerror or e}."
            ) from None

    def write(self, frame: Any) -> None:
        """One conversation frame: `{frame, text, agent[8], user[8]}`."""
        self.write_record(
            {
                "frame": frame.index,
                "text": frame.text_id,
                "agent": [int(c) for c in frame.agent_codes],
                "user": [int(c) for c in frame.user_codes],
            }
        )

    def write_record(self, record: dict[str, Any]) -> None:
        """One line of any JSON record (`transcribe --dump-tokens`)."""
        line = (json.dumps(record) + "\n").encode()
        view = memoryview(line)
        try:
            while view:
                n = self._file.write(view) or 0
                view = view[n:]
        except OSError as e:
            self._cut()
            raise TokenDumpError(
                f"Writing the token dump {self.path} failed ({e.strerror or e}); "
                f"it keeps the first {self.frames} frame{'' if self.frames == 1 else 's'}."
            ) from None
        self._size += len(line)
        self.frames += 1

    def _cut(self) -> None:
        """Drop a partly written line (where the file can be cut)."""
        try:
            if self._file.seekable():
                os.ftruncate(self._file.fileno(), self._size)
        except OSError:
            pass

    def close(self) -> None:
        """Close the file; never raises (everything was written through already)."""
        try:
            self._file.close()
        except OSError:
            pass
