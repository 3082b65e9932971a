"""`ppx-tui` with no subcommand: the chat TUI on the real model, the devices or WAV files.

Mistakes the flags can reveal (an unknown voice, a missing input file, a model folder that does
not exist, a sound device name that matches none, bad numbers) end in one sentence before the
screen opens. Textual and PortAudio are imported only here, when the chat starts.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from personaplex_tui import __version__
from personaplex_tui.checkpoint_voices import check_voice
from personaplex_tui.commands.common import status
from personaplex_tui.commands.paths import check_distinct, check_output_file, check_output_folder
from personaplex_tui.events import EventSink, MemoryUsage
from personaplex_tui.settings import Settings, SettingsStore
from personaplex_tui.settings_flags import add_chat_arguments, resolve_settings
from personaplex_tui.stop_signals import POLICY, signal_name, stopped_sentence

if TYPE_CHECKING:
    from personaplex_tui.conversation import AudioFactory, ConversationController
    from personaplex_tui.engine import ModelLike
    from personaplex_tui.events import LoadProgress, ModelInfo
    from personaplex_tui.tui.app import PersonaPlexApp

log = logging.getLogger(__name__)
Loader = Callable[[Callable[["LoadProgress"], None]], tuple["ModelLike", "ModelInfo"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The chat flags, on the top-level parser."""
    add_chat_arguments(parser)


def check_settings(settings: Settings) -> None:
    """Refuse, in one sentence, what would only fail once the TUI is up."""
    from personaplex_tui.audio import read_audio

    source = settings.input_file
    if source is not None and _is_standard_input(Path(source)):
        from personaplex_tui.commands.common import UsageError

        raise UsageError(standard_input_sentence(source))
    if source is not None and (Path(source).is_file() or Path(source).is_dir()):
        clip = read_audio(source)  # missing, empty, corrupt or not audio: AudioFileError
        if clip.file_warning:  # an Ogg file cut short, an MP3's damaged frames: used, and said
            status(f"ppx-tui: warning: {clip.warning}")
    # (a pipe can be read only once: the conversation reads it, and says what is wrong, and
    # its `FileMic.file_warning` as a notice)
    # Every file the session writes can be written, and none is the input or another output
    # (--output-file over --input-file replaced the question by the agent's voice): said now,
    # not in a banner after loading.
    check_distinct(
        {"--input-file": settings.input_file},
        {"--output-file": settings.output_file, "--timing-log": settings.timing_log},
    )
    if settings.output_file is not None:
        check_output_file(settings.output_file, "the output file", "--output-file", seekable=True)
    if settings.timing_log is not None:
        check_output_file(settings.timing_log, "the timing log", "--timing-log")
    if settings.record_dir is not None:
        check_output_folder(settings.record_dir, "recordings", "--record")
    _check_model(settings.model)
    check_voice(settings.model, settings.session.voice)  # a repo's voices: once it is fetched


def _is_standard_input(path: Path) -> bool:
    """`path` names the standard input: /dev/stdin and its aliases, or the very file that was
    redirected into it (`< talk.wav`)."""
    import os

    if str(path) in ("-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"):
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(0))
    except (OSError, ValueError):  # no standard input, or a path that cannot be looked at
        return False


def standard_input_sentence(source: object) -> str:
    """Why the chat cannot take its audio from standard input (`--input-file -`, /dev/stdin)."""
    # Textual reads the keys from fd 0: it took the audio's bytes for keys, or crashed on them
    return (
        f"--input-file {source} is the standard input, where the chat reads its keys; give "
        "the audio as a file, or a command's output as <(command)."
    )


def check_terminal() -> None:
    """Refuse, in one sentence, a place the chat's screen cannot be drawn: standard output that
    is not a terminal (it drew at 80x24 whatever the window, or into the file), standard input
    that is not one (its bytes would be taken for keys), or a terminal without cursor control
    (TERM=dumb). A monochrome terminal gets no colours (NO_COLOR)."""
    import os
    import sys

    from personaplex_tui.commands.common import UsageError

    if not sys.stdout.isatty():
        raise UsageError(
            "The chat draws its screen on standard output, which is not a terminal here "
            "(redirected to a file or a pipe); run it without redirecting it (--record and "
            "--output-file keep the conversation), or use `ppx-tui respond` for no screen."
        )
    if sys.stdin is None or not sys.stdin.isatty():
        # Textual reads the keys from it: a file's bytes were keys (s, q, w...), or it crashed
        raise UsageError(
            "The chat reads its keys from standard input, which is not a terminal here "
            "(redirected from a file or a pipe); give audio with --input-file FILE instead, or "
            "use `ppx-tui respond` for no screen."
        )
    term = os.environ.get("TERM", "")
    if term == "dumb":
        raise UsageError(
            "The chat needs a terminal with cursor control and TERM=dumb has none; run it in a "
            "terminal emulator, or use `ppx-tui respond` for no screen."
        )
    if term.endswith("-mono") or term.endswith("-m"):
        os.environ.setdefault("NO_COLOR", "1")


def _check_model(spec: str | None) -> None:
    """A --model that names a local path must be a folder (repo ids are fetched in the TUI)."""
    if spec is None or Path(spec).expanduser().is_dir():
        return
    repo_like = spec.count("/") == 1 and not spec.startswith(("/", ".", "~"))
    if not repo_like or Path(spec).expanduser().exists():
        from model.checkpoints.hub import resolve_model
        from personaplex_tui.checkpoint_voices import MODEL_FLAG

        # raises ModelNotFoundError with the sentence for this path
        resolve_model(spec, flag=MODEL_FLAG)


def check_devices(args: argparse.Namespace, settings: Settings, settings_file: Path) -> list[str]:
    """The sound devices named, looked up before the model loads (many seconds to minutes), by
    name only (no stream is opened), through PortAudio's start with its time limit
    (`portaudio`); a side given a file (`--input-file`, `--output-file`) uses no device, and
    with both PortAudio is not started. One the flags name (`--input-device`,
    `--output-device`) must exist: its sentence (AudioDeviceError) ends the chat now. One named
    only in `settings_file` that is not there (unplugged) does not: the settings screen can
    choose another while the model loads, or it can be plugged in (the devices are listed
    again when they are opened); the warnings returned say so, for the terminal and the screen.
    Another device is never opened in its stead without being chosen."""
    named = []  # (the name, its direction, whether a flag gave it)
    for direction, stored, file in (
        ("input", settings.input_device, settings.input_file),
        ("output", settings.output_device, settings.output_file),
    ):
        flag = getattr(args, f"{direction}_device", None)
        spec = flag if flag is not None else stored
        if spec is not None and not file:
            named.append((spec, direction, flag is not None))
    if not named:
        return []
    from personaplex_tui.audio import AudioDeviceError, devices
    from personaplex_tui.audio.errors import NoDeviceError
    from personaplex_tui.commands.device_noise import device_noise_to_log

    try:
        with device_noise_to_log():  # PortAudio's and ALSA's lines: to the log, as in the chat
            listed = devices.list_devices()
    except AudioDeviceError:  # PortAudio missing, or its start hung
        if any(flag for _, _, flag in named):
            raise
        return []  # (the app says so where it opens its devices, as with none named)
    warnings = []
    for spec, direction, flag in sorted(named, key=lambda n: not n[2]):  # the flags' first
        try:
            devices.find_device(spec, direction, listed)
        except AudioDeviceError as err:
            if flag and isinstance(err, NoDeviceError):  # no sound card: the banner's sentence
                from personaplex_tui.conversation.audio_factory import without_devices

                files = (settings.input_file, settings.output_file)
                raise AudioDeviceError(without_devices(direction, listed, *files)) from None
            if flag:
                raise
            warnings.append(stored_device_warning(err, direction, settings_file))
    return warnings


def stored_device_warning(err: Exception, direction: str, settings_file: Path) -> str:
    """The warning for a device of the settings file that cannot be used now (`err` says why)."""
    return (
        f"{settings_file}: {str(err).rstrip('.')}; plug it in, or choose another {direction} "
        "device in the settings (press s) while the model loads."
    )


def device_names() -> tuple[list[str], list[str]]:
    """(inputs, outputs) of the sound devices as the settings screen lists and stores them: a
    name, or 'name #1', 'name #2' for identical cards (`devices.device_choices`); listed again
    by PortAudio (`devices.rescan`), with those plugged in since it started, unless a
    conversation's stream is open."""
    from personaplex_tui.audio import devices

    devices.rescan()
    found = devices.list_devices()
    return devices.device_choices(found, "input"), devices.device_choices(found, "output")


def controller_factory(
    loader: Loader,
    audio: AudioFactory | None = None,
    memory_probe: Callable[[], MemoryUsage | None] | None = None,
    release: Callable[[], None] | None = None,
) -> Callable[[Settings, EventSink], ConversationController]:
    """What the app calls once mounted: the real conversation controller for its settings."""
    from personaplex_tui.conversation import ControllerConfig, create_conversation

    def make(settings: Settings, sink: EventSink) -> ConversationController:
        config = ControllerConfig.from_settings(settings)
        return create_conversation(
            loader, sink, config, audio=audio, memory_probe=memory_probe, release=release
        )

    return make


def build_app(
    settings: Settings,
    *,
    store: SettingsStore | None = None,
    log_path: Path | None = None,
    audio: AudioFactory | None = None,
    loader: Loader | None = None,
    cursor_blink: bool = True,
) -> PersonaPlexApp:
    """The chat app on the real model (`loader`: a `ModelLoader` of the settings' model by
    default)."""
    from personaplex_tui.model_loader import ModelLoader, memory_usage, release_mlx_thread
    from personaplex_tui.tui.app import make_app
    from personaplex_tui.user_transcript import stt_choice

    factory = controller_factory(
        loader
        or ModelLoader(
            settings.model,
            dtype=settings.dtype,
            quantize=settings.quantize,
            voice=settings.session.voice,
            stt=stt_choice(settings),
            sampling=settings.session.sampling,
        ),
        audio,
        memory_usage,
        release_mlx_thread,
    )
    return make_app(
        settings,
        factory,
        store=store,
        list_devices=device_names,
        log_path=log_path,
        cursor_blink=cursor_blink,
    )


def run(args: argparse.Namespace) -> int:
    """Resolve the settings (file, then flags), check them, then run the TUI until quit."""
    from personaplex_tui.logs import setup_logging
    from personaplex_tui.stderr_capture import stderr_to_file
    from personaplex_tui.stuck_exit import leave_without_waiting, run_app

    settings, store = resolve_settings(args)
    for warning in store.warnings:  # unknown keys in the settings file, said once
        status(f"ppx-tui: warning: {warning}")
    check_settings(settings)
    check_terminal()
    # before the model loads, which takes many seconds: a flag's missing device ends the chat,
    # the settings file's is a warning (here, and on the screen with the file's others)
    for warning in check_devices(args, settings, store.path):
        status(f"ppx-tui: warning: {warning}")
        store.warnings.append(warning)
    log_path = setup_logging()
    log.info("ppx-tui %s: %s", __version__, settings)
    with stderr_to_file(log_path):
        app = build_app(settings, store=store, log_path=log_path)
        # a signal quits as `q` does; a second one while it stops leaves without waiting
        with POLICY.deferred(app.stop_for_signal, repeats=True):
            run_app(app)  # app.run(), not waiting at its end for what did not stop
    if app.shutdown_incomplete:  # first: a Ctrl+C from here on must not leave us waiting
        leave_without_waiting()  # the console script ends the process at once (os._exit)
    lines = after_exit_lines(settings)
    if app.crashed:  # under Textual's traceback (a bug report); the files were finished anyway
        lines.insert(0, f"ppx-tui: the chat stopped on a bug (above); its log is {log_path}.")
    lines += [f"ppx-tui: {p}" for p in getattr(app.controller, "file_problems", ())]
    if app.load_error is not None:
        lines.append(f"ppx-tui: {app.load_error}")
    if app.stop_signal is not None:
        log.info("stopped by %s", signal_name(app.stop_signal))
        lines.append(f"ppx-tui: {stopped_sentence(app.stop_signal)}")
    left_by = app.stopping.left_by  # a second Ctrl+C did not wait for the shutdown
    if app.shutdown_incomplete:  # its threads would keep the process alive: not waited for
        lines.append(f"ppx-tui: {stuck_sentence(left_by)}")
    try:
        for line in lines:
            status(line)
    except OSError:  # the terminal is gone (SIGHUP): the log has the story
        log.info("the terminal is gone: %s", " / ".join(lines))
    if app.shutdown_incomplete:
        abandon = getattr(app.controller, "abandon", None)  # (the real conversation's)
        if abandon is not None:  # the transcript's end, which its shutdown did not write
            abandon(f"ppx-tui exited before its shutdown finished ({stuck_reason(left_by)})")
    return app.exit_code or int(app.return_code or 0)  # (1 after a crash)


def stuck_sentence(left_by: int | None = None) -> str:
    """What the terminal is told when the conversation did not stop in time, or when a second
    Ctrl+C (`left_by`: its signal) left without waiting for it."""
    kept = "(recordings keep every frame written until then)."
    if left_by is not None:
        return f"{stuck_reason(left_by)} {kept}"
    return f"{stuck_reason(None)}; ppx-tui exits without waiting for it {kept}"


def stuck_reason(left_by: int | None) -> str:
    """Why the conversation was left behind (the start of `stuck_sentence`)."""
    from personaplex_tui.tui.app import SHUTDOWN_TIMEOUT_S
    from personaplex_tui.tui.shutdown_wait import interrupt_name

    if left_by is not None:
        return (
            f"stopped at {interrupt_name(left_by)} while stopping, without waiting for the model "
            "and the audio devices to stop"
        )
    return f"the model or an audio device did not stop within {SHUTDOWN_TIMEOUT_S:g} s"


def after_exit_lines(settings: Settings) -> list[str]:
    """Where the files of the session are, for the terminal once the screen is gone."""
    lines = []
    if settings.record_dir and Path(settings.record_dir).is_dir():
        lines.append(f"ppx-tui: recordings are in {settings.record_dir}")
    if settings.output_file and _has_audio(Path(settings.output_file)):
        lines.append(f"ppx-tui: the agent's audio is in {settings.output_file}")
    log = settings.timing_log
    if log and Path(log).is_file() and Path(log).stat().st_size > 0:
        lines.append(f"ppx-tui: step timings are in {log}")
    return lines


def _has_audio(path: Path) -> bool:
    """A regular file holding a WAV with samples (not /dev/full, nor a file that failed)."""
    try:
        import soundfile as sf

        return path.is_file() and sf.info(str(path)).frames > 0
    except Exception:  # noqa: BLE001 - any unreadable file holds no audio to point at
        return False
