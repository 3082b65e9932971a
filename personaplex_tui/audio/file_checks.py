"""What is checked of an audio file's own bytes, beside what libsndfile reads: a WAV cut off or
whose data size was never filled in (and a view of it with that size filled in), an Ogg stream cut
short."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

from personaplex_tui.audio.errors import AudioFileError

OGG_TAIL = 1 << 17  # bytes read from an Ogg file's end to find its last page (at most 65,307)


class SizedView(io.RawIOBase):
    """The WAV file `f` read with the data chunk's size (at byte `at`) and the RIFF size counting
    every whole sample to the end of the file: those 8 bytes are replaced as they are read, so a
    long recording is not copied into memory."""

    def __init__(self, f: BinaryIO, size: int, at: int, block: int) -> None:
        super().__init__()
        whole = (size - at - 4) - (size - at - 4) % block
        self._f, self._size, self._pos = f, size, 0
        self._patches = (
            (4, struct.pack("<I", min(size - 8, 0xFFFFFFFF))),
            (at, struct.pack("<I", min(whole, 0xFFFFFFFF))),
        )

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        self._f.seek(self._pos)
        got = self._f.readinto(view) or 0  # type: ignore[attr-defined]
        for at, patch in self._patches:
            lo, hi = max(at, self._pos), min(at + len(patch), self._pos + got)
            if lo < hi:
                view[lo - self._pos : hi - self._pos] = patch[lo - at : hi - at]
        self._pos += got
        return got


def ogg_cut_short(source: BinaryIO, size: int, info: sf._SoundFileInfo) -> bool:
    """libsndfile quietly reads an Ogg file (Vorbis, Opus) cut short, up to the cut: its last
    page should be whole and carry the end-of-stream flag (header type bit 0x04). Only the
    file's last `OGG_TAIL` bytes are read; a tail with no page header in it is not judged."""
    if info.format != "OGG":
        return False
    start = max(0, size - OGG_TAIL)
    source.seek(start)
    tail = source.read(size - start)
    at = len(tail)
    while (at := tail.rfind(b"OggS", 0, at)) >= 0:
        if at + 4 < len(tail) and tail[at + 4] != 0:  # not a page: version 0 only
            continue
        if at + 27 > len(tail):  # the cut fell in the page's header
            return True
        segments = tail[at + 27 : at + 27 + tail[at + 26]]
        if len(segments) < tail[at + 26] or at + 27 + len(segments) + sum(segments) > len(tail):
            return True  # the cut fell in the page
        return not tail[at + 5] & 0x04
    return False


def cut_short_note(path: str, duration_s: float) -> str:
    return (
        f"The audio file {path} seems cut short (its Ogg stream stops without its end, as after "
        f"an interrupted download or copy); its {duration_s:.2f} s are used as far as they go."
    )


def check_wav_complete(p: Path, f: BinaryIO, size: int, rate: int) -> tuple[int, int] | None:
    """libsndfile quietly reads a cut-off WAV; compare the data chunk's size with the file's.
    A data size of 0 with samples after it (a streaming writer that never went back to fill it
    in) is read to the end of the file: returns (where that size is, the sample's bytes)."""
    block = 1
    f.seek(0)
    head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt " and csize >= 14:
            fmt = f.read(csize)
            block = max(1, struct.unpack("<H", fmt[12:14])[0])
            if csize & 1:
                f.seek(1, 1)
            continue
        if cid == b"data":
            have = size - f.tell()
            if csize == 0 and have >= block:  # length unknown (libsndfile reads 0 frames)
                return f.tell() - 4, block
            if csize not in (0, 0xFFFFFFFF) and have < csize:  # 0 / ~0: length unknown
                raise AudioFileError(
                    f"The audio file {p} is truncated: it holds {have / block / rate:.2f} s "
                    f"of the {csize / block / rate:.2f} s its header promises."
                )
            return None
        f.seek(csize + (csize & 1), 1)
