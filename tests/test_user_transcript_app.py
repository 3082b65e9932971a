"""The user's transcript, app side: flags and settings, and loading the STT next to PersonaPlex
(a missing or mismatched STT model is one notice and the conversation goes on without it)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from personaplex_tui.events import LoadProgress, Notice
from personaplex_tui.model_loader import ModelLoader
from personaplex_tui.settings import (
    Settings,
    SettingsError,
    load_settings,
    save_settings,
)
from personaplex_tui.settings_flags import add_chat_arguments, settings_from_args
from personaplex_tui.user_transcript import SttChoice, stt_choice
from tests.fake_hub import unreachable_hub
from tests.stt_app import write_pair
from tests.stt_reference import write_tiny_stt_repo


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_chat_arguments(parser)
    return parser.parse_args(list(argv))


def test_on_by_default_and_the_flags_switch_it() -> None:
    assert stt_choice(Settings()) == SttChoice(True, None, None)
    assert SttChoice().source == "kyutai/stt-1b-en_fr"
    off = settings_from_args(parse("--no-user-transcript"), Settings())
    assert off.user_transcript is False
    chosen = settings_from_args(parse("--stt-model", "/x/stt", "--stt-quantize", "8"), off)
    assert stt_choice(chosen) == SttChoice(False, "/x/stt", 8)  # the file's "off" holds
    assert settings_from_args(parse("--user-transcript"), off).user_transcript is True
    with pytest.raises(SystemExit):
        parse("--stt-quantize", "3")


def test_settings_file_keeps_the_choice(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    save_settings(Settings(user_transcript=False, stt_model="me/stt", stt_quantize=4), path)
    text = path.read_text()
    assert "user_transcript = false" in text and 'stt_model = "me/stt"' in text
    assert stt_choice(load_settings(path)) == SttChoice(False, "me/stt", 4)
    path.write_text("stt_quantize = 5\n")
    with pytest.raises(SettingsError, match="STT quantize must be 4, 8 or 16 bits"):
        load_settings(path)
    path.write_text('user_transcript = "yes"\n')
    with pytest.raises(SettingsError, match="user_transcript must be true or false"):
        load_settings(path)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"))


def load(persona: Path, stt: SttChoice | None) -> tuple[object, object, list]:
    events: list = []
    loaded, info = ModelLoader(str(persona), stt=stt)(events.append)
    return loaded, info, events


def notices(events: list) -> list[str]:
    return [e.message for e in events if isinstance(e, Notice)]


def test_the_stt_loads_next_to_personaplex(pair) -> None:
    persona, stt = pair
    loaded, info, events = load(persona, SttChoice(model=str(stt)))
    assert loaded.listener is not None and info.user_transcript == str(stt)
    assert not notices(events)
    assert any(isinstance(e, LoadProgress) and "speech-to-text" in e.message for e in events)
    frame = loaded.session(loaded.default_settings(seed=1)).step(
        __import__("numpy").zeros(1920, "float32")
    )
    assert frame.user_text_id is not None and len(frame.end_of_turn) == 4


def test_off_loads_nothing(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    import model.stt

    def boom(*args, **kwargs):
        raise AssertionError("the STT was loaded although the transcript is off")

    monkeypatch.setattr(model.stt, "load_stt", boom)
    persona, _ = pair
    for choice in (None, SttChoice(enabled=False)):
        loaded, info, events = load(persona, choice)
        assert loaded.listener is None and info.user_transcript == "" and not notices(events)


def test_no_stt_downloaded_is_one_notice(
    pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default STT repo, not in the cache and the hub unreachable: the hub code runs, fails,
    and the model loads without the user's transcript."""
    unreachable_hub(monkeypatch, tmp_path)
    persona, _ = pair
    loaded, info, events = load(persona, SttChoice())
    assert loaded.listener is None and info.user_transcript == ""
    (message,) = notices(events)
    assert message.startswith("No transcript of your voice: ")
    assert "kyutai/stt-1b-en_fr" in message and "--stt-model" in message
    assert "\n" not in message and message.endswith(".")


def test_the_notice_says_how_to_stop_looking_for_an_stt_that_is_not_there(
    pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline without the STT, the chat's notice came at every start and named only ways to get
    the model (--stt-model PATH, connect and retry), not how to go without it."""
    from personaplex_tui.cli import build_parser
    from personaplex_tui.events import with_hint

    unreachable_hub(monkeypatch, tmp_path)
    persona, _ = pair
    _, _, events = load(persona, SttChoice())
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert notice.hint == (
        "To stop looking for it, switch Your transcript off in the settings (s), or start with "
        "--no-user-transcript."
    )
    assert with_hint(notice.message, notice.hint).endswith(f". {notice.hint}")
    assert build_parser().parse_args(["--no-user-transcript"]).user_transcript is False


@pytest.mark.parametrize("case", ["missing", "other mimi", "broken"])
def test_a_bad_stt_model_is_one_notice(pair, tmp_path: Path, case: str) -> None:
    persona, _ = pair
    folder = tmp_path / "stt"
    if case == "other mimi":
        write_tiny_stt_repo(folder, seed=9)
    elif case == "broken":
        write_tiny_stt_repo(folder, seed=9)
        (folder / "model.safetensors").write_bytes(b"not safetensors")
    loaded, _, events = load(persona, SttChoice(model=str(folder)))
    (message,) = notices(events)
    assert loaded.listener is None
    assert message.startswith("No transcript of your voice: ") and message.endswith(".")
    assert "\n" not in message and "Traceback" not in message
    if case == "other mimi":
        assert "another Mimi" in message


def test_the_stt_is_quantized_to_8_bits_on_cuda_unless_the_user_says_otherwise():
    from personaplex_tui.user_transcript import stt_bits

    assert stt_bits(None, cuda=True) == 8  # the CUDA kernel needs quantized projections
    assert stt_bits(None, cuda=False) is None  # Metal and the CPU keep the floats
    assert stt_bits(16, cuda=True) is None
    assert stt_bits(4, cuda=False) == 4 and stt_bits(8, cuda=True) == 8
    parse_16 = settings_from_args(parse("--stt-quantize", "16"), Settings())
    assert parse_16.stt_quantize == 16
