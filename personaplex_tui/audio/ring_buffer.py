"""A bounded, thread-safe sample FIFO between PortAudio callbacks and the engine thread."""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np

Overflow = Literal["drop_oldest", "reject"]


class RingBuffer:
    """Preallocated ring of float32 samples for one producer and one consumer.

    The real-time side (a PortAudio callback) uses only `write` and `read_into`: they copy
    into or out of the preallocated storage, never wait, and hold the lock only for that copy.
    The other side may block with a timeout (`read`, `write_wait`, `wait_empty`), waiting on a
    condition, never polling.

    When a write does not fit, `overflow` decides what is lost: "drop_oldest" discards the oldest
    queued samples (a microphone keeps the newest audio), "reject" discards the incoming chunk
    whole (a player never plays half a frame). Either way `overruns` counts the writes that lost
    audio and `dropped` the samples lost.
    """

    def __init__(self, capacity: int, overflow: Overflow = "drop_oldest") -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._capacity = capacity
        self._overflow = overflow
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._writable = threading.Condition(self._lock)
        self._read_pos = 0  # monotonic sample counters; index = counter % capacity
        self._write_pos = 0
        self._closed = False
        self.clears = 0  # how many times clear() ran (cancels writers waiting for room)
        self.overruns = 0
        self.dropped = 0

    # -- state ---------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def available(self) -> int:
        """Samples queued for reading."""
        return self._write_pos - self._read_pos

    @property
    def free(self) -> int:
        return self._capacity - (self._write_pos - self._read_pos)

    @property
    def total_written(self) -> int:
        """Samples ever accepted (dropped-oldest ones included)."""
        return self._write_pos

    @property
    def total_read(self) -> int:
        """Samples ever consumed or discarded from the front."""
        return self._read_pos

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the real-time side --------------------------------------------------------------
    def write(self, data: np.ndarray) -> int:
        """Append samples without waiting; returns how many were accepted."""
        n = len(data)
        with self._lock:
            if self._closed:
                return 0
            free = self._capacity - (self._write_pos - self._read_pos)
            if n > free:
                self.overruns += 1
                if self._overflow == "reject":
                    self.dropped += n
                    return 0
                if n > self._capacity:  # keep only the newest `capacity` samples of the chunk
                    self.dropped += n - self._capacity
                    data = data[n - self._capacity :]
                    n = self._capacity
                lost = n - free
                self.dropped += lost
                self._read_pos += lost
            self._copy_in(data)
            self._readable.notify()
            return n

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to len(out) samples into `out` without waiting; returns how many."""
        with self._lock:
            n = min(len(out), self._write_pos - self._read_pos)
            if n:
                self._copy_out(out, n)
                self._writable.notify()
            return n

    # -- the blocking side ---------------------------------------------------------------
    def read(self, n: int, timeout: float | None = None) -> np.ndarray | None:
        """Wait until `n` samples are queued and return them (a new array).

        Returns None on timeout, or once the buffer is closed with fewer than `n` left.
        """
        got = self.read_at(n, timeout)
        return None if got is None else got[0]

    def read_at(self, n: int, timeout: float | None = None) -> tuple[np.ndarray, int] | None:
        """`read`, and where its first sample was written: how many samples were written
        before it (`total_written` then), whatever was dropped or cleared since."""
        with self._lock:
            ready = self._readable.wait_for(
                lambda: self._write_pos - self._read_pos >= n or self._closed, timeout
            )
            if not ready or self._write_pos - self._read_pos < n:
                return None
            at = self._read_pos
            out = np.empty(n, dtype=np.float32)
            self._copy_out(out, n)
            self._writable.notify()
            return out, at

    def write_wait(self, data: np.ndarray, timeout: float | None = None) -> bool:
        """Wait for room, then append all of `data`.

        Returns False, having written nothing, on timeout, on close, or when `clear` runs
        meanwhile (what was queued before an interruption must not slip in after it).
        """
        n = len(data)
        if n > self._capacity:
            raise ValueError(f"a write of {n} samples can never fit in {self._capacity}")
        with self._lock:
            clears = self.clears
            self._writable.wait_for(
                lambda: (
                    self._capacity - (self._write_pos - self._read_pos) >= n
                    or self._closed
                    or self.clears != clears
                ),
                timeout,
            )
            if self._closed or self.clears != clears or self.free < n:
                return False
            self._copy_in(data)
            self._readable.notify()
            return True

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been read; False on timeout."""
        with self._lock:
            return self._writable.wait_for(
                lambda: self._write_pos == self._read_pos or self._closed, timeout
            )

    def clear(self) -> int:
        """Discard everything queued; returns the number of samples discarded."""
        with self._lock:
            n = self._write_pos - self._read_pos
            self._read_pos = self._write_pos
            self.clears += 1
            self._writable.notify_all()
            return n

    def close(self) -> None:
        """Wake every waiter; later writes are ignored and reads return what is left."""
        with self._lock:
            self._closed = True
            self._readable.notify_all()
            self._writable.notify_all()

    # -- copies (lock held) --------------------------------------------------------------
    def _copy_in(self, data: np.ndarray) -> None:
        n = len(data)
        start = self._write_pos % self._capacity
        first = min(n, self._capacity - start)
        self._buf[start : start + first] = data[:first]
        if first < n:
            self._buf[: n - first] = data[first:]
        self._write_pos += n

    def _copy_out(self, out: np.ndarray, n: int) -> None:
        start = self._read_pos % self._capacity
        first = min(n, self._capacity - start)
        out[:first] = self._buf[start : start + first]
        if first < n:
            out[first:n] = self._buf[: n - first]
        self._read_pos += n
