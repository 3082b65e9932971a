"""The transcript of a recording, written as it happens: `transcript.jsonl` and `transcript.md`.

Both files are appended to and flushed on every entry, so a crash of the app loses nothing already
said, and synced to the disk every `SYNC_EVERY_S` and on close on a thread of their own (as the
WAV tracks are), so a power cut loses at most about the last 5 s of them.
Times are seconds on the recording's timeline (the position in `mic.wav` / `agent.wav`),
rounded to the millisecond (`TIME_KEYS`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from personaplex_tui.audio.disk_sync import BackgroundSync

# How often both files are synced to the disk: as often as the WAV tracks (read when a transcript
# is made, so that tests can lower it)
from personaplex_tui.audio.recorder import SYNC_EVERY_S

JSONL_NAME = "transcript.jsonl"
MARKDOWN_NAME = "transcript.md"
# Agent text after a pause of 20 frames or more starts a new paragraph, as it starts a new block
# on the screen (tui/widgets/transcript_panel.py: more than 19 frames between pieces).
PARAGRAPH_GAP_S = 19.5 * 0.08
# The entries' times, written rounded to the millisecond (12.48, not 12.480000000000002)
TIME_KEYS = ("t", "start_s", "end_s")
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*_`<>[]#"})


def escape_markdown(text: str) -> str:
    """Text with Markdown's special characters escaped, so the model's words show as said."""
    return text.translate(_MD_SPECIAL)


def entry_line(record: dict[str, Any]) -> bytes:
    """One JSONL entry as written: `t` first, then `wall` (now), its times in milliseconds.

    A file name that is not UTF-8 (a surrogate in the str) becomes the escape \\udcff: still
    JSON (json.loads gives the same str back) and valid UTF-8 on disk."""
    record = {"t": record.pop("t"), "wall": round(time.time(), 3), **record}
    for key in TIME_KEYS:
        if isinstance(record.get(key), float | int):
            record[key] = round(float(record[key]), 3)
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


def clock(t: float) -> str:
    """Seconds as `mm:ss.s` (or `h:mm:ss.s` past an hour), rounded to the tenth first (59.96 s
    is 01:00.0, not 00:60.0)."""
    t = round(max(0.0, t), 1)
    minutes, seconds = divmod(t, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{minutes:02d}:{seconds:04.1f}"
    return f"{hours}:{text}" if hours else text


class TranscriptWriter:
    """Writes the events of a conversation as JSON lines and as a readable Markdown transcript.

    JSONL entries are objects with `t` (timeline seconds), `wall` (Unix time) and `type`:
    `session`, `user_turn`, `user_text` (a piece of the user's transcript, live), `user_said`
    (a finished line of it), `reply`, `text`, `note` (or `error`, `pause`: a note's kind),
    `end` (with a `reason` when the process left before its shutdown finished: `abandon`).
    The Markdown has the user's turns (times and length), their words when the user's
    transcript is on, the agent's words as it said them, and notes. Thread-safe; writing
    errors disable the transcript instead of raising: `failed` says why, and is reported once
    through `on_error` (files that cannot be opened, a full disk later).

    Both files are synced to the disk every `SYNC_EVERY_S` while they grow, and once more on
    `close`, by a `ppx-transcript-sync` thread through its own copies of their descriptors, never
    under the writer's lock. A sync that fails (an I/O error) stops the transcript as a failed
    write does, reported through `on_error` from that thread.
    """

    def __init__(
        self,
        folder: str | Path,
        title: str,
        details: dict[str, Any],
        on_error: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.folder = Path(folder)
        self._on_error = on_error
        self._lock = threading.RLock()
        self._agent_open = False
        self._last_agent_t = -1e9
        self.failed: str | None = None
        self._jsonl: BinaryIO | None = None
        self._md: BinaryIO | None = None
        self._sizes = [0, 0]  # bytes of whole entries in each file
        self._syncer: BackgroundSync | None = None
        self.entries = 0
        self._quiet = False  # a failed write is not said (`stop`: the recording said it)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Written through (no buffer of ours): what a write leaves is on disk at once.
            self._jsonl = open(self.folder / JSONL_NAME, "ab", buffering=0)  # noqa: SIM115
            self._md = open(self.folder / MARKDOWN_NAME, "ab", buffering=0)  # noqa: SIM115
            self._sizes = [os.fstat(f.fileno()).st_size for f in (self._jsonl, self._md)]
        except OSError as e:
            self.failed = f"Could not write the transcript in {self.folder}: {e.strerror or e}."
            on_error(self.failed)
            return
        try:
            self._syncer = BackgroundSync(
                [self._jsonl.fileno(), self._md.fileno()],
                SYNC_EVERY_S,
                lambda: self.entries,  # (an int read: no lock needed)
                self._sync_failed,
                "ppx-transcript-sync",
            )
        except OSError:  # no file descriptor left for its copies: no background sync
            self._syncer = None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        facts = " · ".join(f"{k} {v}" for k, v in details.items() if v not in (None, ""))
        self._write(
            {"t": 0.0, "type": "session", "title": title, **details},
            f"# {title}, {stamp}\n\n{facts}\n",
        )

    # -- entries -------------------------------------------------------------------------
    def user_turn(self, start_s: float, end_s: float, frames: int, manual: bool = False) -> None:
        """The user spoke from `start_s` to `end_s` (a VAD utterance or push-to-talk)."""
        how = "push-to-talk" if manual else "voice detected"
        self._write(
            {
                "t": start_s,
                "type": "user_turn",
                "start_s": start_s,
                "end_s": end_s,
                "frames": frames,
                "manual": manual,
            },
            f"\n\n**You** · {clock(start_s)}–{clock(end_s)} · {end_s - start_s:.1f} s ({how})",
        )

    def reply(self, start_s: float, end_s: float, frames: int, interrupted: bool) -> None:
        """A turn-based reply ended (JSONL only; the Markdown has its words)."""
        self._write(
            {
                "t": start_s,
                "type": "reply",
                "start_s": start_s,
                "end_s": end_s,
                "frames": frames,
                "interrupted": interrupted,
            },
            f"\n\n_{clock(end_s)} · reply interrupted_" if interrupted else "",
        )

    def agent_turn(self) -> None:
        """The next agent text starts a new paragraph (a turn-based reply begins)."""
        with self._lock:
            self._agent_open = False

    def agent_text(self, t: float, text: str, step: int) -> None:
        """A piece of the agent's inner monologue, said at `t`."""
        if not text:
            return
        with self._lock:
            if not self._agent_open or t - self._last_agent_t > PARAGRAPH_GAP_S:
                md = f"\n\n**Agent** · {clock(t)} · {escape_markdown(text.lstrip())}"
            else:
                md = escape_markdown(text)
            self._write({"t": t, "type": "text", "step": step, "text": text}, md)
            self._agent_open = True
            self._last_agent_t = t

    def user_text(self, t: float, text: str, step: int) -> None:
        """A piece of the user's transcript as it was heard (JSONL only; `user_said` writes the
        finished line to the Markdown)."""
        if text:
            self._write({"t": t, "type": "user_text", "step": step, "text": text}, "")

    def user_said(self, start_s: float, end_s: float, text: str) -> None:
        """A finished line of the user's transcript (a turn ended)."""
        self._write(
            {"t": start_s, "type": "user_said", "start_s": start_s, "end_s": end_s, "text": text},
            f"\n\n**You** · {clock(start_s)} · {escape_markdown(text)}",
        )
        with self._lock:
            self._agent_open = False  # the agent's next words start their own paragraph

    def note(self, t: float, text: str, kind: str = "note") -> None:
        """A line for the reader: a mode change, an error, the end of the input file (nothing
        for an empty text)."""
        text = text.strip()
        if not text:
            return
        md = f"\n\n_{clock(t)} · {escape_markdown(text)}_"
        self._write({"t": t, "type": kind, "text": text}, md)

    # -- files ---------------------------------------------------------------------------
    def _write(self, record: dict[str, Any], markdown: str) -> None:
        with self._lock:
            if self._jsonl is None or self._md is None or self._jsonl.closed:
                return
            if record["type"] not in ("text", "user_text"):
                self._agent_open = False
            files = (self._jsonl, self._md)
            data = (entry_line(record), markdown.encode("utf-8", "backslashreplace"))
            try:
                for f, chunk in zip(files, data, strict=True):
                    view = memoryview(chunk)
                    while view:
                        view = view[f.write(view) or 0 :]
            except OSError as e:
                for f, size in zip(files, self._sizes, strict=True):  # whole entries only
                    try:
                        os.ftruncate(f.fileno(), size)
                    except OSError:
                        pass
                self.failed = self._stopped(e)
                self._close_files()
                if not self._quiet:
                    self._on_error(self.failed)
                return
            self._sizes = [size + len(chunk) for size, chunk in zip(self._sizes, data, strict=True)]
            self.entries += 1

    @property
    def sizes(self) -> tuple[int, int]:
        """Bytes of whole entries in the JSONL and the Markdown now (a snapshot's `copy_to`)."""
        with self._lock:
            return self._sizes[0], self._sizes[1]

    def copy_to(self, folder: Path, end_s: float, sizes: tuple[int, int] | None = None) -> None:
        """Copy both files into `folder` (a saved snapshot): their first `sizes` bytes (whole
        entries, from `sizes` when the snapshot was taken; else all of them now), ended as
        `close(end_s)` ends a finished transcript (an `end` entry at `end_s`, where the
        snapshot's tracks end) unless the copied entries end with one already (a transcript
        that the recording's stop ended)."""
        with self._lock:
            sizes = sizes or self.sizes
            for name, size in zip((JSONL_NAME, MARKDOWN_NAME), sizes, strict=True):
                source = self.folder / name
                if source.exists():
                    with open(source, "rb") as src, open(folder / name, "wb") as dst:
                        shutil.copyfileobj(_Prefix(src, size), dst)
            if not (folder / JSONL_NAME).exists():
                return
            lines = (folder / JSONL_NAME).read_bytes().splitlines()
            if lines and json.loads(lines[-1]).get("type") == "end":
                return
            with open(folder / JSONL_NAME, "ab") as jsonl:
                jsonl.write(entry_line({"t": end_s, "type": "end"}))
            with open(folder / MARKDOWN_NAME, "ab") as md:
                md.write(b"\n")

    def stop(self, t: float, reason: str) -> None:
        """The recording's audio stopped at `t` (a full disk): an `end` entry with `reason`
        there, then no more entries, so that the transcript ends where the audio does and
        nothing more is written in the folder. A failure to write it is not said again (the
        recording's sentence says that it stopped); the entries before stay whole."""
        with self._lock:
            self._quiet = True
            md = f"\n\n_{clock(t)} · {escape_markdown(reason)}_\n"
            self._write({"t": t, "type": "end", "reason": reason}, md)
            self._close_files()

    def close(self, t: float | None = None) -> None:
        """End the transcript (an `end` entry when `t` is given); safe to call twice. Waits for
        the last sync to the disk (a failed one is reported as `failed`, through `on_error`)."""
        with self._lock:  # (one hold: an `abandon` meanwhile cannot add a second end)
            if t is not None:
                self._write({"t": t, "type": "end"}, "\n")
            self._close_files()
        if self._syncer is not None:  # (not under the lock: a failed sync takes it)
            self._syncer.stop(wait=True)

    def abandon(self, t: float, reason: str, timeout_s: float) -> bool:
        """The process leaves without `close` (its shutdown did not finish; any thread): an
        `end` entry with `reason`, then no more entries. False when the writer is not free
        within `timeout_s` (a stuck thread holds it): then nothing is written."""
        if not self._lock.acquire(timeout=timeout_s):
            return False
        try:
            md = f"\n\n_{clock(t)} · {escape_markdown(reason)}_\n"
            self._write({"t": t, "type": "end", "reason": reason}, md)
            self._close_files()  # (their last sync is not waited for: the data is in the OS)
        finally:
            self._lock.release()
        return True

    def _stopped(self, error: OSError) -> str:
        return (
            f"Writing the transcript in {self.folder} failed ({error.strerror or error}); "
            f"it keeps the {self.entries} entries written until then and the "
            "conversation goes on without it."
        )

    def _sync_failed(self, error: OSError) -> None:
        """A sync to the disk failed (on the sync thread): the transcript stops as on a failed
        write; after `close` (its last sync) it only says so, and after `stop` not even that
        (the recording's sentence said it stopped)."""
        with self._lock:
            if self.failed is not None:
                return
            if self._jsonl is None or self._jsonl.closed:
                self.failed = (
                    f"Finishing the transcript in {self.folder} failed ({error.strerror or error})."
                )
            else:
                self.failed = self._stopped(error)
                self._close_files()
            if not self._quiet:
                self._on_error(self.failed)

    def _close_files(self) -> None:
        """Close both files (their last sync follows on the sync thread, not waited for)."""
        for f in (self._jsonl, self._md):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
        if self._syncer is not None:
            self._syncer.stop(wait=False)


class _Prefix:
    """The first `size` bytes of a binary file, for `shutil.copyfileobj`."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file, self._left = file, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data
