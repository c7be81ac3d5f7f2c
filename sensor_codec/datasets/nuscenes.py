"""nuScenes sample -> rosbag.

Layout of a sample directory (as in ``samples/nuscenes_n015``):

* ``LIDAR_TOP.pcd.bin``: HDL-32E sweep, N x 5 little-endian float32
  (x, y, z, intensity 0..255, ring 0..31); written as float32 x, y, z,
  intensity and ``ring`` as uint16 (the Velodyne ROS driver's type).
* ``CAM_FRONT.jpg``: front camera, written as rgb8.

The sample holds no calibration, so the bag has no ``/calibration`` topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..frames import CameraFrame, PointCloudFrame
from .common import (CAMERA_FRAME, CAMERA_TOPIC, DEFAULT_STAMP_NS, LIDAR_FRAME, LIDAR_TOPIC,
                     ImportReport, cloud_from_table, read_float32_table, read_image,
                     require_files, write_dataset_bag)

LIDAR_FILE, IMAGE_FILE = "LIDAR_TOP.pcd.bin", "CAM_FRONT.jpg"
LIDAR_FIELDS = ("x", "y", "z", "intensity", "ring")


@dataclass
class NuScenesSample:
    lidar: PointCloudFrame
    image: CameraFrame


def read_nuscenes(directory: str | Path, stamp_ns: int = DEFAULT_STAMP_NS) -> NuScenesSample:
    directory = require_files(directory, (LIDAR_FILE, IMAGE_FILE), "nuScenes")
    table = read_float32_table(directory / LIDAR_FILE, len(LIDAR_FIELDS))
    lidar = cloud_from_table(table, LIDAR_FIELDS, "lidar", stamp_ns=stamp_ns,
                             frame_id=LIDAR_FRAME, dtypes={"ring": np.uint16})
    image = read_image(directory / IMAGE_FILE, stamp_ns=stamp_ns, frame_id=CAMERA_FRAME)
    return NuScenesSample(lidar, image)


def import_nuscenes(directory: str | Path, bag: str | Path, *, storage: str = "sqlite3",
                    stamp_ns: int = DEFAULT_STAMP_NS, overwrite: bool = False) -> ImportReport:
    """Write one nuScenes sample as ``/camera/image_raw`` and ``/lidar/points``."""
    sample = read_nuscenes(directory, stamp_ns)
    items = [(CAMERA_TOPIC, stamp_ns, sample.image), (LIDAR_TOPIC, stamp_ns, sample.lidar)]
    return write_dataset_bag(bag, "nuscenes", directory, items, storage=storage,
                             calibration=None, overwrite=overwrite)
