"""The PersonaPlex chat app: `make_app(settings, controller_factory)` builds it for the CLI and tests.

The app creates its controller on mount, handing it a thread-safe, non-blocking event sink
(`EventBridge`); every controller call runs as a worker, so the UI never waits on the model."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from model.checkpoints.voice_presets import VOICE_PRESETS
from model.errors import PersonaPlexError
from personaplex_tui.errors import AppError
from personaplex_tui.events import (
    ConversationAPI,
    EngineError,
    EngineEvent,
    EventSink,
    LoadProgress,
    ModelInfo,
    Notice,
    SessionStarted,
    StateChanged,
    TextOut,
    TurnLatency,
    UserSaid,
    UserTextOut,
    UserTurn,
    with_hint,
)
from personaplex_tui.memory import process_rss_bytes
from personaplex_tui.settings import MODE_LABELS, Settings, SettingsError, SettingsStore
from personaplex_tui.tui.bridge import EventBridge
from personaplex_tui.tui.keys import CTRL_C, palette_commands, selection_to_copy
from personaplex_tui.tui.messages import EngineEventMessage, LiveDataArrived
from personaplex_tui.tui.screens.help_screen import HelpScreen
from personaplex_tui.tui.screens.main_screen import MainScreen
from personaplex_tui.tui.screens.settings_screen import SettingsScreen
from personaplex_tui.tui.screenshot import screenshot_command
from personaplex_tui.tui.settings_notices import settings_notices
from personaplex_tui.tui.shutdown_wait import ShutdownWait
from personaplex_tui.tui.timing_history import TimingHistory
from personaplex_tui.tui.widgets.error_banner import ErrorBanner
from personaplex_tui.tui.widgets.load_panel import LoadPanel
from personaplex_tui.tui.widgets.status_bar import StatusBar, StatusInfo
from personaplex_tui.tui.widgets.timing_panel import TimingPanel
from personaplex_tui.tui.widgets.transcript_panel import TranscriptPanel

log = logging.getLogger(__name__)
T = TypeVar("T")

ControllerFactory = Callable[[Settings, EventSink], ConversationAPI]
DeviceLister = Callable[[], tuple[Sequence[str], Sequence[str]]]  # (inputs, outputs) as stored
RssProbe = Callable[[], int | None]  # the process's resident set size in bytes

LOADING_STATES = frozenset({"idle", "loading", "warming_up"})
IDLE_STATES = LOADING_STATES | {"ready", "error"}  # no audio flows: the meters show silence
SHUTDOWN_TIMEOUT_S = 10.0


class PersonaPlexApp(App[None]):
    """The chat TUI; build it with `make_app`."""

    CSS_PATH = "app.tcss"
    TITLE = "ppx-tui"
    BINDINGS = [CTRL_C]
    HORIZONTAL_BREAKPOINTS = [(0, "-tiny"), (50, "-small"), (80, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]

    def __init__(
        self,
        settings: Settings,
        controller_factory: ControllerFactory,
        *,
        store: SettingsStore | None = None,
        list_devices: DeviceLister | None = None,
        rss_probe: RssProbe | None = process_rss_bytes,
        memory_interval_s: float = 2.0,
        log_path: Path | None = None,
        cursor_blink: bool = True,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.store = store
        self.state, self.state_detail = "idle", ""  # (the detail: what the state waits for)
        self.model_info: ModelInfo | None = None
        self.pending_reset = False
        self.rss_bytes: int | None = None
        self.device_bytes: int | None = None
        self.stats = TimingHistory()
        self.bridge = EventBridge(self)
        self.controller: ConversationAPI | None = None
        self._controller_factory = controller_factory
        self._list_devices = list_devices
        self._rss_probe = rss_probe
        self._memory_interval_s = memory_interval_s
        self.log_path = log_path
        self.cursor_blink = cursor_blink
        self._quitting = False
        self._stopped = False  # the controller was shut down (by `q`, else at the app's end)
        self.stopping = ShutdownWait()  # `shutdown_incomplete`: the conversation did not stop
        self.crashed = False  # an exception nothing handled ended the app (a bug)
        self._main_screen: MainScreen
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stop_signal: int | None = None  # a signal asked the app to quit (see stop_for_signal)
        self.load_error: str | None = None  # why no conversation could start (exit code 2)

    # --- layout and lifecycle ------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        self._main_screen = MainScreen(self.stats)
        return self._main_screen

    @property
    def main(self) -> MainScreen:
        """The main screen (it stays under the help and settings screens)."""
        return self._main_screen

    def on_main_screen_ready(self, _: MainScreen.Ready) -> None:
        self._loop = asyncio.get_running_loop()
        if self.stop_signal is not None:  # a signal came while the app was starting
            self.call_later(self.action_quit)
            return
        self._refresh_status()
        self.main.query_one(LoadPanel).display = True
        for warning in self.store.warnings if self.store is not None else ():
            self.notify(warning, severity="warning", timeout=15)  # printed before the screen too
        if self._rss_probe is not None:
            self._poll_memory()
            self.set_interval(self._memory_interval_s, self._poll_memory)
        try:
            self.controller = self._controller_factory(self.settings, self.bridge)
        except (PersonaPlexError, AppError) as err:
            self.load_error = str(err)
            self._set_state("error")
            self._show_error(str(err))
            return
        self._call("start", self.controller.start)

    def _poll_memory(self) -> None:
        try:
            self.rss_bytes = self._rss_probe() if self._rss_probe is not None else None
        except OSError:
            self.rss_bytes = None
        self._refresh_status()

    def _call(
        self,
        name: str,
        make: Callable[[], Awaitable[T]],
        then: Callable[[T], None] | None = None,
    ) -> Worker[None]:
        """Run a controller call as a worker; failures go to `on_worker_state_changed`."""

        async def run() -> None:
            result = await make()
            if then is not None:
                then(result)

        return self.run_worker(run(), name=name, group="controller", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state != WorkerState.ERROR or worker.group != "controller":
            return
        error = worker.error
        if worker.name == "start":
            self._set_state("error", str(error))  # loading stopped; the banner says why
        if isinstance(error, (PersonaPlexError, AppError)):
            log.warning("%s failed: %s", worker.name, error)
            self._show_error(str(error))
        else:
            log.error("%s failed", worker.name, exc_info=error)
            where = f" Details are in {self.log_path}." if self.log_path else ""
            self._show_error(f"Could not {worker.name.replace('_', ' ')}: {error}.{where}")

    # --- engine events -------------------------------------------------------------------

    def on_engine_event_message(self, message: EngineEventMessage) -> None:
        if self.is_running:  # see on_live_data_arrived
            self.apply_event(message.event)

    def apply_event(self, event: EngineEvent) -> None:
        """Show one ordered engine event (high-rate ones come through `on_live_data_arrived`)."""
        if isinstance(event, StateChanged):
            self._set_state(event.state, event.detail)
        elif isinstance(event, TextOut):
            self.main.query_one(TranscriptPanel).add_agent_text(event.index, event.text, event.t)
        elif isinstance(event, UserTurn):
            self.main.query_one(TranscriptPanel).add_user_turn(
                event.start_s, event.end_s, event.frames
            )
        elif isinstance(event, UserTextOut):
            self.main.query_one(TranscriptPanel).add_user_text(event.t_s, event.text)
        elif isinstance(event, UserSaid):
            self.main.query_one(TranscriptPanel).end_user_line(event.text)
        elif isinstance(event, TurnLatency):
            self.main.query_one(TimingPanel).set_turn_latency(event)
        elif isinstance(event, ModelInfo):
            self.model_info = event
            self._refresh_status()
        elif isinstance(event, EngineError):
            log.warning("engine error (%s): %s", event.kind or "?", event.message)
            self._show_error(with_hint(event.message, event.hint))
        elif isinstance(event, Notice):
            self.notify(with_hint(event.message, event.hint), severity=event.severity)
            if event.in_transcript:
                self.main.query_one(TranscriptPanel).add_system(event.message)
        elif isinstance(event, SessionStarted) and event.number > 1:
            self.main.query_one(TranscriptPanel).add_system("new conversation")
        elif isinstance(event, LoadProgress):
            self.main.query_one(LoadPanel).set_progress(event)

    def on_live_data_arrived(self, _: LiveDataArrived) -> None:
        data = self.bridge.drain()
        if not self.is_running:  # Textual is taking the screen down widget by widget, while the
            return  # engine (stopped only after that, in on_unmount) may still be sending
        # (docs/threads-and-data-flow.md §How the threads end)
        self.main.show_live(data)
        if data.memory is not None:
            self.device_bytes = data.memory.device_bytes
            self._refresh_status()

    def _set_state(self, state: str, detail: str = "") -> None:
        previous, self.state, self.state_detail = self.state, state, detail
        if state == "error" and previous in LOADING_STATES and self.load_error is None:
            self.load_error = detail or "The model could not be loaded."  # nothing can run
        elif state not in LOADING_STATES and state not in ("error", "stopping"):
            self.load_error = None  # a conversation runs after all (e.g. another voice, reset)
        if previous == "error" and state not in ("error", "idle"):
            self.dismiss_error()
        if state == "speaking" or previous == "speaking":
            self.main.query_one(TranscriptPanel).end_agent_turn()
        self.main.query_one(LoadPanel).display = state in LOADING_STATES
        if state in IDLE_STATES:
            self.main.silence_meters()
        self._refresh_status()

    def _show_error(self, message: str) -> None:
        self.main.query_one(ErrorBanner).show(message)

    def dismiss_error(self) -> None:
        self.main.query_one(ErrorBanner).clear()

    def _refresh_status(self) -> None:
        bars = self.main.query(StatusBar)
        if not bars:  # the screen is being taken down: the memory timer can still fire once
            return
        info = self.model_info
        s = self.settings
        bars.first().info = StatusInfo(
            state=self.state,
            detail=self.state_detail,
            mode=MODE_LABELS[s.mode],
            voice=s.session.voice,
            prompt=s.prompt_label,
            model=info.source if info else (s.model or ""),
            quantization=info.quantization if info else "",
            device=info.device if info else "",
            rss_bytes=self.rss_bytes,
            device_bytes=self.device_bytes,
            pending_reset=self.pending_reset,
        )

    # --- settings ------------------------------------------------------------------------

    def change_settings(self, new: Settings) -> None:
        """Adopt `new`: persist what changed, tell the controller, flag a pending reset."""
        voice, kept = new.session.voice, self.settings.session.voice
        if voice != kept and voice not in (self.voices or ()):  # (never kept: starts would fail)
            self.notify(f"This checkpoint has no voice {voice}.", severity="warning")
            new = new.replace(voice=kept)
        changes = self.settings.changed_fields(new)
        if not changes:
            return
        self.settings = new
        self._refresh_status()
        if self.store is not None:
            try:
                self.store.update(**changes)
            except SettingsError as err:  # one sentence naming the file
                self.notify(str(err), severity="warning")
        for notice in settings_notices(changes, user_transcript=new.user_transcript):
            self.notify(notice)
        controller = self.controller
        if controller is None:
            return
        if "mode" in changes:
            self.main.query_one(TranscriptPanel).add_system(f"{MODE_LABELS[new.mode]} mode")
            self._call("switch_mode", lambda: controller.set_mode(new.mode))

        def applied(needs_reset: bool) -> None:
            if needs_reset and not self.pending_reset:
                self.pending_reset = True
                self.notify("Changes apply on the next reset (press r).")
            self._refresh_status()

        self._call("apply_settings", lambda: controller.apply_settings(new), applied)

    def _settings_closed(self, new: Settings | None) -> None:
        if new is not None and not self._quitting:  # (quitting: nothing to apply them to)
            self.change_settings(new)

    def _devices(self) -> tuple[Sequence[str], Sequence[str], str]:
        try:
            if self._list_devices is not None:
                return (*self._list_devices(), "")
        except Exception as err:  # a device backend can fail in many ways
            log.warning("listing audio devices failed: %s", err)
        return (), (), "The device list is not available."

    @property
    def voices(self) -> tuple[str, ...] | None:
        """The presets the loaded checkpoint has; None until it has loaded (not known yet)."""
        if self.model_info is None:
            return None
        return tuple(v for v in self.model_info.voices if v in VOICE_PRESETS)

    # --- actions (keys, buttons, command palette) ----------------------------------------

    def _usable_controller(self) -> ConversationAPI | None:
        if self.controller is None:
            self.notify("There is no conversation to control.", severity="error")
            return None
        if self.state in LOADING_STATES:
            self.notify("The model is still loading.", severity="warning")
            return None
        if self.state == "error" and self.model_info is None:
            self.notify("No model is loaded (see the message above).", severity="error")
            return None
        return self.controller

    def action_talk(self) -> None:
        controller = self._usable_controller()
        if controller is not None:
            self._call("talk", controller.toggle_talk)

    def action_switch_mode(self) -> None:
        mode = "duplex" if self.settings.mode == "turn" else "turn"
        self.change_settings(self.settings.replace(mode=mode))

    def action_reset(self) -> None:
        controller = self._usable_controller()
        if controller is None:
            return
        self.pending_reset = False
        self.dismiss_error()
        self._refresh_status()
        self._call("reset", controller.reset)  # "new conversation" comes with SessionStarted

    def action_cycle_voice(self) -> None:
        voices = self.voices
        if voices is None:
            self.notify(
                "The voices are known once the model has loaded; v does nothing until then.",
                severity="warning",
            )
            return
        if not voices:
            self.notify("This checkpoint has no voice presets to choose from.", severity="warning")
            return
        voice = self.settings.session.voice
        at = voices.index(voice) if voice in voices else -1
        voice = voices[(at + 1) % len(voices)]
        self.change_settings(self.settings.replace(voice=voice))
        self.notify(f"Voice {voice}")

    def action_settings(self) -> None:
        inputs, outputs, note = self._devices()
        voices = self.voices
        if voices is None:
            note = " ".join(filter(None, ("The voices are known once the model has loaded.", note)))
        screen = SettingsScreen(
            self.settings,
            voices or (self.settings.session.voice,),
            inputs,
            outputs,
            devices_note=note,
            cursor_blink=self.cursor_blink,
        )
        self.push_screen(screen, self._settings_closed)

    def action_save_recording(self) -> None:
        controller = self._usable_controller()
        if controller is not None:  # the controller says where it saved (a Notice event)
            self._call("save_recording", controller.save_recording)

    def action_copy_transcript(self) -> None:
        text = self.main.query_one(TranscriptPanel).plain_text()
        if not text:
            self.notify("The transcript is empty.")
            return
        self.copy_to_clipboard(text)
        self.notify(f"Copied the transcript ({len(text.splitlines())} lines).")

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.log_path))

    def action_dismiss_error(self) -> None:
        self.dismiss_error()

    async def action_quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        self.stopping.ask()
        self._set_state("stopping")
        if self.stop_signal == signal.SIGHUP:  # no terminal, no keys; Textual's writer may be dead
            return await self._stop_controller(exit_after=True)  # (no repaints: textual#6692)
        self.run_worker(self._stop_controller(exit_after=True))  # (meanwhile keys are heard)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While quitting only Ctrl+C acts (a second one leaves without waiting)."""
        return not self._quitting or action in ("help_quit", "quit")

    @property
    def shutdown_incomplete(self) -> bool:
        """The conversation did not stop: not in SHUTDOWN_TIMEOUT_S, or Ctrl+C came again."""
        return self.stopping.incomplete

    async def on_unmount(self) -> None:
        """Every way out ends here: after a crash (a test without `q`) it stops the controller."""
        await self._stop_controller()

    async def _stop_controller(self, exit_after: bool = False) -> None:
        """Shut the controller down once, waiting for it at most SHUTDOWN_TIMEOUT_S; then exit."""
        if self.controller is not None and not self._stopped:
            self._stopped = True
            notify = partial(self.notify, timeout=SHUTDOWN_TIMEOUT_S) if exit_after else None
            await self.stopping.wait(self.controller.shutdown(), SHUTDOWN_TIMEOUT_S, notify)
        self.bridge.close()
        if exit_after:
            self.exit(return_code=self.exit_code)

    def _handle_exception(self, error: Exception) -> None:
        """A bug's exception: logged once, then Textual's traceback, exit 1; on_unmount cleans up."""
        if not self.crashed:
            self.crashed = True
            log.error("the app crashed", exc_info=error)
        super()._handle_exception(error)

    @property
    def exit_code(self) -> int:
        """128 + the signal that stopped the app; 1 after a crash; 2 if no model loaded; else 0."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 1 if self.crashed else 2 if self.load_error is not None else 0

    def stop_for_signal(self, signum: int) -> None:
        """Ctrl+C or a signal (in its handler): quit as `q` does; again: leave (`ShutdownWait`)."""
        if self.stop_signal is None:
            self.stop_signal = signum  # (not mounted yet, no loop: on_main_screen_ready quits)
        self.stopping.interrupt(signum, self._loop, partial(self.call_later, self.action_quit))

    def action_help_quit(self) -> None:
        """Ctrl+C as a key on any screen, not a signal: quit, or copy the text selected."""
        if (text := selection_to_copy(self.screen)) is not None:
            self.copy_to_clipboard(text)
        else:  # (Textual's own only said "Press q to quit")
            self.stop_for_signal(signal.SIGINT)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):  # (Textual's Screenshot replaced)
            yield screenshot_command(self) if command.title == "Screenshot" else command
        if isinstance(screen, MainScreen):
            yield from palette_commands(self.run_action)


def make_app(
    settings: Settings,
    controller_factory: ControllerFactory,
    *,
    store: SettingsStore | None = None,
    list_devices: DeviceLister | None = None,
    rss_probe: RssProbe | None = process_rss_bytes,
    log_path: Path | None = None,
    cursor_blink: bool = True,
) -> PersonaPlexApp:
    """The chat app. `controller_factory(settings, sink)` is called once it is mounted; `store`
    persists the settings changed in it (None: not); `list_devices()` gives (inputs, outputs) as
    the settings store them (`device_choices`); `rss_probe()` the bytes in use (None: hidden)."""
    return PersonaPlexApp(
        settings,
        controller_factory,
        store=store,
        list_devices=list_devices,
        rss_probe=rss_probe,
        log_path=log_path,
        cursor_blink=cursor_blink,
    )
