"""Device streams driven through fake PortAudio streams: 24 kHz and resampled 48 kHz paths,
device selection and its errors, the devices table."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from personaplex_tui.audio import (
    AudioDeviceError,
    DeviceInfo,
    MicStream,
    SpeakerStream,
    devices_table,
    find_device,
    make_mic,
    read_audio,
    resample,
)
from personaplex_tui.audio.devices import device_choices

AUDIO = Path(__file__).parent / "data" / "audio"


class Flags:
    """What PortAudio passes as `status`."""

    def __init__(self, input_overflow=False, output_underflow=False):
        self.input_overflow = input_overflow
        self.output_underflow = output_underflow


class FakePortAudio:
    """Stands in for sounddevice.InputStream/OutputStream: records the settings and callback."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.kwargs: dict = {}
        self.started = self.closed = False

    def __call__(self, **kwargs):
        self.kwargs = kwargs
        if self.fail:
            raise self.fail
        return self

    @property
    def callback(self):
        return self.kwargs["callback"]

    def start(self):
        self.started = True

    def stop(self):
        pass

    def close(self):
        self.closed = True


def best_lag_corr(x: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The delay of `ref` inside `x` (0..max_lag) and the correlation coefficient there."""
    size = 1 << (len(x) + len(ref)).bit_length()
    xc = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(xc[: max_lag + 1]))
    n = min(len(x) - lag, len(ref))
    return lag, float(np.corrcoef(x[lag : lag + n], ref[:n])[0, 1])


def speech() -> np.ndarray:
    return read_audio(AUDIO / "shipping.wav").pcm


def test_mic_at_24k_passes_frames_through():
    fake = FakePortAudio()
    mic = MicStream(24000, device=3, device_name="Fake Mic", stream_factory=fake)
    mic.start()
    assert fake.started and fake.kwargs["samplerate"] == 24000 and fake.kwargs["blocksize"] == 1920
    assert fake.kwargs["channels"] == 1 and fake.kwargs["dtype"] == "float32"
    assert fake.kwargs["device"] == 3 and "latency" not in fake.kwargs  # PortAudio's default
    pcm = speech()[: 1920 * 5]
    for i in range(5):
        fake.callback(pcm[i * 1920 : (i + 1) * 1920, None], 1920, None, Flags())
    frames = [mic.read_frame(timeout=0.1) for _ in range(5)]
    np.testing.assert_array_equal(np.concatenate(frames), pcm)
    assert mic.read_frame(timeout=0.01) is None
    mic.close()
    assert fake.closed and mic.finished


def test_mic_on_a_48k_device_resamples_to_24k():
    fake = FakePortAudio()
    mic = MicStream(48000, device_name="Fake 48k", latency="low", stream_factory=fake)
    mic.start()
    assert fake.kwargs["samplerate"] == 48000 and fake.kwargs["blocksize"] == 3840
    assert fake.kwargs["latency"] == "low"
    ref = speech()
    at48 = resample(ref, 24000, 48000)
    n = len(at48) // 3840
    out = []
    for i in range(n):  # one callback, then the consumer takes one frame, like real time
        fake.callback(at48[i * 3840 : (i + 1) * 3840, None], 3840, None, Flags())
        f = mic.read_frame(timeout=0.1)
        assert f is not None and f.shape == (1920,) and f.dtype == np.float32
        out.append(f)
    got = np.concatenate(out)
    lag, corr = best_lag_corr(got, ref, 2000)
    assert corr > 0.99
    assert abs(lag - mic._resampler.latency_samples) <= 2  # the latency it announces


def test_mic_overflow_drops_oldest_and_counts():
    fake = FakePortAudio()
    mic = MicStream(24000, capacity_frames=4, stream_factory=fake)
    mic.start()
    for i in range(6):
        fake.callback(np.full((1920, 1), i, np.float32), 1920, None, Flags(input_overflow=i == 5))
    assert mic.overruns == 2 and mic.dropped_samples == 2 * 1920 and mic.device_overflows == 1
    assert [mic.read_frame(0)[0] for _ in range(4)] == [2, 3, 4, 5]


def test_speaker_prebuffers_then_plays_and_never_repeats_stale_audio():
    fake = FakePortAudio()
    spk = SpeakerStream(24000, device_name="Fake Out", stream_factory=fake)
    spk.start()

    def callback() -> np.ndarray:
        out = np.full((1920, 1), 0.9, np.float32)  # stale contents of the device buffer
        fake.callback(out, 1920, None, Flags())
        return out[:, 0]

    for v in (0.1, 0.2):
        spk.write_frame(np.full(1920, v, np.float32))
        assert not callback().any()
    spk.write_frame(np.full(1920, 0.3, np.float32))
    assert np.allclose(callback(), 0.1) and spk.stats().playing
    callback()
    callback()
    assert not callback().any() and spk.stats().underruns == 1
    spk.close()
    assert fake.closed


def test_speaker_on_a_48k_device_resamples_from_24k():
    fake = FakePortAudio()
    spk = SpeakerStream(48000, device_name="Fake 48k", stream_factory=fake)
    spk.start()
    assert fake.kwargs["samplerate"] == 48000 and fake.kwargs["blocksize"] == 3840
    ref = speech()
    frames = [ref[i : i + 1920] for i in range(0, len(ref) - 1919, 1920)]
    played = []
    for i, f in enumerate(frames):
        assert spk.write_frame(f)
        out = np.zeros((3840, 1), np.float32)
        fake.callback(out, 3840, None, Flags())
        if i < 2:  # frames 1 and 2 queued: still pre-buffering
            assert not out.any() and not spk.stats().playing
        played.append(out[:, 0].copy())
    assert spk.stats().playing and spk.stats().underruns == 0
    got = np.concatenate(played)
    expected = resample(ref[: len(frames) * 1920], 24000, 48000)
    lag, corr = best_lag_corr(got, expected, 12000)
    assert corr > 0.99
    # Two blocks of pre-buffer silence plus the resampler's announced latency.
    assert abs(lag - (2 * 3840 + spk._resampler.latency_samples)) <= 4


def test_busy_device_gives_one_sentence_naming_it():
    fake = FakePortAudio(fail=RuntimeError("Device unavailable [PaErrorCode -9985]"))
    mic = MicStream(24000, device=5, device_name="USB Headset", stream_factory=fake)
    with pytest.raises(AudioDeviceError) as info:
        mic.start()
    assert str(info.value) == (
        "The input device 'USB Headset' could not be opened "
        "(Device unavailable [PaErrorCode -9985]); it may be busy, unplugged or not support "
        "mono audio."
    )


DEVICES = [
    DeviceInfo(0, "Built-in Microphone", "Core Audio", 1, 0, 48000.0, is_default_input=True),
    DeviceInfo(1, "Built-in Output", "Core Audio", 0, 2, 44100.0, is_default_output=True),
    DeviceInfo(2, "USB Headset", "Core Audio", 1, 2, 48000.0),
    DeviceInfo(3, "usb headset", "Core Audio", 1, 0, 16000.0),
]


def test_find_device_by_default_index_and_name():
    assert find_device(None, "input", DEVICES).index == 0
    assert find_device("default", "output", DEVICES).index == 1
    assert find_device(2, "output", DEVICES).name == "USB Headset"
    assert find_device("2", "input", DEVICES).index == 2
    assert find_device("headset", "output", DEVICES).index == 2  # only 2 has outputs
    assert find_device("usb headset", "input", DEVICES).index == 3  # exact name wins
    assert find_device("BUILT-IN MICROPHONE", "input", DEVICES).index == 0  # then any case
    assert find_device("built-in", "input", DEVICES).index == 0


@pytest.mark.parametrize(
    ("spec", "direction", "message"),
    [
        (
            "Scarlett",
            "input",
            "No input device matches 'Scarlett' (run `ppx-tui devices` to list them).",
        ),
        (7, "input", "There is no sound device number 7 (run `ppx-tui devices` to list them)."),
        (0, "output", "Sound device 0 ('Built-in Microphone') has no output channels."),
        (  # the name of an input-only device: said so, not "no device matches"
            "Microphone",
            "output",
            "Sound device 0 ('Built-in Microphone') has no output channels (run `ppx-tui "
            "devices` to list them).",
        ),
        # a digit to str.isdigit, not to int(): it was a ValueError (a traceback)
        (
            "\u00b2",
            "input",
            "No input device matches '\u00b2' (run `ppx-tui devices` to list them).",
        ),
        # an Arabic-Indic 2: int() took it as device 2
        (
            "\u0662",
            "input",
            "No input device matches '\u0662' (run `ppx-tui devices` to list them).",
        ),
        # 2's name and 3's in other cases: device 2 was picked, as listed first
        (
            "USB HEADSET",
            "input",
            "'USB HEADSET' matches 2 input devices: 2 'USB Headset', 3 'usb headset'; give the "
            "name in its exact case, or its number (run `ppx-tui devices` to list them).",
        ),
    ],
)
def test_find_device_errors(spec, direction, message):
    assert refusal(spec, direction, DEVICES) == message


def refusal(spec, direction, devices) -> str:
    """The sentence `find_device` refuses `spec` with."""
    with pytest.raises(AudioDeviceError) as info:
        find_device(spec, direction, devices)
    return str(info.value)


CARDS = [
    DeviceInfo(0, "MacBook Pro Microphone", "Core Audio", 1, 0, 48000.0, is_default_input=True),
    DeviceInfo(1, "USB Audio CODEC", "Core Audio", 1, 2, 48000.0),
    DeviceInfo(2, "USB PnP Sound Device", "Core Audio", 1, 2, 44100.0),
    DeviceInfo(3, "Speakers (Realtek)", "MME", 0, 2, 44100.0, is_default_output=True),
    DeviceInfo(4, "Speakers (Realtek)", "WASAPI", 0, 2, 48000.0),
    DeviceInfo(5, "Studio Mic", "Core Audio", 1, 0, 48000.0),
    DeviceInfo(6, "Studio Mic 2", "Core Audio", 1, 0, 48000.0),
]


@pytest.mark.parametrize(
    ("spec", "direction", "message"),
    [
        (
            "usb",
            "input",
            "'usb' matches 2 input devices: 1 'USB Audio CODEC', 2 'USB PnP Sound Device'; "
            "give more of the name, or its number (run `ppx-tui devices` to list them).",
        ),
        (
            "USB",
            "output",
            "'USB' matches 2 output devices: 1 'USB Audio CODEC', 2 'USB PnP Sound Device'; "
            "give more of the name, or its number (run `ppx-tui devices` to list them).",
        ),
    ],
)
def test_a_name_that_several_devices_match_is_one_sentence_naming_them(spec, direction, message):
    """An ambiguous name picked the first device listed, without a word."""
    assert refusal(spec, direction, CARDS) == message


def test_one_card_under_several_host_apis_is_the_default_apis():
    """The settings store a device's name; one card listed under two host APIs (as on Windows)
    must stay usable by it: the default device if it is one of them, else the one in the default
    device's host API. Two cards of one name under one host API are refused."""
    assert find_device("Speakers (Realtek)", "output", CARDS).index == 3  # the default output
    mics = [*CARDS, DeviceInfo(7, "Studio Mic", "WASAPI", 1, 0, 48000.0)]
    assert find_device("Studio Mic", "input", mics).index == 5  # Core Audio, as the default
    twins = [*CARDS, DeviceInfo(7, "USB PnP Sound Device", "Core Audio", 1, 2, 44100.0)]
    with pytest.raises(AudioDeviceError) as info:
        find_device("USB PnP Sound Device", "input", twins)
    assert str(info.value) == (
        "'USB PnP Sound Device' matches 2 input devices: 2 'USB PnP Sound Device' (Core Audio), "
        "7 'USB PnP Sound Device' (Core Audio); give 'USB PnP Sound Device #1' or '#2' (in the "
        "order listed), or its number (run `ppx-tui devices` to list them)."
    )


def test_identical_cards_are_told_apart_by_their_place_among_that_name():
    """Two cards of one name under one host API: 'name #k' is the k-th in PortAudio's order,
    counted among those of the default device's host API, and stays right when another
    device comes before them (their numbers change, their places do not)."""
    twins = [
        *CARDS,
        DeviceInfo(7, "USB PnP Sound Device", "Core Audio", 1, 2, 44100.0),
        DeviceInfo(8, "USB PnP Sound Device", "MME", 1, 2, 44100.0),  # 7 under another API
    ]
    assert find_device("USB PnP Sound Device #1", "input", twins).index == 2
    assert find_device("USB PnP Sound Device #2", "input", twins).index == 7
    assert find_device("usb pnp sound device #2", "input", twins).index == 7  # in any case
    webcam = DeviceInfo(0, "Webcam Mic", "Core Audio", 1, 0, 16000.0)  # plugged in since
    more = [webcam, *(replace(d, index=d.index + 1) for d in twins)]
    assert find_device("USB PnP Sound Device #2", "input", more).index == 8
    assert refusal("USB PnP Sound Device #3", "input", twins) == (
        "There are 2 input devices named 'USB PnP Sound Device', so there is no "
        "'USB PnP Sound Device #3' (unplugged? run `ppx-tui devices` to list them)."
    )
    assert refusal("Studio Mic #2", "input", CARDS) == (
        "There is one input device named 'Studio Mic', so there is no 'Studio Mic #2' "
        "(unplugged? run `ppx-tui devices` to list them)."
    )
    assert find_device("Studio Mic #1", "input", CARDS).index == 5
    # a device that bears the whole name is that device, not a place among others
    named = [*twins, DeviceInfo(9, "USB PnP Sound Device #2", "Core Audio", 1, 0, 48000.0)]
    assert find_device("USB PnP Sound Device #2", "input", named).index == 9
    assert refusal("Scarlett #2", "input", CARDS) == (
        "No input device matches 'Scarlett #2' (run `ppx-tui devices` to list them)."
    )


def test_device_choices_name_each_device_as_find_device_takes_it_back():
    twins = [
        *CARDS,
        DeviceInfo(7, "USB PnP Sound Device", "Core Audio", 1, 2, 44100.0),
        DeviceInfo(8, "2", "Core Audio", 1, 0, 48000.0),  # a name that reads as a number
    ]
    choices = device_choices(twins, "input")
    assert choices == [
        "MacBook Pro Microphone",
        "USB Audio CODEC",
        "USB PnP Sound Device #1",
        "Studio Mic",
        "Studio Mic 2",
        "USB PnP Sound Device #2",
        "8",
    ]
    assert [find_device(c, "input", twins).index for c in choices] == [0, 1, 2, 5, 6, 7, 8]
    # one card under two host APIs is listed once, by its name (the default output's)
    choices = device_choices(CARDS, "output")
    assert choices == ["USB Audio CODEC", "USB PnP Sound Device", "Speakers (Realtek)"]
    assert [find_device(c, "output", CARDS).index for c in choices] == [1, 2, 3]


def test_an_exact_name_is_taken_though_it_is_a_part_of_another():
    assert find_device("Studio Mic", "input", CARDS).index == 5
    assert find_device("studio mic", "input", CARDS).index == 5
    assert find_device("Mic 2", "input", CARDS).index == 6
    assert find_device("pnp", "output", CARDS).index == 2


def test_many_matches_are_counted_and_the_first_six_named():
    many = [DeviceInfo(i, f"hw:{i},0 Analog", "ALSA", 2, 2, 48000.0) for i in range(9)]
    with pytest.raises(AudioDeviceError) as info:
        find_device("analog", "input", many)
    message = str(info.value)
    assert message.startswith("'analog' matches 9 input devices: 0 'hw:0,0 Analog', ")
    assert "5 'hw:5,0 Analog', and 3 more; give more of the name" in message
    assert "6 'hw:6,0" not in message and len(message.splitlines()) == 1


def test_the_chats_devices_refuse_an_ambiguous_name_in_both_directions():
    from personaplex_tui.conversation import AudioFactory, ControllerConfig

    factory = AudioFactory(devices=lambda: CARDS, rate=lambda info, direction: 48000)
    for open_side, config in (
        (factory.open_mic, ControllerConfig(input_device="usb")),
        (factory.open_speaker, ControllerConfig(output_device="usb")),
    ):
        with pytest.raises(AudioDeviceError, match=r"^'usb' matches 2 (in|out)put devices: 1 "):
            open_side(config)


def test_the_chat_without_a_sound_card_names_the_file_flags_to_use_instead(tmp_path):
    """No device at all (a server, a container): the chat said to choose one by name or index
    from `ppx-tui devices`, which lists none. It names its file flags instead, both when both
    sides lack a device."""
    from personaplex_tui.conversation import AudioFactory, ControllerConfig

    none_here = AudioFactory(devices=list, rate=lambda info, direction: 48000)
    prefix = "PortAudio finds none (no sound card, or no sound server); to talk without one, "
    mic_flag = "--input-file WAV (a recording as the mic)"
    speaker_flag = "--output-file WAV (the agent's voice written to a file)"
    wav = tmp_path / "a.wav"
    for open_side, config, expected in (
        (
            none_here.open_mic,
            ControllerConfig(),
            f"There is no sound device: {prefix}start the chat with {mic_flag} and {speaker_flag}.",
        ),
        (
            none_here.open_mic,
            ControllerConfig(output_file=wav),
            f"There is no input device: {prefix}start the chat with {mic_flag}.",
        ),
        (
            none_here.open_speaker,
            ControllerConfig(input_file=wav),
            f"There is no output device: {prefix}start the chat with {speaker_flag}.",
        ),
    ):
        with pytest.raises(AudioDeviceError) as refused:
            open_side(config)
        assert str(refused.value) == expected
    # a device named (the settings file's, once the flags were checked): the same sentence
    with pytest.raises(AudioDeviceError) as refused:
        none_here.open_speaker(ControllerConfig(input_file=wav, output_device="USB"))
    assert str(refused.value) == (
        f"There is no output device: {prefix}start the chat with {speaker_flag}."
    )
    speakers_only = [d for d in DEVICES if not d.is_input]
    only_out = AudioFactory(devices=lambda: speakers_only, rate=lambda info, direction: 48000)
    with pytest.raises(AudioDeviceError) as refused:
        only_out.open_mic(ControllerConfig())
    assert (
        str(refused.value) == f"There is no input device: {prefix}start the chat with {mic_flag}."
    )
    # devices, none of them the default: choosing one of them is still the way
    no_default = [d for d in DEVICES if not d.is_default_input]
    chooser = AudioFactory(devices=lambda: no_default, rate=lambda info, direction: 48000)
    with pytest.raises(AudioDeviceError, match=r"^There is no default input device; choose one"):
        chooser.open_mic(ControllerConfig())


def test_sound_check_refuses_an_ambiguous_device_in_one_line_with_exit_code_2(monkeypatch, capsys):
    from personaplex_tui.audio import devices, streams
    from personaplex_tui.cli import main

    monkeypatch.setattr(devices, "list_devices", lambda: CARDS)
    monkeypatch.setattr(streams, "choose_rate", lambda info, direction: 48000)
    for flag, direction in (("--input-device", "input"), ("--output-device", "output")):
        assert main(["sound-check", flag, "usb"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ppx-tui: 'usb' matches 2 {direction} devices: 1 'USB Audio ")
        assert len(err.splitlines()) == 1


def test_no_default_device():
    with pytest.raises(AudioDeviceError) as info:
        find_device(None, "input", [d for d in DEVICES if not d.is_default_input])
    assert str(info.value).startswith("There is no default input device;")


def test_no_device_of_a_direction_at_all_says_so_instead_of_asking_to_choose_one():
    from personaplex_tui.audio.errors import NoDeviceError

    for spec in (None, 0, "USB"):  # a device asked for by number or name: none at all either
        with pytest.raises(NoDeviceError) as info:
            find_device(spec, "output", [])
        assert str(info.value) == (
            "There is no output device: PortAudio finds no sound device at all, no sound card or "
            "no sound server."
        )
    with pytest.raises(NoDeviceError) as info:
        find_device(None, "input", [d for d in DEVICES if not d.is_input])
    assert str(info.value) == "There is no input device: PortAudio lists only output devices."


def test_sound_check_without_any_sound_device_points_to_its_offline_mode(monkeypatch, capsys):
    from personaplex_tui.audio import devices
    from personaplex_tui.cli import main

    monkeypatch.setattr(devices, "list_devices", lambda: [])
    assert main(["sound-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "ppx-tui: There is no input device: PortAudio finds no sound device at all, no sound card "
        "or no sound server; without one, sound-check runs offline on two recordings: --far WAV "
        "--mic WAV --output WAV."
    )


def test_the_chat_without_any_sound_device_names_the_file_flags_for_a_device_flag(monkeypatch):
    import argparse

    from personaplex_tui.audio import devices
    from personaplex_tui.commands.chat import check_devices
    from personaplex_tui.settings import Settings

    monkeypatch.setattr(devices, "list_devices", lambda: [])
    none_at_all = "There is no output device: PortAudio finds no sound device at all, no sound card"
    flags = argparse.Namespace(input_device=None, output_device="USB")
    # the banner's sentence (`without_devices`): each side without a device or a file
    banner = "PortAudio finds none (no sound card, or no sound server); to talk without one, "
    with pytest.raises(AudioDeviceError) as info:
        check_devices(flags, Settings(), Path("settings.toml"))
    assert str(info.value) == (
        f"There is no sound device: {banner}start the chat with --input-file WAV (a recording as "
        "the mic) and --output-file WAV (the agent's voice written to a file)."
    )
    with pytest.raises(AudioDeviceError) as info:
        check_devices(flags, Settings(input_file=Path("q.wav")), Path("settings.toml"))
    assert str(info.value) == (
        f"There is no output device: {banner}start the chat with "
        "--output-file WAV (the agent's voice written to a file)."
    )
    # one named only in the settings file is a warning, as before
    stored = Settings(output_device="USB")
    no_flags = argparse.Namespace(input_device=None, output_device=None)
    [warning] = check_devices(no_flags, stored, Path("settings.toml"))
    assert warning.startswith(f"settings.toml: {none_at_all} or no sound server; plug it in")


def test_missing_device_through_real_portaudio():
    from personaplex_tui.audio.devices import list_devices

    with pytest.raises(AudioDeviceError) as info:
        make_mic("No Such Microphone 1234")
    # a machine with sound devices (a sound server's) lists them; one without says it has none
    assert str(info.value) == (
        "No input device matches 'No Such Microphone 1234' (run `ppx-tui devices` to list them)."
        if list_devices()
        else "There is no input device: PortAudio finds no sound device at all, no sound card or "
        "no sound server."
    )


def test_devices_table_marks_defaults():
    console = Console(width=120, record=True)
    console.print(devices_table(DEVICES))
    text = console.export_text()
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") > 4}
    assert "input" in lines["Built-in Microphone"] and "output" not in lines["Built-in Microphone"]
    assert "output" in lines["Built-in Output"]
    assert "48 kHz" in lines["USB Headset"] and "44.1 kHz" in lines["Built-in Output"]
    console = Console(width=120, record=True)
    console.print(devices_table([]))
    assert "PortAudio found no sound device." in console.export_text()


def test_devices_without_any_says_what_to_use_instead_of_an_empty_table(monkeypatch, capsys):
    from personaplex_tui.audio import devices
    from personaplex_tui.cli import main

    monkeypatch.setattr(devices, "list_devices", lambda: [])
    assert main(["devices"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out == (
        "PortAudio found no sound device (no sound card, or no sound server). Without one, the "
        "chat takes --input-file WAV and --output-file WAV, respond --output WAV, and sound-check "
        "runs offline on two recordings (--far WAV --mic WAV --output WAV)."
    )
    assert main(["devices", "--json"]) == 0 and capsys.readouterr().out.strip() == "[]"


def test_devices_shows_what_identical_cards_are_chosen_by(monkeypatch, capsys):
    """Two cards of one name: `ppx-tui devices` printed the name twice, and never the 'NAME #1',
    'NAME #2' that --input-device, --output-device and the settings file take for them."""
    import json

    import personaplex_tui.audio as audio
    from personaplex_tui.cli import main

    twins = [
        *CARDS,
        DeviceInfo(7, "USB PnP Sound Device", "Core Audio", 1, 0, 44100.0),  # input only
        DeviceInfo(8, "USB PnP Sound Device", "Core Audio", 1, 2, 44100.0),
    ]
    monkeypatch.setattr(audio, "list_devices", lambda: twins)
    assert main(["devices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [d.name for d in twins]  # the old fields kept
    assert [r["max_output_channels"] for r in rows] == [d.max_output_channels for d in twins]
    chosen = {r["index"]: r["chosen_by"] for r in rows}
    assert chosen[2] == {"input": "USB PnP Sound Device #1", "output": "USB PnP Sound Device #1"}
    assert chosen[7] == {"input": "USB PnP Sound Device #2", "output": None}
    assert chosen[8] == {"input": "USB PnP Sound Device #3", "output": "USB PnP Sound Device #2"}
    assert chosen[3] == {"input": None, "output": "Speakers (Realtek)"}
    assert chosen[4] == {"input": None, "output": "4"}  # its name chooses 3, the default's
    assert chosen[0] == {"input": "MacBook Pro Microphone", "output": None}
    for direction in ("input", "output"):  # each is the device it is shown for
        for index, row in chosen.items():
            if row[direction] is not None:
                assert find_device(row[direction], direction, twins).index == index
        listed = [row[direction] for row in chosen.values() if row[direction] is not None]
        assert set(device_choices(twins, direction)) <= set(listed)
    console = Console(width=200, record=True)
    console.print(devices_table(twins))
    cells = {
        int(line.split("│")[1]): line.split("│")[3].strip()
        for line in console.export_text().splitlines()
        if line.count("│") > 4
    }
    assert cells[2] == "USB PnP Sound Device #1"
    assert cells[7] == "USB PnP Sound Device #2"
    assert cells[8] == "USB PnP Sound Device #3 (in), USB PnP Sound Device #2 (out)"
    assert cells[1] == "USB Audio CODEC" and cells[4] == "4"
