"""huggingface_hub's progress bars turned into `LoadProgress` events: bytes, rate and time left.

`snapshot_download(tqdm_class=tracker.bar_class())` builds its bars from the class we hand it
(a bar of files fetched, and, in recent versions, bars of bytes). The bars draw nothing: they
tell a `DownloadTracker`, which sums them and reports at most a few times a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from personaplex_tui.events import LoadProgress

log = logging.getLogger(__name__)
Report = Callable[[LoadProgress], None]


class DownloadTracker:
    """Collects the hub's bars; `report(LoadProgress("download", ...))` from any thread."""

    def __init__(
        self,
        report: Report,
        what: str,
        *,
        every_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report = report
        self.what = what
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._bars: list[HubProgressBar] = []
        self._last_report = float("-inf")
        self._last_sample: tuple[float, int] | None = None
        self.rate_bytes_s = 0.0

    def bar_class(self) -> type[HubProgressBar]:
        """A tqdm-like class whose bars report to this tracker (pass it as `tqdm_class`)."""
        return type("TrackedProgressBar", (HubProgressBar,), {"tracker": self})

    # -- called by the bars ------------------------------------------------------------------
    def add(self, bar: HubProgressBar) -> None:
        with self._lock:
            self._bars.append(bar)
        self.changed(force=True)

    def changed(self, force: bool = False) -> None:
        """A bar moved: report, unless the last report is younger than `every_s`."""
        with self._lock:
            now = self._clock()
            if not force and now - self._last_report < self._every_s:
                return
            self._last_report = now
            event = self._progress(now)
        self._report(event)

    # -- the figures ---------------------------------------------------------------------------
    def progress(self) -> LoadProgress:
        """Where the download stands now."""
        with self._lock:
            return self._progress(self._clock())

    def _progress(self, now: float) -> LoadProgress:
        byte_bars = [b for b in self._bars if b.unit == "B"]
        done = max((int(b.n) for b in byte_bars), default=0)
        total = max((int(b.total or 0) for b in byte_bars), default=0)
        done = min(done, total) if total else done
        self._sample_rate(now, done)
        files = [b for b in self._bars if b.unit != "B" and b.total]
        message = self.what
        if files:
            bar = files[0]
            message = f"{self.what} · {int(bar.n)} of {int(bar.total)} files"
        eta = None
        if total and self.rate_bytes_s > 0:
            eta = (total - done) / self.rate_bytes_s
        return LoadProgress("download", message, done, total, self.rate_bytes_s, eta)

    def _sample_rate(self, now: float, done: int) -> None:
        """Bytes per second, smoothed over the last few seconds."""
        last = self._last_sample
        if last is None or done < last[1]:
            self._last_sample = (now, done)
            return
        elapsed = now - last[0]
        if elapsed < 0.2:
            return
        instant = (done - last[1]) / elapsed
        weight = min(elapsed / 3.0, 1.0)
        self.rate_bytes_s = (
            instant
            if self.rate_bytes_s == 0
            else (weight * instant + (1 - weight) * self.rate_bytes_s)
        )
        self._last_sample = (now, done)


class HubProgressBar:
    """Mimics the parts of `tqdm` that huggingface_hub uses; draws nothing, tells `tracker`."""

    tracker: DownloadTracker  # set on the subclass made by `DownloadTracker.bar_class`
    _class_lock = threading.RLock()

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        desc: str | None = None,
        total: float | None = None,
        *,
        unit: str = "it",
        initial: float = 0,
        disable: bool = False,
        **_ignored: Any,
    ) -> None:
        self.iterable = iterable
        self.desc = desc or ""
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.unit = unit
        self.n = initial
        self.disable = disable
        self.postfix = ""
        self.tracker.add(self)

    # tqdm's class-level lock, shared with worker threads by thread_map
    @classmethod
    def get_lock(cls) -> threading.RLock:
        return cls._class_lock

    @classmethod
    def set_lock(cls, lock: Any) -> None:
        cls._class_lock = lock

    @classmethod
    def write(cls, text: str, *_args: Any, **_kwargs: Any) -> None:
        log.info("hub: %s", text.rstrip())

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> HubProgressBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def update(self, n: float | None = 1) -> None:
        self.n += n or 0
        self.tracker.changed()

    def reset(self, total: float | None = None) -> None:
        self.n = 0
        if total is not None:
            self.total = total
        self.tracker.changed(force=True)

    def refresh(self, *_args: Any, **_kwargs: Any) -> None:
        self.tracker.changed()

    def close(self) -> None:
        self.tracker.changed(force=True)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    set_description_str = set_description

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_postfix(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def clear(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def display(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def unpause(self) -> None:
        pass

    @property
    def format_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "rate": self.tracker.rate_bytes_s or None}
