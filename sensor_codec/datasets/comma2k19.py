"""comma2k19 factory-radar tracks -> rosbag of radar PointCloud2 messages.

Layout (as in ``samples/comma2k19_radar``, one segment's ``radar`` log):

* ``t.npy``: float64 seconds, one per CAN message (N,).
* ``value.npy``: float64 (N, 7): forward m, left m, relative speed m/s,
  nan, nan, CAN address (one per track slot), new-track flag.

Each CAN message carries one track. The radar sends its tracks in bursts, one
burst per 20 Hz cycle, spread over a few milliseconds, so grouping "per
distinct t" would give mostly one-point clouds. The default ``group="cycle"``
starts a new cloud when the gap to the previous message exceeds ``gap_s``
(20 ms, under half the 50 ms cycle) or when a track address repeats; the
sample then gives ~1200 clouds of 5-13 tracks at ~20 Hz. ``group="timestamp"``
makes one cloud per distinct ``t``.

Each cloud is stamped with its last message's time and has fields x
(forward), y (left), z (0: the radar reports no height), ``v_r`` (relative
speed, float32), ``track_id`` (CAN address, uint32) and ``new_track``
(uint8 flag), in ROS's x-forward, y-left frame ``radar``.

``group="window"`` makes one cloud per ``window_s`` seconds and
``group="stream"`` (``read_comma2k19_stream``) the whole log as one cloud, in
message order; both add a ``time`` field (float32 seconds after the cloud's
stamp, its first message's time; float32 keeps 4 us steps over a minute)
and are the forms in which track continuity across cycles can be exploited
(radar_ac's keyed predictors): fleets that upload track logs rather than
stream cycles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..frames import PointCloudFrame
from .common import RADAR_FRAME, RADAR_TOPIC, DatasetError, ImportReport, require_files, \
    write_dataset_bag

TIME_FILE, VALUE_FILE = "t.npy", "value.npy"
COLUMNS = 7
FORWARD, LEFT, SPEED, ADDRESS, NEW_TRACK = 0, 1, 2, 5, 6
DEFAULT_GAP_S = 0.02
GROUPINGS = ("cycle", "timestamp", "window", "stream")
DEFAULT_WINDOW_S = 1.0


def load_tracks(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(t, value) in time order, shapes checked."""
    directory = require_files(directory, (TIME_FILE, VALUE_FILE), "comma2k19 radar")
    try:
        # allow_pickle=False: a .npy with objects is refused, never unpickled.
        t = np.load(directory / TIME_FILE, allow_pickle=False)
        value = np.load(directory / VALUE_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot load comma2k19 arrays in {str(directory)!r}: {exc}") from None
    if t.ndim != 1 or value.ndim != 2 or value.shape != (len(t), COLUMNS):
        raise DatasetError(f"comma2k19 t.npy must be (N,) and value.npy (N, {COLUMNS}); got "
                           f"{t.shape} and {value.shape}")
    if not np.isfinite(t).all():
        raise DatasetError("comma2k19 t.npy holds non-finite timestamps")
    address = value[:, ADDRESS]
    if not (np.isfinite(address).all() and np.all(address == np.round(address))
            and (address >= 0).all() and (address <= np.iinfo(np.uint32).max).all()):
        raise DatasetError("comma2k19 CAN addresses (column 5) must be whole numbers >= 0")
    order = np.argsort(t, kind="stable")
    return t[order].astype(np.float64), value[order].astype(np.float64)


def group_tracks(t: np.ndarray, address: np.ndarray, group: str = "cycle",
                 gap_s: float = DEFAULT_GAP_S, window_s: float = DEFAULT_WINDOW_S) -> list[np.ndarray]:
    """Index arrays, one per output cloud (see the module docstring)."""
    if group not in GROUPINGS:
        raise DatasetError(f"unknown grouping {group!r}; choose one of {list(GROUPINGS)}")
    if len(t) == 0:
        return []
    if group == "stream":
        return [np.arange(len(t))]
    if group == "window":
        if not (np.isfinite(window_s) and window_s > 0):
            raise DatasetError(f"window_s must be a positive number of seconds, got {window_s}")
        bins = np.floor((t - t[0]) / window_s).astype(np.int64)
        return np.split(np.arange(len(t)), np.flatnonzero(np.diff(bins)) + 1)
    if group == "timestamp":
        cuts = np.flatnonzero(np.diff(t) != 0) + 1
        return np.split(np.arange(len(t)), cuts)
    if not gap_s > 0:
        raise DatasetError(f"gap_s must be positive, got {gap_s}")
    groups, current, seen = [], [0], {address[0]}
    for i in range(1, len(t)):
        if t[i] - t[i - 1] > gap_s or address[i] in seen:
            groups.append(np.array(current))
            current, seen = [], set()
        current.append(i)
        seen.add(address[i])
    groups.append(np.array(current))
    return groups


def read_comma2k19(directory: str | Path, group: str = "cycle", gap_s: float = DEFAULT_GAP_S,
                   window_s: float = DEFAULT_WINDOW_S) -> list[PointCloudFrame]:
    """One radar PointCloudFrame per group of track messages."""
    t, value = load_tracks(directory)
    timed = group in ("window", "stream")
    frames = []
    for idx in group_tracks(t, value[:, ADDRESS], group, gap_s, window_s):
        rows = value[idx]
        # Cycles are stamped when complete (last message); timed groups at their start.
        stamp_s = t[idx[0]] if timed else t[idx[-1]]
        extra = {"time": (t[idx] - t[idx[0]]).astype(np.float32)} if timed else {}
        frames.append(PointCloudFrame.from_arrays(
            "radar", stamp_ns=int(round(stamp_s * 1e9)), frame_id=RADAR_FRAME,
            x=rows[:, FORWARD].astype(np.float32), y=rows[:, LEFT].astype(np.float32),
            z=np.zeros(len(idx), np.float32), v_r=rows[:, SPEED].astype(np.float32),
            track_id=rows[:, ADDRESS].astype(np.uint32),
            new_track=(rows[:, NEW_TRACK] != 0).astype(np.uint8), **extra))
    return frames


def read_comma2k19_stream(directory: str | Path) -> PointCloudFrame:
    """Every track message of the log as one radar cloud, in time order."""
    frames = read_comma2k19(directory, "stream")
    if not frames:
        raise DatasetError(f"{str(directory)!r} holds no radar messages")
    return frames[0]


def import_comma2k19(directory: str | Path, bag: str | Path, *, storage: str = "sqlite3",
                     group: str = "cycle", gap_s: float = DEFAULT_GAP_S,
                     window_s: float = DEFAULT_WINDOW_S, overwrite: bool = False) -> ImportReport:
    """Write the tracks as ``/radar/points`` clouds stamped with their CAN times."""
    frames = read_comma2k19(directory, group, gap_s, window_s)
    if not frames:
        raise DatasetError(f"{str(directory)!r} holds no radar messages")
    items = [(RADAR_TOPIC, f.stamp_ns, f) for f in frames]
    return write_dataset_bag(bag, "comma2k19", directory, items, storage=storage,
                             calibration=None, overwrite=overwrite)
