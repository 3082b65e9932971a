"""Sound devices through PortAudio: list them, pick one by name or index, choose a sample rate.

`sounddevice` is imported only when a function here runs, so importing this module (or the
audio package) never needs PortAudio. PortAudio lists the devices once, at its start: `rescan`
starts it again, while none of our streams is open, to list those plugged in since.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

from personaplex_tui.audio.errors import AudioDeviceError, NoDeviceError
from personaplex_tui.audio.frames import SAMPLE_RATE

Direction = Literal["input", "output"]
MAX_LISTED = 6  # devices named in the sentence for a name that several match
# "USB Audio #2": the second of the devices that bear exactly that name (identical cards)
PLACE = re.compile(r"^(.+?) #([1-9][0-9]{0,3})$")
# PortAudio's start (importing sounddevice) takes 0.05-0.2 s through a PulseAudio server
START_TIMEOUT_S = 5.0
START_HUNG = (
    f"The sound system did not answer within {START_TIMEOUT_S:g} s, so PortAudio could not start; "
    "restart the sound server (pulseaudio or pipewire) and try again."
)
NO_PORTAUDIO = (
    "PortAudio is not installed, so no sound device can be used "
    "(install libportaudio2 on Debian/Ubuntu, portaudio with Homebrew)."
)


RESCAN_FAILED = "PortAudio could not be started again to list the sound devices ({})."


@dataclass
class _Start:
    """The outcome of PortAudio's start, kept for the process: the module or the sentence.
    `users` counts our open streams and the calls into PortAudio under way (`_in_use`): a
    restart (`rescan`) happens only when there are none, and `use` serialises the two."""

    module: ModuleType | None = None
    failure: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    use: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


_started = _Start()


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool = False
    is_default_output: bool = False

    @property
    def is_input(self) -> bool:
        return self.max_input_channels > 0

    @property
    def is_output(self) -> bool:
        return self.max_output_channels > 0

    def channels(self, direction: Direction) -> int:
        return self.max_input_channels if direction == "input" else self.max_output_channels


def portaudio() -> ModuleType:
    """The `sounddevice` module, or an AudioDeviceError when PortAudio is missing or its start
    (or a restart, `rescan`) hung or failed; the first call's outcome is kept for every later
    one."""
    if _started.module is not None and _started.failure is None:
        return _started.module
    with _started.lock:  # (a thread calling meanwhile waits for the first call's outcome)
        if _started.module is None and _started.failure is None:
            _start_portaudio()
    if _started.failure is not None:
        raise AudioDeviceError(_started.failure)
    assert _started.module is not None
    return _started.module


def _start_portaudio() -> None:
    """Import `sounddevice` (its import runs PortAudio's Pa_Initialize) within START_TIMEOUT_S
    (`_in_time`); the outcome is kept in `_started`."""
    found: list[ModuleType] = []

    def start() -> None:
        import sounddevice

        found.append(sounddevice)

    try:
        ended = _in_time(start, "portaudio-start")
    except OSError:  # its library is missing (the import ended)
        _started.failure = NO_PORTAUDIO
        return
    if ended:
        _started.module = found[0]
    else:
        _started.failure = START_HUNG


def _in_time(work: Callable[[], None], name: str) -> bool:
    """Run `work`, a start of PortAudio (Pa_Initialize), on a daemon thread, waiting
    START_TIMEOUT_S for it: False when it did not end. A sound server that hangs (stopped, not
    dead) holds Pa_Initialize inside ALSA's PulseAudio plugin for good, and neither Ctrl+C nor
    any message ever came: the start is left behind, and the process ends without waiting for
    it (`stuck_exit.run_in_time`). A stop signal ends the wait at once (nothing kept then).
    sounddevice points fd 2 at /dev/null during Pa_Initialize: a start left behind gets the
    terminal back here, else the sentence saying so went nowhere; ALSA's and JACK's error lines,
    which that start may still print, are silenced first (`start_noise`)."""
    from personaplex_tui.audio.start_noise import silence_sound_libraries
    from personaplex_tui.stuck_exit import run_in_time

    raised: list[Exception] = []

    def guarded() -> None:
        try:
            work()
        except Exception as e:  # it ended, by raising: handed on below
            raised.append(e)

    stderr = _dup_stderr()
    ended = False
    try:
        ended = run_in_time(guarded, START_TIMEOUT_S, name)
    finally:
        if not ended:  # hung, or a stop signal ended the wait: it may still be listing devices
            silence_sound_libraries()  # (before fd 2 is the terminal again)
        if stderr is not None:
            if not ended:
                os.dup2(stderr, 2)
            os.close(stderr)
    if raised:
        raise raised[0]
    return ended


def rescan() -> bool:
    """Start PortAudio again (sounddevice's `_terminate`, then `_initialize`), so that
    its device list holds the devices plugged in since it started (a model load takes minutes).
    Only while none of our streams is open and no call into PortAudio is under way (stopping
    PortAudio would close a stream), and only once it has started (its start lists what is there
    then); through the first start's time limit and silencing (`_in_time`). A restart that hangs
    or fails is kept, as the first start's outcome is: every later call says so (`portaudio`).
    True when PortAudio was started again."""
    sd = _started.module
    if sd is None:
        return False
    if not _started.use.acquire(timeout=START_TIMEOUT_S):  # another restart, hung
        return False
    try:
        if _started.users or _started.failure is not None:
            return False

        def restart() -> None:
            sd._terminate()
            sd._initialize()

        try:
            ended = _in_time(restart, "portaudio-rescan")
        except Exception as e:  # sounddevice.PortAudioError: it is stopped, or did not start
            reason = str(e).strip().rstrip(".") or type(e).__name__
            _started.failure = RESCAN_FAILED.format(reason)
            return False
        except BaseException:  # a stop signal ended the wait (`Stopped`): it may still run
            _started.failure = RESCAN_FAILED.format("interrupted")
            raise
        if not ended:
            _started.failure = START_HUNG
        return ended
    finally:
        _started.use.release()


@contextmanager
def _in_use() -> Iterator[ModuleType]:
    """PortAudio, not restarted by `rescan` until the block ends."""
    hold_portaudio()
    try:
        assert _started.module is not None
        yield _started.module
    finally:
        let_go_of_portaudio()


def hold_portaudio() -> ModuleType:
    """PortAudio for a stream about to be opened (or a call into it): `rescan` does not restart
    it until `let_go_of_portaudio` (once the stream is closed). Waits for a restart under way;
    AudioDeviceError when PortAudio is missing, or its start or restart hung or failed."""
    sd = portaudio()
    if not _started.use.acquire(timeout=START_TIMEOUT_S + 1):  # a restart's own limit, and more
        raise AudioDeviceError(START_HUNG)
    try:
        if _started.failure is not None:  # a restart that hung or failed
            raise AudioDeviceError(_started.failure)
        _started.users += 1
    finally:
        _started.use.release()
    return sd


def let_go_of_portaudio() -> None:
    """A stream opened after `hold_portaudio` was closed (or failed to open)."""
    with _started.use:
        _started.users -= 1


def _dup_stderr() -> int | None:
    try:
        return os.dup(2)
    except OSError:  # no fd 2 (`entry` reopens it; a caller of our own may not)
        return None


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio knows, with the default input and output marked."""
    with _in_use() as sd:
        try:
            raw = sd.query_devices()
            hostapis = sd.query_hostapis()
            default_in, default_out = _defaults(sd)
        except sd.PortAudioError as e:
            raise AudioDeviceError(f"The sound devices could not be listed: {e}.") from None
    return [
        DeviceInfo(
            index=i,
            name=str(d["name"]),
            hostapi=str(hostapis[d["hostapi"]]["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default_input=i == default_in,
            is_default_output=i == default_out,
        )
        for i, d in enumerate(raw)
    ]


def _defaults(sd: ModuleType) -> tuple[int, int]:
    default_in, default_out = sd.default.device
    return (
        default_in if default_in is not None else -1,
        default_out if default_out is not None else -1,
    )


def find_device(
    spec: str | int | None, direction: Direction, devices: list[DeviceInfo] | None = None
) -> DeviceInfo:
    """The device `spec` names: None = the default, an index, or a case-insensitive name part.

    An exact name wins (case first), then one in any case, then a part of a name; at the first
    of these that any device matches, exactly one must: several are refused (AudioDeviceError,
    one sentence naming them with their numbers), never picked by their order in the list. One
    exact name under several host APIs is one card: the default device's host API decides.
    Identical cards (one exact name twice under that host API) are told apart as 'name #1',
    'name #2' in PortAudio's order (`device_choices`), unless a device bears that whole name.
    Raises AudioDeviceError with one sentence naming the device when there is no such device,
    and NoDeviceError (one) when PortAudio lists no device at all, or none of `direction` for
    the default: choosing one by name or number is then no way out.
    """
    devices = list_devices() if devices is None else devices
    if not devices:  # whatever was asked for: `ppx-tui devices` would list nothing
        raise NoDeviceError(
            f"There is no {direction} device: PortAudio finds no sound device at all, no sound "
            "card or no sound server."
        )
    usable = [d for d in devices if d.channels(direction) > 0]
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "default")):
        default = _default(usable, direction)
        if default is not None:
            return default
        if not usable:  # none to choose from
            other = "output" if direction == "input" else "input"
            raise NoDeviceError(
                f"There is no {direction} device: PortAudio lists only {other} devices."
            )
        raise AudioDeviceError(
            f"There is no default {direction} device; choose one by name or index "
            "(run `ppx-tui devices` to list them)."
        )
    number = isinstance(spec, str) and spec.strip().isascii() and spec.strip().isdigit()
    if isinstance(spec, int) or number:  # ('²'.isdigit() too, but int('²') fails)
        index = int(spec)
        match = next((d for d in devices if d.index == index), None)
        if match is None:
            raise AudioDeviceError(
                f"There is no sound device number {index} (run `ppx-tui devices` to list them)."
            )
        if match.channels(direction) == 0:
            raise AudioDeviceError(
                f"Sound device {index} ('{match.name}') has no {direction} channels."
            )
        return match
    wanted = spec.strip()
    placed = _by_place(wanted, devices, usable, direction)
    if placed is not None:
        return placed
    for exact, matches in (
        (True, lambda name: name == wanted),
        (False, lambda name: name.lower() == wanted.lower()),
        (False, lambda name: wanted.lower() in name.lower()),
    ):
        found = [d for d in usable if matches(d.name)]
        if exact and len(found) > 1:
            found = _one_card_many_apis(found, usable, direction)
        if len(found) == 1:
            return found[0]
        if found:
            raise AudioDeviceError(_ambiguous(wanted, direction, found, twins=exact))
    other = next((d for d in devices if wanted.lower() in d.name.lower()), None)
    if other is not None:  # the name is right, the direction is not
        raise AudioDeviceError(
            f"Sound device {other.index} ('{other.name}') has no {direction} channels "
            "(run `ppx-tui devices` to list them)."
        )
    raise AudioDeviceError(
        f"No {direction} device matches '{spec}' (run `ppx-tui devices` to list them)."
    )


def _one_card_many_apis(
    found: list[DeviceInfo], usable: list[DeviceInfo], direction: Direction
) -> list[DeviceInfo]:
    """Of devices that bear one exact name (one card listed under several host APIs, as on
    Windows): the default device if it is one of them, else those of the default device's host
    API. A name stored in the settings can then still be used; two cards of one name under one
    host API stay ambiguous (see `_by_place` for how to pick one)."""
    default = _default(usable, direction)
    if default in found:
        return [default]
    return _of_default_api(found, default)


def _of_default_api(found: list[DeviceInfo], default: DeviceInfo | None) -> list[DeviceInfo]:
    """Those of `found` under the default device's host API, if any are; else all of them."""
    if default is None:
        return found
    return [d for d in found if d.hostapi == default.hostapi] or found


def _twins(name: str, usable: list[DeviceInfo], direction: Direction) -> list[DeviceInfo]:
    """The usable devices that bear exactly `name`, in PortAudio's order, of the default
    device's host API where some are: what 'name #k' counts among."""
    found = [d for d in usable if d.name == name]
    return _of_default_api(found, _default(usable, direction))


def _by_place(
    wanted: str, devices: list[DeviceInfo], usable: list[DeviceInfo], direction: Direction
) -> DeviceInfo | None:
    """The device 'name #k' stands for: the k-th of the devices that bear exactly that name
    (`_twins`; the name in another case if only one name is so). None when `wanted` is not of
    that form, a device bears `wanted` itself as its name (an exact name wins), or none bears
    the name (then `wanted` is looked for as a name).
    A place past the last of them is refused: the card chosen is not there, and another one
    of the same name is not taken in its stead."""
    form = PLACE.match(wanted)
    if form is None or any(d.name == wanted for d in devices):
        return None
    name, place = form.group(1), int(form.group(2))
    twins = _twins(name, usable, direction)
    in_any_case = {d.name for d in usable if d.name.lower() == name.lower()}
    if not twins and len(in_any_case) == 1:  # typed in another case
        name = in_any_case.pop()
        twins = _twins(name, usable, direction)
    if not twins:
        return None
    if place > len(twins):
        count = "is one" if len(twins) == 1 else f"are {len(twins)}"
        raise AudioDeviceError(
            f"There {count} {direction} device{'s' * (len(twins) > 1)} named '{name}', so "
            f"there is no '{wanted}' (unplugged? run `ppx-tui devices` to list them)."
        )
    return twins[place - 1]


def device_choices(devices: list[DeviceInfo], direction: Direction) -> list[str]:
    """What each `direction` device is chosen by, as the settings screen stores it and
    `find_device` takes it back: its name; 'name #1', 'name #2' for identical cards (the same
    exact name under one host API), which, unlike device numbers, stays right when another
    device comes or goes; its number only where neither names it (a device named '2'). One card
    listed under several host APIs is listed once, as `find_device` takes its name."""
    usable = [d for d in devices if d.channels(direction) > 0]
    choices: list[str] = []
    for d in usable:
        choice = _choice(d, usable, devices, direction)
        if choice is not None and choice not in choices:
            choices.append(choice)
    return choices


def chosen_by(devices: list[DeviceInfo], direction: Direction) -> dict[int, str]:
    """What `ppx-tui devices` shows each `direction` device (by its number) to be chosen by:
    its choice in `device_choices`, or its number for one card's listing under another host API
    than the default's (its name chooses the default's)."""
    usable = [d for d in devices if d.channels(direction) > 0]
    return {d.index: _choice(d, usable, devices, direction) or str(d.index) for d in usable}


def _choice(
    d: DeviceInfo, usable: list[DeviceInfo], devices: list[DeviceInfo], direction: Direction
) -> str | None:
    """`d`'s entry in `device_choices`; None for the same card under another host API (listed
    under the default's)."""
    twins = _twins(d.name, usable, direction)
    if d not in twins:
        return None
    choice = d.name if len(twins) == 1 else f"{d.name} #{twins.index(d) + 1}"
    try:
        named = find_device(choice, direction, devices)
    except AudioDeviceError:
        named = None
    return choice if named == d else str(d.index)


def _default(devices: list[DeviceInfo], direction: Direction) -> DeviceInfo | None:
    """The system's default device of `direction` among `devices`, if it is one of them."""
    flag = "is_default_input" if direction == "input" else "is_default_output"
    return next((d for d in devices if getattr(d, flag)), None)


def _ambiguous(
    wanted: str, direction: Direction, found: list[DeviceInfo], *, twins: bool = False
) -> str:
    """The sentence for a name that several devices match: each with its number, and its host
    API where two of them bear the same name (one card under two host APIs). `twins`: they are
    the identical cards that 'name #k' counts among (`_twins`), and the sentence says so."""
    names = [d.name for d in found]
    shown = [
        f"{d.index} '{d.name}'" + (f" ({d.hostapi})" if names.count(d.name) > 1 else "")
        for d in found[:MAX_LISTED]
    ]
    if len(found) > MAX_LISTED:
        shown.append(f"and {len(found) - MAX_LISTED} more")
    if twins:
        last = "' or '#2'" if len(found) == 2 else f"' to '#{len(found)}'"
        advice = f"give '{found[0].name} #1{last} (in the order listed), or its number"
    elif len(set(names)) < len(names):
        advice = "give its number"
    elif len({n.lower() for n in names}) == 1:
        advice = "give the name in its exact case, or its number"
    else:
        advice = "give more of the name, or its number"
    return (
        f"'{wanted}' matches {len(found)} {direction} devices: {', '.join(shown)}; {advice} "
        "(run `ppx-tui devices` to list them)."
    )


def choose_rate(device: DeviceInfo, direction: Direction, preferred: int = SAMPLE_RATE) -> int:
    """`preferred` if the device takes it for mono float32, else the device's own rate."""
    with _in_use() as sd:
        check = sd.check_input_settings if direction == "input" else sd.check_output_settings
        try:
            check(device=device.index, samplerate=preferred, channels=1, dtype="float32")
            return preferred
        except Exception:  # PortAudioError or ValueError: the device refuses that rate
            return int(round(device.default_samplerate))
