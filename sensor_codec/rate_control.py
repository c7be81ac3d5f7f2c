"""Bandwidth target: pick a quality level per frame so a topic stays near a bit rate.

``RateController`` knows nothing about codecs or ROS. It is given a target in
kbit/s and a ladder of ``num_levels`` quality levels (index 0 the smallest,
``num_levels - 1`` the best); per frame the caller asks ``decide(now_s)`` for
a level, codes the frame at that level and reports the payload size with
``record(level, nbytes)``.

How it decides:

* **Size model.** log(bytes) at level l is predicted as
  ``shape[l] + scene + offset[l]``: ``shape`` is the prior (``prior_bytes``,
  or a geometric ladder of ``level_ratio`` per level), ``scene`` an
  exponential average shared by every level (``smoothing``), so a scene
  change seen at the level in use moves the prediction of all levels at
  once, and ``offset[l]`` a slower per-level correction of the prior's shape
  (``level_smoothing``). A level never seen yet takes the offset interpolated
  between the nearest seen levels. Predictions are made non-decreasing in
  the level.
* **Leaky bucket.** Credit (bytes) accrues at the target rate and each frame
  spends its size; it is kept within +-``burst_s`` seconds of the target
  rate, so a short burst is absorbed and a long idle spell does not buy an
  unbounded burst later. The allowance of a frame is the per-frame budget
  (target rate times the observed frame interval) plus the credit above that
  budget spread over ``burst_s`` worth of frames. The stream starts, and
  restarts after a pause longer than ``burst_s``, with one frame's budget.
* **Choice.** The highest level predicted to fit the allowance. Never above
  the top level; when not even level 0 fits, level 0 is used and counted in
  ``fallbacks``.

Time is whatever clock the caller passes (seconds, monotonic), so the
controller is deterministic under test.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

# Bytes per level grow by about this factor per level for camera_learned
# (1.30 per level on a 320x240 synthetic frame with the 8-level model; 1.37 with
# camera-18fb10dfdffd on CamVid val, 0.063 -> 1.036 bpp over levels 0..9); only the
# guess before a level is observed depends on it.
DEFAULT_LEVEL_RATIO = 1.3
DEFAULT_NOMINAL_RATE_HZ = 10.0
DEFAULT_BURST_S = 1.0
DEFAULT_SMOOTHING = 0.25
DEFAULT_LEVEL_SMOOTHING = 0.1
DEFAULT_WINDOW_FRAMES = 50
# Weight of a new frame interval in the frame-rate estimate.
INTERVAL_SMOOTHING = 0.2
# An interval counts for at most this many times the current estimate.
MAX_INTERVAL_STEP = 2.0


@dataclass(frozen=True)
class RateDecision:
    """What ``decide`` chose and why."""

    level: int                      # index into the ladder, 0 .. num_levels - 1
    allowance_bytes: float          # what this frame may spend
    predicted_bytes: float | None   # predicted size at ``level`` (None before any data)
    fits: bool                      # False: nothing fitted, ``level`` is the fallback 0


class RateController:
    """Chooses a quality level per frame for a target bit rate (see module doc)."""

    def __init__(self, target_kbps: float, num_levels: int, *,
                 prior_bytes: Sequence[float] | None = None,
                 level_ratio: float = DEFAULT_LEVEL_RATIO,
                 nominal_rate_hz: float = DEFAULT_NOMINAL_RATE_HZ,
                 burst_s: float = DEFAULT_BURST_S,
                 smoothing: float = DEFAULT_SMOOTHING,
                 level_smoothing: float = DEFAULT_LEVEL_SMOOTHING,
                 window_frames: int = DEFAULT_WINDOW_FRAMES) -> None:
        if not (isinstance(target_kbps, (int, float)) and math.isfinite(target_kbps)
                and target_kbps > 0):
            raise ConfigError(f"bandwidth target must be a positive kbit/s value, got "
                              f"{target_kbps!r}")
        if not isinstance(num_levels, int) or num_levels < 1:
            raise ConfigError(f"num_levels must be a positive integer, got {num_levels!r}")
        _check_positive("level_ratio", level_ratio)
        _check_positive("nominal_rate_hz", nominal_rate_hz)
        _check_positive("burst_s", burst_s)
        for name, value in (("smoothing", smoothing), ("level_smoothing", level_smoothing)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ConfigError(f"{name} must be within 0..1, got {value!r}")
        if not isinstance(window_frames, int) or window_frames < 2:
            raise ConfigError(f"window_frames must be an integer >= 2, got {window_frames!r}")
        if level_ratio < 1.0:
            raise ConfigError(f"level_ratio must be >= 1 (higher levels are not smaller), "
                              f"got {level_ratio!r}")
        self.target_kbps = float(target_kbps)
        self.num_levels = num_levels
        self.burst_s = float(burst_s)
        self.smoothing = float(smoothing)
        self.level_smoothing = float(level_smoothing)
        if prior_bytes is not None:
            prior = np.asarray(prior_bytes, np.float64)
            if prior.shape != (num_levels,) or not np.all(np.isfinite(prior)) \
                    or np.any(prior <= 0):
                raise ConfigError(f"prior_bytes needs {num_levels} positive sizes, got "
                                  f"{list(prior_bytes)!r}")
            self._shape = np.log(np.maximum.accumulate(prior))
            self._anchored = True  # the prior's absolute sizes are used before any data
        else:
            self._shape = np.arange(num_levels) * math.log(level_ratio)
            self._anchored = False
        self._scene = 0.0                     # log-size shift shared by all levels
        self._offset = np.zeros(num_levels)   # per-level correction, where seen
        self._seen = np.zeros(num_levels, bool)
        self._credit = 0.0
        self._interval = 1.0 / float(nominal_rate_hz)
        self._last_time: float | None = None
        self._window: deque[tuple[float, int]] = deque(maxlen=window_frames)
        self._lock = threading.Lock()
        self.frames = 0
        self.fallbacks = 0
        self.last_level: int | None = None

    # --- the rates ----------------------------------------------------------------

    @property
    def target_bytes_per_s(self) -> float:
        return self.target_kbps * 1000.0 / 8.0

    @property
    def capacity_bytes(self) -> float:
        """Most credit (and most debt) the bucket holds."""
        return self.target_bytes_per_s * self.burst_s

    @property
    def frame_rate_hz(self) -> float:
        """The observed frame rate (the nominal one until two frames are seen)."""
        return 1.0 / self._interval

    # --- size model ---------------------------------------------------------------

    def predicted_bytes(self) -> np.ndarray | None:
        """Predicted payload size per level; None before the first observation
        when no absolute prior was given."""
        with self._lock:
            log_sizes = self._predicted_log()
        return None if log_sizes is None else np.exp(log_sizes)

    def _predicted_log(self) -> np.ndarray | None:
        if not self._seen.any():
            return self._shape.copy() if self._anchored else None
        return np.maximum.accumulate(self._shape + self._scene + self._offsets())

    def _offsets(self) -> np.ndarray:
        seen = np.flatnonzero(self._seen)
        if not seen.size:
            return np.zeros(self.num_levels)
        # np.interp holds the end values beyond the outermost seen levels.
        return np.interp(np.arange(self.num_levels), seen, self._offset[seen])

    # --- per frame ------------------------------------------------------------------

    def decide(self, now_s: float) -> RateDecision:
        """The level for a frame coded now: refill the bucket, then choose."""
        with self._lock:
            dt = None if self._last_time is None else now_s - self._last_time
            if dt is not None and dt > 0:
                # A pause (or a skipped stretch of a bag) is not a frame rate: one
                # interval moves the estimate by at most MAX_INTERVAL_STEP, so a
                # lasting change is still followed within a few frames.
                step = min(dt, MAX_INTERVAL_STEP * self._interval) - self._interval
                self._interval += INTERVAL_SMOOTHING * step
            if dt is None or dt > self.burst_s or dt < 0:
                # A start, a pause longer than the bucket or a jump back: the stream
                # (re)starts with one frame's budget, so it does not open with a burst
                # of credit saved while idle, and the old rate is not the current one.
                self._credit = self.target_bytes_per_s * self._interval
                self._window.clear()
            elif dt > 0:
                self._credit = min(self._credit + self.target_bytes_per_s * dt,
                                   self.capacity_bytes)
            self._last_time = now_s  # a jump back (a bag starting over) re-bases the clock
            budget = self.target_bytes_per_s * self._interval
            spread = max(1.0, self.burst_s / self._interval)
            allowance = budget + (self._credit - budget) / spread
            log_sizes = self._predicted_log()
            if log_sizes is None:  # nothing known yet: the smallest level is the safe start
                decision = RateDecision(0, allowance, None, True)
            else:
                fitting = np.flatnonzero(log_sizes <= math.log(max(allowance, 1e-9)))
                if fitting.size:
                    level = int(fitting[-1])
                    decision = RateDecision(level, allowance, float(np.exp(log_sizes[level])),
                                            True)
                else:
                    self.fallbacks += 1
                    decision = RateDecision(0, allowance, float(np.exp(log_sizes[0])), False)
            self.last_level = decision.level
            return decision

    def record(self, level: int, nbytes: int) -> None:
        """The frame coded at ``level`` took ``nbytes``: spend them, learn from them."""
        if not (isinstance(level, (int, np.integer)) and 0 <= level < self.num_levels):
            raise ConfigError(f"level {level!r} is outside 0..{self.num_levels - 1}")
        if nbytes <= 0:
            raise ConfigError(f"payload size must be positive, got {nbytes!r} bytes")
        with self._lock:
            self.frames += 1
            self._credit = max(self._credit - nbytes, -self.capacity_bytes)
            self._window.append((self._last_time if self._last_time is not None else 0.0,
                                 int(nbytes)))
            observed = math.log(nbytes) - self._shape[level]
            if not self._seen.any() and not self._anchored:
                self._scene = observed  # the first sample sets the scale as it is
            if not self._seen[level]:
                self._offset[level] = self._offsets()[level]
                self._seen[level] = True
            error = observed - self._scene - self._offset[level]
            self._scene += self.smoothing * error
            self._offset[level] += self.level_smoothing * error

    # --- reporting ------------------------------------------------------------------

    def achieved_kbps(self) -> float:
        """Bit rate over the last ``window_frames`` frames since the last pause
        longer than ``burst_s`` (0 before two such frames)."""
        with self._lock:
            if len(self._window) < 2:
                return 0.0
            span = self._window[-1][0] - self._window[0][0]
            if span <= 0:
                return 0.0
            # The first frame's bytes belong to the interval before the window.
            sent = sum(n for _, n in list(self._window)[1:])
        return sent * 8.0 / 1000.0 / span

    def snapshot(self) -> dict[str, float | int | None]:
        """Values for diagnostics."""
        achieved = self.achieved_kbps()
        with self._lock:
            return {"target_kbps": self.target_kbps, "achieved_kbps": achieved,
                    "level": self.last_level, "frames": self.frames,
                    "fallbacks": self.fallbacks, "frame_rate_hz": 1.0 / self._interval,
                    "credit_bytes": self._credit}


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


# --- quality ladders of codecs --------------------------------------------------------

# Settings that are a quality level: higher value, more bytes and better
# quality. Codecs whose only rate knob runs the other way or mixes two
# settings (x265's qp/crf) or that are lossless are not rate-controlled.
QUALITY_SETTING = "quality"
MAX_LADDER_LEVELS = 12


def quality_ladder(codec_name: str, params) -> tuple[str, list[int]]:
    """(setting name, setting values from smallest to best) a rate controller
    walks for a codec whose ``params`` table has an integer ``quality`` setting.

    Up to ``MAX_LADDER_LEVELS`` values: every value of a short range (the
    learned codec's 0..9), else evenly spaced values from a tenth of the range
    up to its top (quality 0..100 -> 10, 18, .., 100). ConfigError for a codec
    without such a setting, naming the ones that have it.
    """
    by_name = {p.name: p for p in params}
    param = by_name.get(QUALITY_SETTING)
    if param is None or param.type is not int or param.min is None or param.max is None:
        raise ConfigError(
            f"codec {codec_name!r} has no integer {QUALITY_SETTING!r} setting with a range, so a "
            f"bandwidth target cannot pick its level; use a codec that has one (camera_learned, "
            f"jpeg, webp, avif, jpegxl) or set the bandwidth target to 0")
    low, high = int(param.min), int(param.max)
    if high - low + 1 <= MAX_LADDER_LEVELS:
        return param.name, list(range(low, high + 1))
    start = low + (high - low) / 10.0
    values = np.rint(np.linspace(start, high, MAX_LADDER_LEVELS)).astype(int)
    return param.name, sorted({int(v) for v in values})
