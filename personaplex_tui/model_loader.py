"""Loading PersonaPlex for the engine (on its thread): download and load with progress events,
what was loaded (`ModelInfo`), and the accelerator memory MLX holds (`MemoryUsage`).

MLX is imported only inside these functions, which the engine calls on its own thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from model.checkpoints.hub import DEFAULT_MODEL
from model.errors import ModelNotFoundError
from personaplex_tui.checkpoint_voices import MODEL_FLAG, require_voice
from personaplex_tui.download_progress import DownloadTracker
from personaplex_tui.events import LoadProgress, MemoryUsage, ModelInfo, Notice
from personaplex_tui.jit_workers import start_jit_workers
from personaplex_tui.kernel_cache import kernels_to_compile
from personaplex_tui.stt_loader import attach_stt
from personaplex_tui.user_transcript import NO_TRANSCRIPT_HINT, SttChoice

Progress = Callable[[LoadProgress], None]
log = logging.getLogger(__name__)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch_model(
    spec: str, progress: Progress, *, before_weights: Callable[[Path], None] | None = None
) -> Path:
    """The local folder of `spec` (a folder, or a repo id downloaded with progress events).

    `before_weights(folder)`, when given, is called once with a folder holding the checkpoint's
    config.json: on a fresh CUDA machine before the weights download when the repo has one
    (its kernels then compile during the download; personaplex_tui/jit_workers.py), else with
    the folder returned.
    Raises ModelNotFoundError with one sentence (it names --model PATH and HF_HUB_OFFLINE)
    when the hub cannot be reached and nothing is cached."""
    from model.checkpoints.hub import resolve_model

    notify = before_weights or (lambda _folder: None)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        notify(folder)
        return folder
    where = "in the Hugging Face cache" if _hub_offline() else "on the Hugging Face hub"
    progress(LoadProgress("download", f"Looking for {spec} {where}"))
    early = _config_only(spec) if before_weights is not None and kernels_to_compile() else None
    if early is not None:
        notify(early)
    tracker = DownloadTracker(progress, spec)
    folder = resolve_model(spec, tqdm_class=tracker.bar_class(), flag=MODEL_FLAG)
    progress(tracker.progress())
    if early is None:
        notify(folder)
    return folder


def _config_only(spec: str) -> Path | None:
    """The snapshot folder of repo `spec` with its config.json fetched (a few kB), or None when
    it has none or cannot be fetched (the full download then says why)."""
    from model.checkpoints.hub import resolve_model
    from model.checkpoints.layout import CONFIG_FILE

    try:
        folder = resolve_model(spec, allow_patterns=[CONFIG_FILE])
    except ModelNotFoundError:
        return None
    return folder if (folder / CONFIG_FILE).is_file() else None


def accelerator() -> str:
    """'gpu' or 'cpu': where MLX computes by default."""
    import mlx.core as mx

    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def load_model(
    spec: str | None,
    progress: Progress,
    *,
    dtype: str | None = None,
    quantize: int | None = None,
    voice: str | None = None,
    stt: SttChoice | None = None,
    sampling: Any = None,
) -> tuple[Any, ModelInfo]:
    """Fetch and load a model (`None`: the default repo); returns `(PersonaPlex, ModelInfo)`.

    `dtype` is an MLX dtype name ("bfloat16", ...; None: the device's default). A `voice` the
    fetched checkpoint lacks is refused (UnknownVoiceError) before the weights load. `stt`:
    the user's transcript to come, whose kernels helpers compile too on a fresh CUDA machine;
    `sampling`: the conversation's `SamplingConfig` (None: the checkpoint's), whose LM step
    graphs the helpers compile."""
    import mlx.core as mx

    import model

    source = spec or DEFAULT_MODEL
    start = time.perf_counter()
    # A fresh CUDA machine: compile MLX's indexing kernels and the first step graphs in parallel
    # while the weights download, or at least while they load (once; the helpers end by
    # themselves: personaplex_tui/jit_workers.py).
    helpers: dict[str, Any] = {"quantize": quantize}
    if sampling is not None:
        helpers["sampling"] = asdict(sampling)
    if stt is not None and stt.enabled:
        helpers.update(user_transcript=True, stt_model=stt.model, stt_quantize=stt.quantize)

    def start_helpers(config_folder: Path) -> None:
        start_jit_workers({"checkpoint": str(config_folder), **helpers})

    folder = fetch_model(source, progress, before_weights=start_helpers)
    if voice is not None:
        require_voice(folder, voice)
    _compile_ahead(folder, dtype, quantize)
    progress(LoadProgress("load", f"Reading the weights from {folder}"))
    loaded = model.load(folder, dtype=getattr(mx, dtype) if dtype else None, quantize=quantize)
    from model.cuda import KERNELS

    for reason in (k.disabled_reason for k in KERNELS):
        if reason:
            log.warning("%s", reason)
    info = ModelInfo(
        source=source,
        quantization=loaded.quantization,
        device=accelerator(),
        voices=loaded.voices,
        load_s=time.perf_counter() - start,
        compiles_kernels=kernels_to_compile(),
    )
    return loaded, info


def _compile_ahead(folder: Path, dtype: str | None, quantize: int | None) -> None:
    """Start compiling our CUDA kernels for the checkpoint in `folder` on other threads while
    its weights load (personaplex_tui/kernels_ahead.py); an optimisation, never an error."""
    import mlx.core as mx

    from model.checkpoints.config_io import detect_layout, read_config
    from model.checkpoints.load import default_dtype, loaded_quantization
    from personaplex_tui.kernels_ahead import compile_ahead

    try:
        q = loaded_quantization(folder, quantize)
        if q is not None:
            config = read_config(folder, detect_layout(folder))
            dt = getattr(mx, dtype) if dtype else default_dtype()
            compile_ahead(config.lm, dt, q.bits, q.group_size, config.mimi)
    except Exception as err:  # the load compiles them itself
        log.debug("kernels not compiled ahead: %s", err)


@dataclass(frozen=True)
class ModelLoader:
    """The engine's loader for one model choice: `loader(progress) -> (model, ModelInfo)`."""

    spec: str | None = None
    dtype: str | None = None
    quantize: int | None = None
    voice: str | None = None  # the voice the conversation starts with: checked before the weights
    stt: SttChoice | None = None  # the user's transcript (None: off, nothing loaded)
    sampling: Any = None  # the conversation's SamplingConfig, for the JIT helpers (None: default)

    def __call__(self, progress: Progress) -> tuple[Any, ModelInfo]:
        loaded, info = load_model(
            self.spec,
            progress,
            dtype=self.dtype,
            quantize=self.quantize,
            voice=self.voice,
            stt=self.stt,
            sampling=self.sampling,
        )
        if self.stt is not None and self.stt.enabled:
            load_listener(loaded, self.stt, progress)
            if loaded.listener is not None:
                info = replace(info, user_transcript=loaded.listener.source)
        return loaded, info


def load_listener(persona: Any, choice: SttChoice, progress: Progress) -> bool:
    """Load the STT model next to PersonaPlex (download progress as events); a problem is one
    Notice and the conversation goes on without the user's transcript."""
    source = choice.source
    progress(LoadProgress("load", f"Loading the speech-to-text model {source}"))
    tracker = DownloadTracker(progress, source)

    def notify(message: str) -> None:
        notice = Notice(message, "warning", NO_TRANSCRIPT_HINT)
        progress(notice)  # type: ignore[arg-type]  # the engine emits any event

    return attach_stt(persona, choice, notify, tqdm_class=tracker.bar_class())


def memory_usage() -> MemoryUsage:
    """Bytes MLX holds now and at most so far (call it on the engine thread)."""
    import mlx.core as mx

    return MemoryUsage(int(mx.get_active_memory()), int(mx.get_peak_memory()))


def release_mlx_thread() -> None:
    """Wait for MLX's work and destroy the streams of the calling thread (the engine's, as it
    closes). Without it the process can abort on exit ("terminate called without an active
    exception") when it ends right after a thread that used MLX."""
    import mlx.core as mx

    mx.synchronize()
    mx.clear_streams()
