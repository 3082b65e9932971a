"""Where a recording's files end: a recording stopped by a full disk writes nothing more in its
folder (its transcript ends where its audio does), the `w` snapshot's tracks are one length and
its transcript ends as a finished one does, and transcript times are whole milliseconds."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pytest

from personaplex_tui.audio import read_audio
from personaplex_tui.conversation import ControllerConfig, create_conversation
from personaplex_tui.conversation.recording import ConversationRecording, RecordingError
from personaplex_tui.conversation.transcript_writer import (
    JSONL_NAME,
    MARKDOWN_NAME,
    TranscriptWriter,
)
from personaplex_tui.events import FrameOut
from tests.conversation_fakes import CONVERSATION, Events, FakeDevices, FakeModel, Probe
from tests.test_conversation_disk import FullDisk, run_duplex, warnings
from tests.test_conversation_duplex import only_folder

FRAME = 1920


def entries(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / JSONL_NAME).read_text().splitlines()]


def test_a_recording_stopped_by_a_full_disk_ends_its_transcript_where_its_audio_ends(
    tmp_path, monkeypatch
):
    """The tracks fill the disk (a file-size limit, or a disk whose last few kB still take a
    transcript line): the recording stops, and its transcript with it, with an `end` entry at
    the audio's end that says why; the rest of the conversation writes nothing in the folder."""
    import personaplex_tui.audio.wav_writer as wav_writer

    disk = FullDisk(tmp_path, free=300_000)  # about 3 s of the two tracks
    monkeypatch.setattr(wav_writer, "open", disk.open, raising=False)  # (the WAVs only)
    config = ControllerConfig(mode="duplex", input_file=CONVERSATION, record_dir=tmp_path)
    events, probe = run_duplex(config)

    assert disk.refused > 0
    (message,) = warnings(events)
    assert message.startswith("Recording in") and "(No space left on device)" in message
    folder = only_folder(tmp_path)
    mic, agent = read_audio(folder / "mic.wav").pcm, read_audio(folder / "agent.wav").pcm
    kept_s = max(len(mic), len(agent)) / 24000
    # it filled: the two WAVs hold the disk's 300,000 bytes, less than one 80 ms frame of each
    # track (3,840 bytes) short; a recording that wrote on would not fit, one that stopped early
    # would leave more free
    on_disk = sum((folder / name).stat().st_size for name in ("mic.wav", "agent.wav"))
    assert 300_000 - 2 * FRAME * 2 < on_disk <= 300_000, f"{on_disk} bytes on a 300,000-byte disk"
    heard_s = len(probe.sessions[-1].inputs) * 0.08
    assert heard_s > kept_s + 2, "the conversation went on past the recording's stop"
    found = entries(folder)
    assert [e["type"] for e in found].count("end") == 1
    assert found[-1]["type"] == "end" and found[-1]["t"] == round(kept_s, 3)
    assert found[-1]["reason"] == "the recording stopped here (No space left on device)"
    assert all(e["t"] <= kept_s for e in found)  # nothing said after the audio's end
    markdown = (folder / MARKDOWN_NAME).read_text()
    assert markdown.endswith(" · the recording stopped here (No space left on device)_\n")


def test_a_snapshot_has_tracks_of_one_length_and_a_transcript_ended_like_a_finished_one(
    tmp_path,
):
    """`w` without continuous recording copies the session so far: the agent's track, a few
    frames behind the mic's, is padded with silence to the mic's end (as `close` pads it), and
    the copied transcript ends with an `end` entry there, as a finished recording's does."""
    rec = ConversationRecording(tmp_path / "live", temporary=True, details={"voice": "NATF2"})
    rng = np.random.default_rng(0)
    mic = rng.uniform(-0.5, 0.5, 12 * FRAME).astype(np.float32)
    agent = rng.uniform(-0.5, 0.5, 10 * FRAME).astype(np.float32)  # 0.16 s behind
    for n in range(12):
        rec.write_mic(mic[n * FRAME : (n + 1) * FRAME])
        if n < 10:
            rec.write_agent(agent[n * FRAME : (n + 1) * FRAME])
            rec.transcript.agent_text(n * 0.08, f" word{n}", n)
    folder = rec.save(tmp_path / "saved")
    rec.close()

    saved_mic, saved_agent = (read_audio(folder / f"{n}.wav").pcm for n in ("mic", "agent"))
    assert len(saved_mic) == len(saved_agent) == 12 * FRAME
    np.testing.assert_allclose(saved_agent[: 10 * FRAME], agent, atol=1.5 / 32767)
    assert not saved_agent[10 * FRAME :].any()  # silence, as the finished recording has
    np.testing.assert_allclose(saved_mic, mic, atol=1.5 / 32767)
    found = entries(folder)
    assert found[-1]["type"] == "end" and found[-1]["t"] == 0.96
    assert [e["type"] for e in found].count("end") == 1
    assert found[-1].keys() == {"t", "wall", "type"}  # as `close` writes it
    assert (folder / MARKDOWN_NAME).read_text().endswith("word9\n")


def test_a_snapshot_mid_conversation_has_tracks_of_one_length(tmp_path):
    """The same through the controller (the `w` key) while a duplex conversation runs."""
    config = ControllerConfig(mode="duplex", save_dir=tmp_path / "saved")

    async def main():
        events, probe = Events(), Probe(FakeModel())
        devices = FakeDevices(period_s=0.002)
        conv = create_conversation(probe.loader(), events, config, audio=devices.factory())
        await conv.start()
        await events.wait_for(lambda e: isinstance(e, FrameOut) and e.index >= 20)
        saved = await conv.save_recording()
        await conv.shutdown()
        return saved

    folder = Path(asyncio.run(main()))
    mic, agent = (read_audio(folder / f"{n}.wav").pcm for n in ("mic", "agent"))
    assert len(mic) == len(agent) >= 20 * FRAME
    found = entries(folder)
    assert found[-1]["type"] == "end" and found[-1]["t"] == round(len(mic) / 24000, 3)
    assert all(e["t"] <= found[-1]["t"] for e in found)


def test_transcript_times_are_whole_milliseconds(tmp_path):
    """Every time in the JSONL (`t`, `start_s`, `end_s`) is rounded to the millisecond, for
    every kind of entry, as the sums of 80 ms frames would otherwise write 12.480000000000002."""
    t = TranscriptWriter(tmp_path, "Conversation", {})
    a = b = 0.0
    for frame in range(164):  # a timeline of 80 ms frames: 12.48 and 13.12 with float noise
        a += 0.08 if frame < 156 else 0.0
        b += 0.08
    assert (str(a), str(b)) == ("12.48000000000001", "13.12000000000001")
    t.user_turn(a, b, 8)
    t.reply(a, b, 8, interrupted=True)
    t.user_said(a, b, "hello")
    t.agent_text(a, " hi", 156)
    t.user_text(a, " hello", 156)
    t.note(a, "a note")
    t.close(b)
    raw = (tmp_path / JSONL_NAME).read_text()
    for e in entries(tmp_path):
        for key in ("t", "start_s", "end_s"):
            if key in e:
                assert e[key] in (0.0, 12.48, 13.12), (key, e)
    assert not re.search(r"\.\d{4,}", raw)  # (`wall` too: milliseconds)


def _talk(rec: ConversationRecording, frames: int, with_text: bool = False) -> None:
    loud = np.full(FRAME, 0.1, np.float32)
    for n in range(frames):
        rec.write_mic(loud)
        rec.write_agent(loud)
        if with_text:
            rec.transcript.agent_text(n * 0.08, f" w{n}", n)


def test_w_saves_what_a_full_disk_left_of_a_temporary_recording(tmp_path, monkeypatch):
    """Without --record, the warning said the audio until the full disk was kept, then `w`
    refused ("There is no recording to save") and the exit deleted it. `w` now copies it."""
    import personaplex_tui.audio.wav_writer as wav_writer

    disk = FullDisk(tmp_path / "live", free=60_000)  # about 0.6 s of the two tracks
    monkeypatch.setattr(wav_writer, "open", disk.open, raising=False)
    said: list[str] = []
    rec = ConversationRecording(tmp_path / "live", True, {}, said.append)
    _talk(rec, 20)
    (message,) = said
    assert "(No space left on device); what was recorded until then is kept" in message
    folder = rec.save(tmp_path / "elsewhere")
    rec.close()
    mic, agent = (read_audio(folder / f"{n}.wav").pcm for n in ("mic", "agent"))
    assert 0.3 < len(mic) / 24000 < 0.7 and len(mic) == len(agent)
    found = entries(folder)
    assert [e["type"] for e in found].count("end") == 1 and found[-1]["t"] <= len(mic) / 24000


def test_a_snapshot_that_cannot_be_written_leaves_no_folder(tmp_path):
    """A snapshot cut short by its own disk (here a file-size limit) left a folder with a cut
    mic.wav and nothing else, which looked like a recording."""
    import resource
    import signal

    rec = ConversationRecording(tmp_path / "live", True, {})
    _talk(rec, 40, with_text=True)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))
    try:
        with pytest.raises(RecordingError, match=r"^Could not save the recording in .*: File too"):
            rec.save(tmp_path / "saved")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    rec.close()
    assert not any((tmp_path / "saved").iterdir())


def test_a_transcript_whose_first_line_does_not_fit_is_said_once(tmp_path, monkeypatch):
    import personaplex_tui.conversation.transcript_writer as transcript_writer

    disk = FullDisk(tmp_path / "rec", free=100)  # the session line does not fit
    monkeypatch.setattr(transcript_writer, "open", disk.open, raising=False)
    said: list[str] = []
    rec = ConversationRecording(tmp_path / "rec", False, {"voice": "NATF2"}, said.append)
    rec.close()
    (message,) = said
    assert (
        message.startswith("Writing the transcript in") and "(No space left on device)" in message
    )


def test_a_deleted_temporary_recording_is_said_and_w_makes_no_folder(tmp_path):
    """The temporary folder deleted mid-session: `w` said "writing ... failed (the file was
    deleted)" each time, and once every track had failed, named the snapshot's folder as the
    missing one and left it empty; the recording was never said to be stopped."""
    import shutil

    said: list[str] = []
    rec = ConversationRecording(tmp_path / "live", True, {}, said.append)
    _talk(rec, 3)
    shutil.rmtree(tmp_path / "live")
    for _ in range(3):
        with pytest.raises(RecordingError, match=r"^The recording in .* was deleted at "):
            rec.save(tmp_path / "saved")
    rec.close()
    assert len(said) == 1 and "was deleted at" in said[0]
    assert not (tmp_path / "saved").exists() or not any((tmp_path / "saved").iterdir())


def test_a_snapshot_of_a_transcript_that_failed_alone_still_ends(tmp_path):
    """The transcript stopped on its own (an I/O error) while the audio went on: the snapshot's
    transcript had no `end`."""
    rec = ConversationRecording(tmp_path / "live", True, {})
    _talk(rec, 5, with_text=True)
    rec.transcript._sync_failed(OSError(5, "Input/output error"))  # as the sync thread does
    _talk(rec, 5)
    folder = rec.save(tmp_path / "saved")
    rec.close()
    found = entries(folder)
    assert found[-1]["type"] == "end" and found[-1]["t"] == 0.8


def test_a_processed_frame_written_during_a_snapshot_is_not_in_it(tmp_path):
    """`write_mic` writes the processed frame, then the raw one, under two holds of the lock; a
    snapshot between them made mic_processed.wav a frame longer than mic.wav."""
    rec = ConversationRecording(tmp_path / "live", True, {})
    loud = np.full(FRAME, 0.1, np.float32)
    saved: list[Path] = []
    original = rec._write

    def write_after_a_snapshot(pcm, mic):
        if mic and not saved and rec.mic_s >= 2 * FRAME / 24000:
            saved.append(rec.save(tmp_path / "saved"))
        original(pcm, mic)

    rec._write = write_after_a_snapshot
    for _ in range(4):
        rec.write_mic(loud, processed=loud)
        rec.write_agent(loud)
    rec.close()
    lengths = {n: len(read_audio(saved[0] / f"{n}.wav").pcm) for n in ("mic", "agent")}
    assert len(read_audio(saved[0] / "mic_processed.wav").pcm) == lengths["mic"] == 2 * FRAME


def test_markdown_times_never_show_sixty_seconds():
    from personaplex_tui.conversation.transcript_writer import clock

    assert clock(59.96) == "01:00.0" and clock(119.97) == "02:00.0"
    assert clock(3599.96) == "1:00:00.0" and clock(59.94) == "00:59.9"
