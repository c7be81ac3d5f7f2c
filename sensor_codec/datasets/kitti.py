"""KITTI object-benchmark frame -> rosbag.

Layout of a sample directory (as in ``samples/kitti_000000``):

* ``velodyne.bin``: HDL-64E scan, N x 4 little-endian float32
  (x, y, z in metres, reflectance 0..1); written as fields x, y, z,
  ``intensity`` (the ROS name for it).
* ``image_2.png``: left colour camera, written as rgb8.
* ``calib.txt``: KITTI calibration (P2, R0_rect, Tr_velo_to_cam, ...), written
  in the bag's ``/calibration`` topic under ``calibration.lidar``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..frames import CameraFrame, PointCloudFrame
from .calibration import KittiCalibration, load_kitti_calibration
from .common import (CAMERA_FRAME, CAMERA_TOPIC, DEFAULT_STAMP_NS, LIDAR_FRAME, LIDAR_TOPIC,
                     ImportReport, calibration_yaml, cloud_from_table, read_float32_table,
                     read_image, require_files, write_dataset_bag)

LIDAR_FILE, IMAGE_FILE, CALIB_FILE = "velodyne.bin", "image_2.png", "calib.txt"
LIDAR_FIELDS = ("x", "y", "z", "intensity")


@dataclass
class KittiSample:
    lidar: PointCloudFrame
    image: CameraFrame
    calibration: KittiCalibration


def read_kitti(directory: str | Path, stamp_ns: int = DEFAULT_STAMP_NS) -> KittiSample:
    directory = require_files(directory, (LIDAR_FILE, IMAGE_FILE, CALIB_FILE), "KITTI")
    table = read_float32_table(directory / LIDAR_FILE, len(LIDAR_FIELDS))
    lidar = cloud_from_table(table, LIDAR_FIELDS, "lidar", stamp_ns=stamp_ns,
                             frame_id=LIDAR_FRAME)
    image = read_image(directory / IMAGE_FILE, stamp_ns=stamp_ns, frame_id=CAMERA_FRAME)
    return KittiSample(lidar, image, load_kitti_calibration(directory / CALIB_FILE))


def import_kitti(directory: str | Path, bag: str | Path, *, storage: str = "sqlite3",
                 stamp_ns: int = DEFAULT_STAMP_NS, overwrite: bool = False) -> ImportReport:
    """Write one KITTI frame as ``/camera/image_raw``, ``/lidar/points``, ``/calibration``."""
    sample = read_kitti(directory, stamp_ns)
    calib = calibration_yaml("kitti", Path(directory).name,
                             {"camera": CAMERA_FRAME, "lidar": LIDAR_FRAME},
                             {"lidar": sample.calibration.to_dict()})
    items = [(CAMERA_TOPIC, stamp_ns, sample.image), (LIDAR_TOPIC, stamp_ns, sample.lidar)]
    return write_dataset_bag(bag, "kitti", directory, items, storage=storage,
                             calibration=calib, overwrite=overwrite)
