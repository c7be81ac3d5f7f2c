"""Bookkeeping for the streaming nodes, in plain Python so it is testable
without ROS: a bounded queue that drops the oldest item, windowed rate
meters, latency percentiles, per-topic statistics and a log throttle.

Every time-dependent class takes a ``clock`` (a function returning seconds,
``time.monotonic`` by default) so tests can drive it with a synthetic clock.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")
Clock = Callable[[], float]


class QueueClosed(Exception):
    """Raised by ``DropOldestQueue.get`` once the queue has been closed."""


class DropOldestQueue(Generic[T]):
    """A thread-safe FIFO of at most ``maxsize`` items.

    ``put`` never blocks: when the queue is full the oldest item is
    discarded and counted in ``drops``, so a slow consumer sees the newest
    frames and the producer (a subscription callback) is never held up.
    """

    def __init__(self, maxsize: int) -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigError(f"queue size must be a positive integer, got {maxsize!r}")
        self.maxsize = maxsize
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._drops = 0

    def put(self, item: T) -> T | None:
        """Append ``item``; return the item dropped to make room, if any."""
        with self._cond:
            if self._closed:
                raise QueueClosed("put on a closed queue")
            dropped = None
            if len(self._items) >= self.maxsize:
                dropped = self._items.popleft()
                self._drops += 1
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T:
        """The oldest item. Raises ``TimeoutError`` if none arrives within
        ``timeout`` seconds and ``QueueClosed`` once the queue is closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError(f"no item within {timeout} s")
            if self._closed:
                raise QueueClosed("queue closed")
            return self._items.popleft()

    def close(self) -> int:
        """Wake every waiting consumer and discard pending items; returns how
        many were discarded."""
        with self._cond:
            self._closed = True
            pending = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return pending

    @property
    def drops(self) -> int:
        with self._cond:
            return self._drops

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class RateMeter:
    """Events per second and value per second over a sliding time window.

    The rate divides by the window, or by the time since the meter started
    when that is shorter, so it is right from the first second and decays
    to zero ``window`` seconds after the events stop.
    """

    def __init__(self, window: float = 5.0, clock: Clock = time.monotonic) -> None:
        if not window > 0:
            raise ConfigError(f"rate window must be positive, got {window!r}")
        self.window = float(window)
        self._clock = clock
        self._start = clock()
        self._events: collections.deque[tuple[float, float]] = collections.deque()
        self._lock = threading.Lock()

    def record(self, value: float = 0.0) -> None:
        now = self._clock()
        with self._lock:
            self._events.append((now, float(value)))
            self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self._events and self._events[0][0] <= horizon:
            self._events.popleft()

    def _span(self, now: float) -> float:
        return min(self.window, now - self._start)

    def rate(self) -> float:
        """Events per second."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            span = self._span(now)
            return len(self._events) / span if span > 0 else 0.0

    def value_rate(self) -> float:
        """Sum of recorded values per second (bytes/s when values are sizes)."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            span = self._span(now)
            return sum(v for _, v in self._events) / span if span > 0 else 0.0

    def window_sum(self) -> float:
        """Sum of the values recorded within the window."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            return sum(v for _, v in self._events)


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between
    closest ranks (numpy's default method). NaN for no samples."""
    if not 0 <= q <= 100:
        raise ConfigError(f"percentile must be within 0..100, got {q!r}")
    data = sorted(samples)
    if not data:
        return math.nan
    position = (len(data) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(data) - 1)
    fraction = position - lower
    return data[lower] + (data[upper] - data[lower]) * fraction


class LatencyWindow:
    """The last ``size`` latency samples (seconds) and their percentiles."""

    def __init__(self, size: int = 200) -> None:
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"latency window must be a positive integer, got {size!r}")
        self._samples: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(float(seconds))

    def percentile(self, q: float) -> float:
        with self._lock:
            samples = list(self._samples)
        return percentile(samples, q)

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


class TopicStats:
    """What a node reports per topic in its diagnostics.

    ``received`` counts messages taken from the subscription, ``processed``
    those converted and published, ``errors`` those skipped as bad; the
    queue's drops (passed to ``snapshot``) those discarded because the worker
    was behind. Rates, bit rates, ``compression_ratio`` and the latency
    percentiles cover the recent past (``window`` seconds, the last
    ``latency_samples`` frames); ``compression_ratio_total`` and the counts
    cover the whole run. The encoder's output bit rate is
    ``coded_bitrate_bps``; for the decoder the same figure is its input.
    """

    def __init__(self, window: float = 5.0, latency_samples: int = 200,
                 clock: Clock = time.monotonic) -> None:
        self.input = RateMeter(window, clock)
        self.output = RateMeter(window, clock)
        self.raw_bytes = RateMeter(window, clock)
        self.coded_bytes = RateMeter(window, clock)
        self.latency = LatencyWindow(latency_samples)
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.errors = 0
        self.last_error = ""
        self.raw_bytes_total = 0
        self.coded_bytes_total = 0

    def on_received(self) -> None:
        with self._lock:
            self.received += 1
        self.input.record()

    def on_processed(self, raw_bytes: int, coded_bytes: int, seconds: float) -> None:
        """A frame went through: ``raw_bytes`` of frame data, ``coded_bytes``
        of payload, ``seconds`` spent converting and coding it."""
        with self._lock:
            self.processed += 1
            self.raw_bytes_total += raw_bytes
            self.coded_bytes_total += coded_bytes
        self.output.record()
        self.raw_bytes.record(raw_bytes)
        self.coded_bytes.record(coded_bytes)
        self.latency.record(seconds)

    def on_error(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message

    def snapshot(self, drops: int = 0) -> dict[str, float | int | str]:
        """Plain values for a diagnostics message."""
        raw = self.raw_bytes.window_sum()
        coded = self.coded_bytes.window_sum()
        with self._lock:
            counts = {"received": self.received, "processed": self.processed,
                      "errors": self.errors, "last_error": self.last_error}
            total_ratio = (self.raw_bytes_total / self.coded_bytes_total
                           if self.coded_bytes_total else math.nan)
        return {
            "input_rate_hz": self.input.rate(),
            "output_rate_hz": self.output.rate(),
            "coded_bitrate_bps": 8.0 * self.coded_bytes.value_rate(),
            "raw_bitrate_bps": 8.0 * self.raw_bytes.value_rate(),
            "compression_ratio": raw / coded if coded else math.nan,
            "compression_ratio_total": total_ratio,
            "latency_p50_ms": 1000.0 * self.latency.percentile(50),
            "latency_p95_ms": 1000.0 * self.latency.percentile(95),
            "drops": int(drops),
            **counts,
        }


class LogThrottle:
    """Lets one message per key through every ``period`` seconds.

    ``allow(key)`` returns how many messages for that key were suppressed
    since the last one let through (so the log line can say so), or ``None``
    when this one should be suppressed.
    """

    def __init__(self, period: float = 5.0, clock: Clock = time.monotonic) -> None:
        self.period = float(period)
        self._clock = clock
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: object) -> int | None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)
