"""The nodes' bookkeeping: drop-oldest queue, rates, percentiles, throttle."""

import math
import threading

import numpy as np
import pytest

from sensor_codec.errors import ConfigError
from sensor_codec.pipeline_stats import (DropOldestQueue, LatencyWindow, LogThrottle,
                                         QueueClosed, RateMeter, TopicStats, percentile)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_queue_keeps_newest_and_counts_drops():
    q = DropOldestQueue(3)
    dropped = [q.put(i) for i in range(7)]
    assert dropped == [None, None, None, 0, 1, 2, 3]
    assert q.drops == 4
    assert len(q) == 3
    assert [q.get(timeout=0) for _ in range(3)] == [4, 5, 6]
    assert q.drops == 4


def test_queue_get_times_out_when_empty():
    q = DropOldestQueue(2)
    with pytest.raises(TimeoutError):
        q.get(timeout=0.0)


def test_queue_close_wakes_waiting_consumer_and_discards_pending():
    q = DropOldestQueue(4)
    q.put("a")
    q.put("b")
    assert q.close() == 2
    with pytest.raises(QueueClosed):
        q.get(timeout=1.0)
    with pytest.raises(QueueClosed):
        q.put("c")

    # A consumer blocked in get() is released by close() from another thread.
    q2 = DropOldestQueue(1)
    outcome = []
    started = threading.Event()

    def consume():
        started.set()
        try:
            q2.get(timeout=30.0)
        except QueueClosed:
            outcome.append("closed")

    t = threading.Thread(target=consume)
    t.start()
    started.wait(5.0)
    q2.close()
    t.join(5.0)
    assert outcome == ["closed"]
    assert not t.is_alive()


def test_queue_handoff_between_threads_preserves_order():
    q = DropOldestQueue(1000)
    received = []

    def consume():
        while True:
            try:
                received.append(q.get(timeout=10.0))
            except QueueClosed:
                return
            if len(received) == 500:
                return

    t = threading.Thread(target=consume)
    t.start()
    for i in range(500):
        q.put(i)
    t.join(10.0)
    assert received == list(range(500))
    assert q.drops == 0


@pytest.mark.parametrize("size", [0, -1, 2.5])
def test_queue_rejects_bad_size(size):
    with pytest.raises(ConfigError, match="positive integer"):
        DropOldestQueue(size)


def test_percentile_matches_numpy_linear_method():
    rng = np.random.default_rng(7)
    data = rng.exponential(0.02, size=101).tolist()
    for q in (0, 5, 50, 95, 99, 100):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)), rel=1e-12)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ConfigError):
        percentile([1.0], 101)


def test_latency_window_keeps_only_recent_samples():
    w = LatencyWindow(size=10)
    for ms in range(1, 101):  # 1..100 ms; only 91..100 remain
        w.record(ms / 1000.0)
    assert len(w) == 10
    assert w.percentile(0) == pytest.approx(0.091)
    assert w.percentile(50) == pytest.approx(0.0955)
    assert w.percentile(100) == pytest.approx(0.100)


def test_rate_meter_on_synthetic_clock():
    clock = FakeClock()
    meter = RateMeter(window=2.0, clock=clock)
    # 8 Hz of 1000-byte messages for 5 s (steps exact in binary floating point).
    for _ in range(40):
        clock.advance(0.125)
        meter.record(1000)
    assert meter.rate() == 8.0
    assert meter.value_rate() == 8000.0
    assert meter.window_sum() == 16 * 1000
    # Silence: the rate decays to zero once the window has passed.
    clock.advance(1.0)
    assert meter.rate() == 4.0
    clock.advance(1.0)
    assert meter.rate() == 0.0
    assert meter.value_rate() == 0.0


def test_rate_meter_is_right_before_a_full_window():
    clock = FakeClock()
    meter = RateMeter(window=5.0, clock=clock)
    assert meter.rate() == 0.0  # no time has passed: no division by zero
    for _ in range(4):
        clock.advance(0.25)
        meter.record()
    assert meter.rate() == pytest.approx(4.0)  # 4 events in 1 s, not 4 in 5 s


def test_topic_stats_snapshot_values():
    clock = FakeClock()
    stats = TopicStats(window=10.0, clock=clock)
    for i in range(20):  # 20 Hz in, every other frame processed
        clock.advance(0.05)
        stats.on_received()
        if i % 2:
            stats.on_processed(raw_bytes=6_000_000, coded_bytes=300_000, seconds=0.010 + i / 1000)
    stats.on_error("bad step")
    snap = stats.snapshot(drops=3)
    assert snap["input_rate_hz"] == pytest.approx(20.0)
    assert snap["output_rate_hz"] == pytest.approx(10.0)
    assert snap["compression_ratio"] == pytest.approx(20.0)
    assert snap["compression_ratio_total"] == pytest.approx(20.0)
    assert snap["coded_bitrate_bps"] == pytest.approx(10 * 300_000 * 8)
    assert snap["raw_bitrate_bps"] == pytest.approx(10 * 6_000_000 * 8)
    latencies_ms = [10 + i for i in range(1, 20, 2)]
    assert snap["latency_p50_ms"] == pytest.approx(np.percentile(latencies_ms, 50))
    assert snap["latency_p95_ms"] == pytest.approx(np.percentile(latencies_ms, 95))
    assert (snap["received"], snap["processed"], snap["errors"], snap["drops"]) == (20, 10, 1, 3)
    assert snap["last_error"] == "bad step"
    # Long after the stream stopped: the windowed figures are empty, the totals stay.
    stats.on_processed(raw_bytes=1000, coded_bytes=500, seconds=0.001)
    clock.advance(60.0)
    later = stats.snapshot()
    assert math.isnan(later["compression_ratio"]) and later["input_rate_hz"] == 0.0
    assert later["compression_ratio_total"] == pytest.approx(60_001_000 / 3_000_500)


def test_topic_stats_without_output_reports_nan_ratio():
    snap = TopicStats(clock=FakeClock()).snapshot()
    assert math.isnan(snap["compression_ratio"])
    assert math.isnan(snap["latency_p50_ms"])
    assert snap["processed"] == 0


def test_log_throttle_counts_suppressed_messages_per_key():
    clock = FakeClock()
    throttle = LogThrottle(period=5.0, clock=clock)
    assert throttle.allow("cam") == 0
    assert throttle.allow("cam") is None
    assert throttle.allow("cam") is None
    assert throttle.allow("lidar") == 0  # keys are independent
    clock.advance(4.9)
    assert throttle.allow("cam") is None
    clock.advance(0.1)
    assert throttle.allow("cam") == 3  # three were held back since the last one
    assert throttle.allow("cam") is None
