"""Text tokens into a transcript with word times (PAD / EPAD / pieces as Kyutai's STT writes them)."""

from __future__ import annotations

from model.stt.words import TranscriptBuilder, Word

PIECES = {10: " Hello", 11: " wor", 12: "ld", 13: ",", 14: " there", 15: " "}
PAD, EPAD = 3, 0


def build(track: dict[int, int], frames: int, lag: int = 6) -> tuple[TranscriptBuilder, list[str]]:
    builder = TranscriptBuilder(lambda t: PIECES.get(t, ""), lag_frames=lag)
    added = [builder.feed(f, track.get(f, PAD)) for f in range(frames)]
    return builder, added


TRACK = {6: EPAD, 7: 10, 9: EPAD, 10: 11, 11: 12, 12: 13, 16: 14}


def test_words_start_at_their_epad_and_end_at_the_next_word() -> None:
    builder, added = build(TRACK, 20)
    assert builder.text == "Hello world, there"
    assert "".join(added) == "Hello world, there"  # what a live view prints, piece by piece
    assert builder.words == [
        Word("Hello", 0.0, 0.24),
        Word("world,", 0.24, 0.8),  # "there" came with no EPAD: it starts at its first piece
        Word("there", 0.8, None),  # open until the transcript is finished
    ]
    assert builder.finish()[-1] == Word("there", 0.8, 0.88)


def test_times_never_go_below_zero_and_follow_the_lag() -> None:
    builder, _ = build({1: EPAD, 2: 10}, 5, lag=6)
    assert builder.finish() == [Word("Hello", 0.0, 0.0)]
    builder, _ = build({1: EPAD, 2: 10}, 5, lag=0)
    assert builder.finish() == [Word("Hello", 0.08, 0.24)]


def test_padding_and_a_lone_space_piece_add_no_word() -> None:
    builder, added = build({3: 15, 5: EPAD, 6: 12}, 10)
    assert builder.words == [Word("ld", 0.0, None)]  # joined to the space piece's empty word
    assert builder.text == "ld" and added[3] == ""  # a leading space is dropped
    assert build({}, 30)[0].finish() == []
