"""The transcript's files are synced to the disk in the background (transcript_writer.py)."""

from __future__ import annotations

import errno
import json
import os
import threading
import time

import personaplex_tui.conversation.transcript_writer as transcript_writer
from personaplex_tui.conversation.transcript_writer import (
    JSONL_NAME,
    MARKDOWN_NAME,
    TranscriptWriter,
)
from tests.test_audio_recording import FsyncSpy, _wait_for

EIO = OSError(errno.EIO, "Input/output error")


def test_both_files_are_synced_every_interval_off_the_writing_thread(tmp_path, monkeypatch):
    spy = FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    interval = 0.05
    monkeypatch.setattr(transcript_writer, "SYNC_EVERY_S", interval)
    t = TranscriptWriter(tmp_path, "Conversation", {})
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < 0.6:  # ~12 intervals of words arriving
        t.agent_text(step * 0.08, f" word{step}", step)
        step += 1
        time.sleep(0.005)
    elapsed = time.monotonic() - start
    jsonl, md = tmp_path / JSONL_NAME, tmp_path / MARKDOWN_NAME
    synced = spy.count(jsonl)
    # about one sync per interval while the files grow (generous below: a loaded machine)
    assert 3 <= synced <= elapsed / interval + 2
    assert 3 <= spy.count(md) <= elapsed / interval + 2
    assert {thread for _, thread in spy.calls} == {"ppx-transcript-sync"}  # never this thread
    t.note(50.0, "one more line")
    assert _wait_for(lambda: spy.count(jsonl) > synced and spy.count(md) > synced)
    time.sleep(2 * interval)  # (a sync that had begun before that line may follow it)
    settled = len(spy.calls)
    time.sleep(4 * interval)
    assert len(spy.calls) == settled  # nothing new: no sync
    t.close()
    assert len(spy.calls) == settled  # already synced: close has nothing to do
    assert t.failed is None


def test_closing_a_transcript_syncs_both_files_once(tmp_path, monkeypatch):
    spy = FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(transcript_writer, "SYNC_EVERY_S", 3600.0)  # no periodic sync here
    t = TranscriptWriter(tmp_path, "Conversation", {"voice": "NATF2"})
    for step in range(25):
        t.agent_text(step * 0.08, f" word{step}", step)
    assert spy.calls == []  # writing never syncs on the writing thread
    t.close(2.0)  # waits for the last sync
    assert spy.count(tmp_path / JSONL_NAME) == 1
    assert spy.count(tmp_path / MARKDOWN_NAME) == 1
    t.close(3.0)  # twice: nothing more
    assert len(spy.calls) == 2
    lines = (tmp_path / JSONL_NAME).read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "end" and t.failed is None


def test_a_failed_sync_stops_the_transcript_with_one_sentence_not_the_conversation(
    tmp_path, monkeypatch
):
    crashes: list[object] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    monkeypatch.setattr(os, "fsync", FsyncSpy(EIO))
    monkeypatch.setattr(transcript_writer, "SYNC_EVERY_S", 0.02)
    said: list[str] = []
    t = TranscriptWriter(tmp_path, "Conversation", {}, said.append)
    step = 0

    def talk() -> bool:
        nonlocal step
        t.agent_text(step * 0.08, f" word{step}", step)  # never raises
        step += 1
        return bool(said)

    assert _wait_for(talk)
    kept = t.entries
    for _ in range(10):  # the conversation goes on; the transcript is no longer written
        talk()
        t.note(1.0, "a note")
    assert t.entries == kept
    assert said == [
        f"Writing the transcript in {tmp_path} failed (Input/output error); it keeps the "
        f"{kept} entries written until then and the conversation goes on without it."
    ]
    assert t.failed == said[0]
    t.close(9.0)  # still works, says nothing more
    t.close(9.0)
    assert said == [t.failed] and crashes == []
    lines = (tmp_path / JSONL_NAME).read_text().splitlines()
    assert len(lines) == kept and all(json.loads(line) for line in lines)  # whole entries
    assert json.loads(lines[-1])["type"] != "end"  # nothing after the failure


def test_a_failed_last_sync_on_close_is_one_sentence(tmp_path, monkeypatch):
    crashes: list[object] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    spy = FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(transcript_writer, "SYNC_EVERY_S", 3600.0)
    said: list[str] = []
    t = TranscriptWriter(tmp_path, "Conversation", {}, said.append)
    t.agent_text(0.0, "Hello", 0)
    spy.error = EIO
    t.close(1.0)  # no exception
    assert said == [f"Finishing the transcript in {tmp_path} failed (Input/output error)."]
    assert t.failed == said[0] and crashes == []
    lines = (tmp_path / JSONL_NAME).read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "end"  # written before the sync failed
    t.close(2.0)
    assert len(said) == 1


def test_a_transcript_left_behind_gets_its_end_unless_a_stuck_thread_holds_it(tmp_path):
    """A chat that exits without its shutdown (`stuck_exit`) ends the transcript itself, with
    why; a thread holding the writer for good (stuck mid-write) costs a short wait, not a hang."""
    t = TranscriptWriter(tmp_path, "Conversation", {})
    t.agent_text(1.0, " hello", 12)
    held, release = threading.Event(), threading.Event()

    def stuck() -> None:
        with t._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=stuck)
    thread.start()
    assert held.wait(5)
    started = time.monotonic()
    try:
        assert t.abandon(2.0, "left behind", timeout_s=0.2) is False  # nothing written
    finally:
        release.set()
        thread.join()
    assert 0.2 <= time.monotonic() - started < 2
    reason = "ppx-tui exited before its shutdown finished (Ctrl+C again)"
    assert t.abandon(2.5, reason, timeout_s=0.2) is True
    t.agent_text(3.0, " more", 40)  # the conversation goes on on its thread: no more entries
    t.close(4.0)  # (the shutdown finishing after all: nothing more either)
    entries = [json.loads(line) for line in (tmp_path / JSONL_NAME).read_text().splitlines()]
    assert [e["type"] for e in entries] == ["session", "text", "end"]
    assert (entries[-1]["t"], entries[-1]["reason"]) == (2.5, reason)
    md = (tmp_path / MARKDOWN_NAME).read_text(encoding="utf-8")
    assert md.endswith(
        " hello\n\n_00:02.5 · ppx-tui exited before its shutdown finished (Ctrl+C again)_\n"
    )
    assert t.failed is None


def test_an_abandoned_recording_keeps_its_folder_with_the_end_unless_it_was_temporary(tmp_path):
    """Left behind by a stuck exit: a kept recording's transcript ends with the reason; a
    temporary one (no --record-dir) is deleted, as its close would have deleted it."""
    from personaplex_tui.conversation.recording import ConversationRecording

    kept = ConversationRecording.begin(tmp_path, {})
    assert kept.abandon("left behind", timeout_s=0.2) is True
    lines = (kept.folder / transcript_writer.JSONL_NAME).read_text().splitlines()
    assert json.loads(lines[-1])["reason"] == "left behind"
    temporary = ConversationRecording.begin(None, {})
    assert temporary.folder.is_dir()
    assert temporary.abandon("left behind", timeout_s=0.2) is True
    assert not temporary.folder.exists()
