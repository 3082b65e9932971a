"""The ring buffer: overrun counting under both policies, blocking reads, two threads at once."""

import threading
import time

import numpy as np
import pytest

from personaplex_tui.audio import RingBuffer


def test_drop_oldest_keeps_the_newest_and_counts_the_loss():
    ring = RingBuffer(10, overflow="drop_oldest")
    assert ring.write(np.arange(6, dtype=np.float32)) == 6
    assert ring.write(np.arange(6, 12, dtype=np.float32)) == 6
    assert ring.overruns == 1 and ring.dropped == 2
    np.testing.assert_array_equal(ring.read(10, timeout=0), np.arange(2, 12))
    # A chunk larger than the whole ring keeps its newest samples.
    ring.write(np.arange(25, dtype=np.float32))
    assert ring.overruns == 2 and ring.dropped == 2 + 15
    np.testing.assert_array_equal(ring.read(10, timeout=0), np.arange(15, 25))


def test_reject_drops_the_incoming_chunk_whole():
    ring = RingBuffer(10, overflow="reject")
    assert ring.write(np.ones(8, np.float32)) == 8
    assert ring.write(np.full(3, 2.0, np.float32)) == 0
    assert ring.overruns == 1 and ring.dropped == 3
    np.testing.assert_array_equal(ring.read(8, timeout=0), np.ones(8))


def test_wraps_around_correctly():
    ring = RingBuffer(7)
    expected = []
    value = 0
    for size in [3, 4, 2, 5, 1, 6, 7]:
        chunk = np.arange(value, value + size, dtype=np.float32)
        value += size
        ring.write(chunk)
        expected.extend(chunk)
        out = np.empty(ring.available, np.float32)
        assert ring.read_into(out) == len(out)
        assert list(out) == expected[-len(out) :]
        expected.clear()
    assert ring.overruns == 0


def test_blocking_read_times_out_then_wakes_on_write():
    ring = RingBuffer(100)
    t0 = time.monotonic()
    assert ring.read(10, timeout=0.05) is None
    assert time.monotonic() - t0 >= 0.04
    threading.Timer(0.05, lambda: ring.write(np.ones(10, np.float32))).start()
    out = ring.read(10, timeout=2.0)
    assert out is not None and out.sum() == 10


def test_close_wakes_a_blocked_reader():
    ring = RingBuffer(100)
    threading.Timer(0.05, ring.close).start()
    t0 = time.monotonic()
    assert ring.read(10, timeout=5.0) is None
    assert time.monotonic() - t0 < 2.0
    assert ring.write(np.ones(3, np.float32)) == 0


def test_clear_cancels_a_writer_waiting_for_room():
    ring = RingBuffer(10, overflow="reject")
    ring.write(np.ones(10, np.float32))
    result = {}

    def writer():
        result["ok"] = ring.write_wait(np.full(5, 7.0, np.float32), timeout=5.0)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.05)
    ring.clear()
    t.join(2.0)
    assert result["ok"] is False and ring.available == 0


def test_write_wait_gets_in_once_the_reader_makes_room():
    ring = RingBuffer(10, overflow="reject")
    ring.write(np.ones(10, np.float32))
    threading.Timer(0.05, lambda: ring.read(5, timeout=1)).start()
    assert ring.write_wait(np.full(5, 2.0, np.float32), timeout=2.0)
    assert ring.overruns == 0
    np.testing.assert_array_equal(ring.read(10, timeout=0), [1] * 5 + [2] * 5)


@pytest.mark.parametrize("reader_delay", [0.0, 0.002])
def test_producer_and_consumer_threads(reader_delay):
    """A fast producer (a callback writing 1920-sample blocks) against a consumer thread.

    Every sample carries its sequence number, so the consumer can check that what it reads is
    in order and that every gap is accounted for by the `dropped` counter.
    """
    block, blocks = 480, 2000
    ring = RingBuffer(4 * block, overflow="drop_oldest")
    got: list[np.ndarray] = []
    done = threading.Event()

    def producer():
        for i in range(blocks):
            ring.write(np.arange(i * block, (i + 1) * block, dtype=np.float32))
            if i % 50 == 0:
                time.sleep(0.001)
        done.set()
        ring.close()

    def consumer():
        while True:
            out = ring.read(block, timeout=1.0)
            if out is None:
                if done.is_set():
                    rest = np.empty(ring.available, np.float32)
                    ring.read_into(rest)
                    got.append(rest)
                    return
                continue
            got.append(out)
            if reader_delay:
                time.sleep(reader_delay)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    seq = np.concatenate(got)
    total = block * blocks
    assert np.all(np.diff(seq) > 0), "samples out of order or duplicated"
    assert len(seq) + ring.dropped == total, "lost samples not counted"
    assert seq[-1] == total - 1
    if reader_delay:  # a slow reader must have lost something, and it was counted
        assert ring.overruns > 0 and ring.dropped > 0
