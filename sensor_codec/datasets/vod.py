"""View-of-Delft frame -> rosbag.

Layout of a sample directory (as in ``samples/vod_00549``):

* ``lidar.bin``: HDL-64 scan, N x 4 little-endian float32 (x, y, z, intensity).
* ``radar.bin``: ZF FRGen21 3+1D radar detections, N x 7 float32, written as
  fields x, y, z, ``rcs`` (dBsm), ``v_r`` (radial velocity, m/s),
  ``v_r_compensated`` (ego-motion compensated, m/s), ``time``.
* ``image_2.jpg``: camera, written as rgb8.
* ``calib_lidar.txt`` / ``calib_radar.txt``: KITTI format; their
  ``Tr_velo_to_cam`` is the lidar (resp. radar) to camera transform. Written
  under ``calibration.lidar`` and ``calibration.radar``.
* ``pose.json``: one JSON object per line (odomToCamera, mapToCamera,
  UTMToCamera), each a row-major 4x4; written under ``pose``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..frames import CameraFrame, PointCloudFrame
from .calibration import KittiCalibration, load_kitti_calibration
from .common import (CAMERA_FRAME, CAMERA_TOPIC, DEFAULT_STAMP_NS, LIDAR_FRAME, LIDAR_TOPIC,
                     RADAR_FRAME, RADAR_TOPIC, DatasetError, ImportReport, calibration_yaml,
                     cloud_from_table, read_float32_table, read_image, require_files,
                     write_dataset_bag)

LIDAR_FILE, RADAR_FILE, IMAGE_FILE = "lidar.bin", "radar.bin", "image_2.jpg"
LIDAR_CALIB_FILE, RADAR_CALIB_FILE, POSE_FILE = "calib_lidar.txt", "calib_radar.txt", "pose.json"
LIDAR_FIELDS = ("x", "y", "z", "intensity")
RADAR_FIELDS = ("x", "y", "z", "rcs", "v_r", "v_r_compensated", "time")


@dataclass
class VodSample:
    lidar: PointCloudFrame
    radar: PointCloudFrame
    image: CameraFrame
    lidar_calibration: KittiCalibration
    radar_calibration: KittiCalibration
    pose: dict[str, np.ndarray] = field(default_factory=dict)  # name -> 4x4


def read_pose(path: str | Path) -> dict[str, np.ndarray]:
    """Parse ``pose.json``: concatenated JSON objects of 16-value row-major matrices."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {str(path)!r}: {exc}") from None
    decoder = json.JSONDecoder()
    poses: dict[str, np.ndarray] = {}
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{str(path)!r} is not a sequence of JSON objects: {exc}") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{str(path)!r}: expected JSON objects, got {type(obj).__name__}")
        for name, values in obj.items():
            matrix = np.asarray(values, dtype=np.float64)
            if matrix.size != 16 or not np.isfinite(matrix).all():
                raise DatasetError(f"{str(path)!r}: pose {name!r} must be 16 finite numbers, "
                                   f"got {matrix.size} values")
            poses[name] = matrix.reshape(4, 4)
    return poses


def read_vod(directory: str | Path, stamp_ns: int = DEFAULT_STAMP_NS) -> VodSample:
    directory = require_files(directory, (LIDAR_FILE, RADAR_FILE, IMAGE_FILE, LIDAR_CALIB_FILE,
                                          RADAR_CALIB_FILE), "View-of-Delft")
    lidar = cloud_from_table(read_float32_table(directory / LIDAR_FILE, len(LIDAR_FIELDS)),
                             LIDAR_FIELDS, "lidar", stamp_ns=stamp_ns, frame_id=LIDAR_FRAME)
    radar = cloud_from_table(read_float32_table(directory / RADAR_FILE, len(RADAR_FIELDS)),
                             RADAR_FIELDS, "radar", stamp_ns=stamp_ns, frame_id=RADAR_FRAME)
    image = read_image(directory / IMAGE_FILE, stamp_ns=stamp_ns, frame_id=CAMERA_FRAME)
    pose = read_pose(directory / POSE_FILE) if (directory / POSE_FILE).is_file() else {}
    return VodSample(lidar, radar, image, load_kitti_calibration(directory / LIDAR_CALIB_FILE),
                     load_kitti_calibration(directory / RADAR_CALIB_FILE), pose)


def import_vod(directory: str | Path, bag: str | Path, *, storage: str = "sqlite3",
               stamp_ns: int = DEFAULT_STAMP_NS, overwrite: bool = False) -> ImportReport:
    """Write one View-of-Delft frame: camera, lidar, radar and ``/calibration``."""
    sample = read_vod(directory, stamp_ns)
    calib = calibration_yaml(
        "vod", Path(directory).name,
        {"camera": CAMERA_FRAME, "lidar": LIDAR_FRAME, "radar": RADAR_FRAME},
        {"lidar": sample.lidar_calibration.to_dict(),
         "radar": sample.radar_calibration.to_dict()},
        {"pose": {k: v.tolist() for k, v in sample.pose.items()}} if sample.pose else None)
    items = [(CAMERA_TOPIC, stamp_ns, sample.image), (LIDAR_TOPIC, stamp_ns, sample.lidar),
             (RADAR_TOPIC, stamp_ns, sample.radar)]
    return write_dataset_bag(bag, "vod", directory, items, storage=storage, calibration=calib,
                             overwrite=overwrite)
