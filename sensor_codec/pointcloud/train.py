"""Training of the lidar context model: count residual symbols per context.

``train_context_model(frames)`` encodes each frame at every bound of
``BOUND_SCALES`` with a flat model, collects the geometry streams'
(context, symbol) pairs and turns the counts into smoothed probability
tables (the maximum-likelihood fit of the table model). Deterministic: the
same frames give the same tables, hence the same model id.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..frames import PointCloudFrame
from .context_model import BOUND_SCALES, ContextModel, uniform_model
from .entropy import ALPHABET, to_symbols
from .predict import STREAMS


def count_streams(frames: Iterable[PointCloudFrame], bounds=BOUND_SCALES) -> dict[str, np.ndarray]:
    from ..codecs.lidar_learned import RangeCodeLidar
    counts = {k: np.zeros((len(BOUND_SCALES), n, ALPHABET), np.int64) for k, n in STREAMS.items()}
    flat = uniform_model(STREAMS)
    for frame in frames:
        for bound in bounds:
            codec = RangeCodeLidar(model=flat, bound=float(bound))
            codec.trace = []
            codec.encode(frame)
            for scale, streams in codec.trace:
                for name, (values, ctx) in streams.items():
                    sym = to_symbols(values)[0]
                    np.add.at(counts[name][scale], (ctx, sym), 1)
    return counts


def train_context_model(frames: Iterable[PointCloudFrame]) -> ContextModel:
    return ContextModel.from_counts(count_streams(list(frames)))


SAMPLE_DIRS = {"kitti": "kitti_000000", "vod": "vod_00549", "nuscenes": "nuscenes_n015"}
# Synthetic sweeps in the training set: (seed, beams, columns), one 64-beam
# and one 32-beam sensor (the real samples' HDL-64E and HDL-32E classes).
SYNTHETIC_SWEEPS = ((1, 64, 2048), (2, 32, 1084))


def synthetic_lidar(sweeps=SYNTHETIC_SWEEPS) -> list[PointCloudFrame]:
    """First sweep of a seeded synthetic drive per (seed, beams, columns),
    x, y, z and ring only (deterministic: same sweeps, same model)."""
    from ..synthetic.drive import SyntheticDrive
    out = []
    for seed, beams, columns in sweeps:
        drive = SyntheticDrive(seed=seed, duration_s=0.3, sensors=("lidar",),
                               lidar_beams=beams, lidar_columns=columns)
        frame = drive.lidar_scan(0).frame
        out.append(PointCloudFrame.from_arrays(
            frame.modality, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id,
            **{k: frame.points[k] for k in ("x", "y", "z", "ring")}))
    return out


def sample_lidar(name: str, samples_dir, geometry_only: bool = False) -> PointCloudFrame:
    """A lidar sample frame from ../shared/data/samples (training and benchmarks;
    the codec itself never reads these). ``geometry_only`` keeps x, y, z (and
    ring, which is the beam label) only."""
    from pathlib import Path

    from ..datasets.kitti import read_kitti
    from ..datasets.nuscenes import read_nuscenes
    from ..datasets.vod import read_vod
    readers = {"kitti": read_kitti, "vod": read_vod, "nuscenes": read_nuscenes}
    if name not in readers:
        raise ValueError(f"unknown sample {name!r}; choose from {sorted(readers)}")
    frame = readers[name](Path(samples_dir) / SAMPLE_DIRS[name]).lidar
    if not geometry_only:
        return frame
    keep = [f for f in ("x", "y", "z", "ring") if f in frame.field_names]
    return PointCloudFrame.from_arrays(frame.modality, stamp_ns=frame.stamp_ns,
                                       frame_id=frame.frame_id,
                                       **{f: frame.points[f] for f in keep})
