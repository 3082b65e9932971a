"""A soak run: a long full-duplex conversation (an hour is 45,000 frames), faster than real time,
through the real engine, duplex controller, player and recording, watching memory and counts.

The microphone is a file played in a loop as fast as the engine takes it, the speaker a WAV file
and the conversation is recorded to disk as the app records it (mic, agent, transcript). The
default model is a small one with random weights (any temporal context); a checkpoint folder
works too. `run_soak` returns a `SoakResult`; `ppx-tui soak` prints it. Headless: no textual,
no sounddevice.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import wave
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.conversation.prompt_plan import SILENCE_FRAMES
from model.conversation.session_settings import SessionSettings
from model.errors import PersonaPlexError
from personaplex_tui.audio import FRAME_SAMPLES, AudioInput, AudioOutput, FileMic, FileSpeaker
from personaplex_tui.checkpoint_voices import fetch_with_voice, local_checkpoint
from personaplex_tui.conversation import AudioFactory, ControllerConfig, create_conversation
from personaplex_tui.events import EngineError, ModelInfo, Notice, StateChanged, StepTiming
from personaplex_tui.kernels_in_use import depformer_kernels, matvec_kernels, temporal_kernels
from personaplex_tui.model_loader import release_mlx_thread
from personaplex_tui.soak_meter import MemoryMeter, MemorySample, SoakModel, random_voice
from personaplex_tui.stop_signals import POLICY

DEFAULT_INPUT = (
    Path(__file__).resolve().parents[1] / "tests" / "data" / "audio" / "conversation.wav"
)
SETTLE_FRAMES = 3000  # memory must be flat after this many frames (or half the run, if shorter)


class SoakOptionsError(PersonaPlexError):
    """Soak options that cannot run as asked (one sentence, naming the command's flags)."""


def check_prompt_phase(context: int, voice_frames: int, prompt_tokens: int) -> None:
    """Refuse a small random model whose `context` cannot hold the prompt phase it is given
    (its ring would wrap in the prefill); the default 3000, as the 7B's, holds the longest
    the command allows: 1000 + 1000 + 12."""
    silence = 2 * SILENCE_FRAMES
    needed = voice_frames + prompt_tokens + silence
    if needed <= context:
        return
    room = context - silence
    raise SoakOptionsError(
        f"--context {context} cannot hold the prompt phase of {needed} frames "
        f"(--voice-frames {voice_frames}, --prompt-tokens {prompt_tokens} and "
        f"{silence} of silence); give --context {needed} or more"
        + (f", or at most {room} voice frames and prompt tokens together." if room >= 0 else ".")
    )


@dataclass
class SoakOptions:
    """What to run: how long, on which model, with which input, and how memory is judged."""

    frames: int = 45000  # one hour at 12.5 frames/s
    context: int = 3000  # temporal context of the random model (the 7B's is 3000)
    model: str | None = None  # a checkpoint folder or repo id instead of the random model
    dtype: str | None = None
    quantize: int | None = None
    input: str | None = None  # audio looped as the microphone (default: the test conversation)
    # `input`'s audio, when the caller read it already (a pipe can be read only once)
    input_audio: np.ndarray | None = field(default=None, repr=False, compare=False)
    every: int = 2500  # a memory sample every this many frames
    settle: int | None = None  # frames before memory must be flat (default: SETTLE_FRAMES)
    max_growth_mb: float = 32.0  # allowed growth of MLX active memory and of RSS after `settle`
    record_dir: str | None = None  # keep the recording here (default: a temporary folder)
    session: SessionSettings = SessionSettings(seed=0)  # its seed also makes the random model
    voice_frames: int = 50  # random model: voice prompt length
    prompt_tokens: int = 20  # random model: system prompt length
    random_weights: bool = False  # random weights of the exact 7B shape instead of the small model
    bits: int = 4  # with random_weights: 4, 8 or 16 (= bfloat16, unquantized)
    max_step_ms: float | None = None  # a step slower than this is a problem (None: only reported)

    @property
    def seed(self) -> int:
        """The seed of the random model and of the synthetic input."""
        return self.session.seed or 0

    def settle_frames(self) -> int:
        return self.settle if self.settle is not None else min(SETTLE_FRAMES, self.frames // 2)


@dataclass
class SoakResult:
    """What a soak run did: counts, errors, speed and the memory curve."""

    model: str
    context: int
    frames: int  # asked for
    frames_in: int  # microphone frames delivered
    frames_stepped: int  # model steps of the live session
    frames_out: int  # agent frames reported (FrameOut events)
    speaker_samples: int  # samples the speaker stand-in wrote
    recorded_mic_samples: int
    recorded_agent_samples: int
    transcript_entries: int  # JSON lines in transcript.jsonl (the last one `end`)
    positions: int  # temporal positions of the session at the end (prefill included)
    errors: list[str]
    warnings: list[str]
    elapsed_s: float  # the live conversation, first step to last
    frames_per_s: float
    realtime_factor: float  # seconds of conversation per second of wall clock
    settle: int
    memory: list[MemorySample]
    active_growth_mb: float  # max after `settle` minus the value at `settle`
    rss_growth_mb: float
    active_slope_b_per_frame: float  # least-squares slope over the samples after `settle`
    rss_slope_b_per_frame: float
    step_ms: dict[str, float] = field(default_factory=dict)  # p50/p90/p99/max/mean of live steps
    steps_over_budget: int = 0  # live steps over the 80 ms real-time budget
    kernels_start: dict[str, str] = field(default_factory=dict)  # which kernels ran, at live start
    kernels_end: dict[str, str] = field(default_factory=dict)  # ... and after the last step
    problems: list[str] = field(default_factory=list)
    recording: str = ""  # the kept recording folder ("" when it was temporary)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def ring_wraps(self) -> float:
        return self.positions / self.context if self.context else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["ring_wraps"] = round(self.ring_wraps, 2)
        return out


class _Events:
    """The event sink: counts events and keeps only errors and warnings (nothing per frame)."""

    def __init__(self, on_live: Callable[[], None]) -> None:
        self.on_live = on_live
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.live = False
        self.ended = asyncio.Event()
        self.step_ms = array("d")  # each live step's time (8 bytes a frame: 360 KB an hour)

    def __call__(self, event: object) -> None:
        self.counts[type(event).__name__] += 1
        if isinstance(event, StepTiming):
            self.step_ms.append(event.total_ms)
        elif isinstance(event, EngineError):
            self.errors.append(event.message)  # without its key hint: the soak has no keys
        elif isinstance(event, Notice) and event.severity != "information":
            self.warnings.append(event.message)
        elif isinstance(event, StateChanged):
            if event.state == "duplex":
                self.live = True
                self.on_live()  # before the run's first step: the engine steps after this
            elif self.live or event.state == "error":
                self.ended.set()


class _SoakAudio(AudioFactory):
    """The input looped for exactly `frames` frames, as fast as it is read; a WAV speaker."""

    def __init__(
        self, source: str | Path | np.ndarray, frames: int, name: str | None = None
    ) -> None:
        super().__init__(realtime_files=False)
        self.source = source
        self.frames = frames
        self.name = name  # the input's name, for the mic's messages (`source` may be its audio)
        self.mic: FileMic | None = None
        self.speaker: FileSpeaker | None = None

    def open_mic(self, config: ControllerConfig) -> AudioInput:
        self.mic = FileMic(
            self.source, realtime=False, after_end="loop", max_frames=self.frames, name=self.name
        )
        return self.mic

    def open_speaker(self, config: ControllerConfig) -> AudioOutput:
        assert config.output_file is not None
        self.speaker = FileSpeaker(config.output_file, realtime=False)
        return self.speaker


BUDGET_MS = 80.0  # one frame of audio: a step slower than this falls behind real time


def synthetic_speech(seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """Speech-like input when no file is at hand: noise bursts of one second, then pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 24000)
    loud = (np.arange(n) // 24000) % 2 == 0
    return (rng.standard_normal(n) * np.where(loud, 0.1, 0.001)).astype(np.float32)


def _loader(opts: SoakOptions, meter: MemoryMeter) -> Callable[..., tuple[SoakModel, ModelInfo]]:
    def load(progress: Callable[[Any], None]) -> tuple[SoakModel, ModelInfo]:
        import mlx.core as mx

        from model import load as load_model
        from model import random_model
        from model.config import config_7b, mimi_tiny, tiny

        dtype = getattr(mx, opts.dtype) if opts.dtype else None
        if opts.model:
            if local_checkpoint(opts.model) is None:  # a repo: its voices, once it is fetched
                fetch_with_voice(opts.model, opts.session.voice)
            model = load_model(opts.model, dtype=dtype, quantize=opts.quantize)
            adapted = SoakModel(model, meter)
        else:
            seed = opts.seed
            if opts.random_weights:
                bits = None if opts.bits == 16 else opts.bits
                model = random_model(config_7b(), bits=bits, dtype=dtype, seed=seed)
            else:
                model = random_model(
                    tiny(context=opts.context, mimi=mimi_tiny()), dtype=dtype, seed=seed
                )
            rng = np.random.default_rng(seed + 1)
            tokens = rng.integers(4, model.lm.config.text_card, opts.prompt_tokens)
            adapted = SoakModel(
                model,
                meter,
                voice=random_voice(model, opts.voice_frames, seed),
                system_tokens=[int(t) for t in tokens],
            )
        device = "gpu" if mx.default_device() == mx.gpu else "cpu"
        return adapted, ModelInfo(model.source, model.quantization, device, model.voices)

    return load


def _wav_samples(path: Path) -> int:
    try:
        with wave.open(str(path)) as w:
            return w.getnframes()
    except (OSError, wave.Error, EOFError):
        return -1


def _jsonl_entries(path: Path) -> tuple[int, str]:
    """How many JSON lines the transcript has and the type of the last one ("invalid" if a
    line does not parse)."""
    if not path.is_file():
        return 0, ""
    n, last = 0, ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            return n, "invalid"
        last = entry.get("type", "") if isinstance(entry, dict) else "invalid"
        n += 1
    return n, last


def _growth(samples: list[MemorySample], settle: int, key: str) -> tuple[float, float]:
    """(max after `settle` minus the value at `settle` in MiB, slope in bytes per frame)."""
    after = [s for s in samples if s.frame >= settle]
    if len(after) < 2:
        return 0.0, 0.0
    values = np.array([getattr(s, key) for s in after])
    frames = np.array([s.frame for s in after], dtype=np.float64)
    slope = float(np.polyfit(frames, values, 1)[0]) * 1024 * 1024
    return round(float(values.max() - values[0]), 3), round(slope, 1)


def speaker_file(work: Path) -> Path:
    """A new file for the speaker's track in `work`: speaker.wav, else speaker_2.wav, ... (two
    soaks with one --record-dir overwrote each other's speaker.wav, or the --input of that
    name), made now so that another soak cannot take it."""
    n = 1
    while True:
        path = work / ("speaker.wav" if n == 1 else f"speaker_{n}.wav")
        try:
            path.open("xb").close()
            return path
        except FileExistsError:
            n += 1


async def _converse(opts: SoakOptions, meter: MemoryMeter, work: Path) -> dict[str, Any]:
    source: str | Path | np.ndarray
    if opts.input_audio is not None:
        source = opts.input_audio
    elif opts.input:
        source = opts.input
    elif DEFAULT_INPUT.is_file():
        source = DEFAULT_INPUT
    else:
        source = synthetic_speech(seed=opts.seed)
    audio = _SoakAudio(source, opts.frames, opts.input)
    kernels: dict[str, dict[str, str]] = {}
    conv: Any = None

    def on_live() -> None:
        meter.arm()
        kernels["start"] = _kernels(conv.engine.model)

    events = _Events(on_live)
    config = ControllerConfig(
        mode="duplex",
        session=opts.session,
        input_file=opts.input or (str(source) if isinstance(source, Path) else "synthetic speech"),
        output_file=speaker_file(work),
        record_dir=work / "recording",
    )
    loader = _loader(opts, meter)
    conv = create_conversation(loader, events, config, audio=audio, release=release_mlx_thread)
    folder: Path | None = None
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:  # in the signal handler: the run ends at its next step
        loop.call_soon_threadsafe(conv.engine.abort)

    with POLICY.deferred(on_signal):
        try:
            await conv.start()
            if conv.recording is not None:
                folder = conv.recording.folder
            started = conv.running or events.live
            if not started and POLICY.received is None:
                message = events.errors[0] if events.errors else "The soak did not start."
                raise PersonaPlexError(message)
            if started:
                await events.ended.wait()
            while conv.running:  # the run winds down (the speaker drains) after its last step
                await asyncio.sleep(0.05)
        finally:
            try:
                await conv.shutdown()
            finally:
                POLICY.quiet()  # the run is over: its figures are reported, whatever comes
    model = conv.engine.model
    live = model.live if isinstance(model, SoakModel) else None
    kernels["end"] = _kernels(model)
    return {
        "kernels": kernels,
        "model": conv.engine.info.source if conv.engine.info else "",
        "events": events,
        "frames_in": audio.mic.frames_delivered if audio.mic else 0,
        "frames_stepped": live.steps if live else 0,
        "speaker_samples": _wav_samples(config.output_file),
        "folder": folder,
    }


def _kernels(model: object) -> dict[str, str]:
    """Which kernels run the model's temporal step, depformer and mat-vecs ('MLX' off CUDA)."""
    inner = model.model if isinstance(model, SoakModel) else None
    if inner is None:
        return {}
    return {
        "temporal": temporal_kernels(inner),
        "depformer": depformer_kernels(inner),
        "matvec": matvec_kernels(inner),
    }


def _step_stats(values: Sequence[float]) -> dict[str, float]:
    if not len(values):
        return {}
    a = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    out = {"p50": p50, "p90": p90, "p99": p99, "max": a.max(), "mean": a.mean()}
    return {k: round(float(v), 3) for k, v in out.items()}


def run_soak(
    opts: SoakOptions, progress: Callable[[MemorySample], None] = lambda s: None
) -> SoakResult:
    """Run the soak `opts` describes; `progress` sees each memory sample as it is taken.

    Raises `SoakOptionsError` before anything runs if the small random model's context cannot
    hold its prompt phase."""
    if not opts.model and not opts.random_weights:
        check_prompt_phase(opts.context, opts.voice_frames, opts.prompt_tokens)
    settle = opts.settle_frames()
    meter = MemoryMeter(opts.every, settle, opts.frames, progress)
    keep = opts.record_dir is not None
    work = (
        Path(opts.record_dir).expanduser() if keep else Path(tempfile.mkdtemp(prefix="ppx-soak-"))
    )
    try:
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PersonaPlexError(f"Cannot write in {work}: {e.strerror or e}.") from None
        ran = asyncio.run(_converse(opts, meter, work))
        folder: Path | None = ran["folder"]
        mic = _wav_samples(folder / "mic.wav") if folder else -1
        agent = _wav_samples(folder / "agent.wav") if folder else -1
        entries, last = _jsonl_entries(folder / "transcript.jsonl") if folder else (0, "")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    events: _Events = ran["events"]
    samples = list(meter.samples)
    elapsed = round(meter.elapsed_s, 3)  # (not the last sample's: a stopped run has few)
    stepped = ran["frames_stepped"]
    active_growth, active_slope = _growth(samples, settle, "mlx_active_mb")
    rss_growth, rss_slope = _growth(samples, settle, "rss_mb")
    result = SoakResult(
        model=ran["model"],
        context=meter.context or 0,
        frames=opts.frames,
        frames_in=ran["frames_in"],
        frames_stepped=stepped,
        frames_out=events.counts["FrameOut"],
        speaker_samples=ran["speaker_samples"],
        recorded_mic_samples=mic,
        recorded_agent_samples=agent,
        transcript_entries=entries,
        positions=meter.positions,
        errors=events.errors,
        warnings=events.warnings,
        elapsed_s=elapsed,
        frames_per_s=round((stepped - 1) / elapsed, 2) if elapsed > 0 else 0.0,
        realtime_factor=round((stepped - 1) * 0.08 / elapsed, 2) if elapsed > 0 else 0.0,
        settle=settle,
        memory=samples,
        active_growth_mb=active_growth,
        rss_growth_mb=rss_growth,
        active_slope_b_per_frame=active_slope,
        rss_slope_b_per_frame=rss_slope,
        recording=str(folder) if keep and folder else "",
        step_ms=_step_stats(events.step_ms),
        steps_over_budget=sum(1 for v in events.step_ms if v > BUDGET_MS),
        kernels_start=ran["kernels"].get("start", {}),
        kernels_end=ran["kernels"].get("end", {}),
    )
    result.problems = _problems(result, opts, last)
    return result


def _problems(r: SoakResult, opts: SoakOptions, last_entry: str) -> list[str]:
    found = [f"error: {e}" for e in r.errors]
    samples = r.frames * FRAME_SAMPLES
    counts = {
        "microphone frames": r.frames_in,
        "model steps": r.frames_stepped,
        "agent frames out": r.frames_out,
    }
    for what, n in counts.items():
        if n != r.frames:
            found.append(f"{what}: {n}, expected {r.frames}")
    tracks = {
        "speaker": r.speaker_samples,
        "recorded mic": r.recorded_mic_samples,
        "recorded agent": r.recorded_agent_samples,
    }
    for what, n in tracks.items():
        if n != samples:
            found.append(f"{what} samples: {n}, expected {samples}")
    if last_entry != "end":
        found.append(f"the transcript does not end with an 'end' entry ({last_entry or 'empty'})")
    for what, grew in (("MLX active memory", r.active_growth_mb), ("RSS", r.rss_growth_mb)):
        if grew > opts.max_growth_mb:
            found.append(
                f"{what} grew {grew:.1f} MiB after frame {r.settle} (limit {opts.max_growth_mb} MiB)"
            )
    if r.kernels_start != r.kernels_end:
        found.append(f"kernels changed during the run: {r.kernels_start} -> {r.kernels_end}")
    slowest = r.step_ms.get("max", 0.0)
    if opts.max_step_ms is not None and slowest > opts.max_step_ms:
        found.append(f"the slowest step took {slowest:.1f} ms (limit {opts.max_step_ms} ms)")
    return found
