"""libmpg123's messages as libsndfile decodes an MP3: kept off the terminal, said in a sentence."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

from personaplex_tui.stderr_capture import fd2_filtered

log = logging.getLogger(__name__)

# What libmpg123 prints on fd 2 (libsndfile does not set its MPG123_QUIET, nor lets us set it):
#   Note: Illegal Audio-MPEG-Header 0x5f49c0ba at offset 11304.
#   Warning: Xing stream size off by more than 1%, fuzzy seeking may be even more fuzzy ...
#   [src/libmpg123/layer3.c:INT123_do_layer3():1774] error: part2_3_length (1088) too large ...
_MPG123 = re.compile(r"(?:Note|Warning|Error): |\[[^\]\n]*mpg123[^\]\n]*\] \w+: ")
# Of those, what says that audio was lost: a frame skipped, a resync, a bad frame. The Xing
# warning alone is not: it comes of tags after the audio too (an APE tag), all frames intact.
_LOST = re.compile(r"Illegal Audio-MPEG-Header|resync|Skipped \d+ bytes|\] error: ", re.IGNORECASE)
_KEEP = 50  # lines of it logged per call, at most


def is_decoder_noise(line: str) -> bool:
    """A line libmpg123 wrote (a note, a warning, an error about a frame)."""
    return _MPG123.match(line) is not None


class DecoderNoise:
    """What libmpg123 said while one file was decoded, kept off the terminal (its first lines go
    to the debug log): whether it skipped damaged frames."""

    def __init__(self) -> None:
        self.frames_lost = False
        self.active = True  # False once the file is known not to be an MP3: fd 2 is left alone

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Around one libsndfile call: libmpg123's lines are taken off fd 2 (anything else
        written there meanwhile still reaches it), on the main thread outside the TUI; in the
        TUI, where fd 2 is its log already, they stay there and are read back from it (on any
        thread: the chat's file mic reads its file on a worker). See `fd2_filtered`."""
        if not self.active:
            yield
            return
        dropped: list[str] = []
        try:
            with fd2_filtered(is_decoder_noise, dropped):
                yield
        finally:
            if dropped:
                log.debug("the MP3 decoder said: %s", " / ".join(dropped[:_KEEP]))
            self.frames_lost = self.frames_lost or any(_LOST.search(s) for s in dropped)


def damaged_note(path: str) -> str:
    """The sentence for an MP3 file whose decoder skipped damaged frames (it is still used)."""
    return (
        f"The MP3 file {path} has damaged frames; the decoder skipped them, so its audio may "
        "have gaps."
    )
