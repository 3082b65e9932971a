"""Pieces the stream classes share: `with` support, and the counters of a capture ring buffer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from personaplex_tui.audio.ring_buffer import RingBuffer

C = TypeVar("C", bound="ClosesOnExit")
S = TypeVar("S", bound="StartsOnEnter")


class ClosesOnExit(ABC):
    """`with obj:` closes it at the end of the block."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self: C) -> C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class StartsOnEnter(ClosesOnExit):
    """`with stream:` starts it, and closes it at the end of the block."""

    @abstractmethod
    def start(self) -> None: ...

    def __enter__(self: S) -> S:
        self.start()
        return self


class RingCounters:
    """Overrun counters of an input that captures into `self._ring` in `device_frame` blocks."""

    _ring: RingBuffer
    device_frame: int

    @property
    def overruns(self) -> int:
        return self._ring.overruns

    @property
    def dropped_samples(self) -> int:
        return self._ring.dropped

    @property
    def queued_frames(self) -> int:
        return self._ring.available // self.device_frame
