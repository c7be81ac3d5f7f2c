"""Semantic steering of the lidar codec by the camera's semantic map (issue 4 item 2).

The encoder node keeps the latest semantic map of the camera (``SemanticMapCache``)
and, for each lidar cloud, labels every point with the class of the pixel it
projects to (``label_cloud``); ``rangecode`` in ``semantic`` mode then takes
each point's error bound from its class. Points behind the camera, outside
the image, not finite, or in a cloud with no map recent enough get
``OUTSIDE_VIEW`` (255), i.e. the default bound.

Calibration file (``config/calibration.yaml``; YAML)::

    camera:
      width: 1920          # image size K is given for
      height: 1080
      K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # integer pixel coordinates are
                                                 # pixel centres (ROS / OpenCV)
    T_lidar_to_camera:     # 4x4 (or 3x4): p_camera = T @ [p_lidar, 1], camera
      - [...]              # optical frame x right, y down, z forward

These are the keys of the ``<BAG>.calibration.yaml`` that ``sensor-codec
synth`` writes, so that file can be used as it is. A KITTI-format
``calib.txt`` (P2, R0_rect, Tr_velo_to_cam) is read too; it states no image
size, so its label images must have the calibrated size. A semantic map of
another size than the calibration's (the codec may run on a resized image)
uses K scaled to it.

Pure numpy; no ROS.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, InvalidFrameError
from .frames import PointCloudFrame
from .pointcloud.semantic import CLASS_FIELD, OUTSIDE_VIEW, point_classes, with_class_field
from .resources import data_file

DEFAULT_CALIBRATION = "calibration.yaml"


def default_calibration_path() -> Path:
    return data_file("config", DEFAULT_CALIBRATION)


@dataclass(frozen=True)
class CameraLidarCalibration:
    """Intrinsics of one camera and the lidar-to-camera extrinsics."""

    K: np.ndarray                   # 3x3, or 3x4 projection (KITTI P2)
    lidar_to_camera: np.ndarray     # 4x4
    width: int | None = None        # image size K is given for (None: not stated)
    height: int | None = None
    source: str = "<memory>"

    def intrinsics_for(self, width: int, height: int) -> np.ndarray:
        """K (3x3 or 3x4) for a label image of ``width`` x ``height`` pixels, with the
        principal point shifted by half a pixel so that truncating a projected
        coordinate gives the pixel whose centre is nearest."""
        k = np.array(self.K, np.float64)
        sx = sy = 1.0
        if self.width is not None and self.height is not None:
            sx, sy = width / self.width, height / self.height
        # u' = sx (u + 0.5): integer pixel centres become half-integers, so
        # pixel i covers [i, i + 1) and truncation picks it. Adding multiples
        # of the last row keeps this exact for a 3x4 projection as well.
        k[0] = sx * k[0] + 0.5 * sx * k[2]
        k[1] = sy * k[1] + 0.5 * sy * k[2]
        return k


def _matrix(value, shapes: tuple[tuple[int, int], ...], what: str, source: str) -> np.ndarray:
    try:
        m = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"calibration {source}: {what} is not a numeric matrix") from None
    if m.shape not in shapes or not np.isfinite(m).all():
        raise ConfigError(f"calibration {source}: {what} must be a finite "
                          f"{' or '.join(f'{r}x{c}' for r, c in shapes)} matrix, got shape "
                          f"{m.shape}")
    return m


def parse_calibration(document, source: str = "<memory>") -> CameraLidarCalibration:
    """The calibration from a parsed YAML document (see the module doc)."""
    if not isinstance(document, dict) or not isinstance(document.get("camera"), dict) \
            or "T_lidar_to_camera" not in document:
        raise ConfigError(f"calibration {source} needs 'camera: {{width, height, K}}' and "
                          f"'T_lidar_to_camera' (4x4); see config/{DEFAULT_CALIBRATION}")
    camera = document["camera"]
    if "K" not in camera:
        raise ConfigError(f"calibration {source}: camera has no 'K' (3x3 intrinsics)")
    k = _matrix(camera["K"], ((3, 3), (3, 4)), "camera.K", source)
    t = _matrix(document["T_lidar_to_camera"], ((4, 4), (3, 4)), "T_lidar_to_camera", source)
    if t.shape == (3, 4):
        t = np.vstack([t, [0.0, 0.0, 0.0, 1.0]])
    rotation = t[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3):
        raise ConfigError(f"calibration {source}: T_lidar_to_camera's 3x3 part is not a "
                          f"rotation (R R^T != I)")
    width, height = camera.get("width"), camera.get("height")
    if (width is None) != (height is None):
        raise ConfigError(f"calibration {source}: give both camera.width and camera.height "
                          f"or neither")
    if width is not None and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                     for v in (width, height)):
        raise ConfigError(f"calibration {source}: camera width/height must be positive "
                          f"integers, got {width!r} x {height!r}")
    return CameraLidarCalibration(k, t, width, height, source)


def load_calibration(path: str | Path | None = None) -> CameraLidarCalibration:
    """Read a calibration file: YAML as in the module doc, or KITTI ``calib.txt``
    (``.txt``). ``None``: the shipped ``config/calibration.yaml``."""
    import yaml

    path = Path(path) if path else default_calibration_path()
    if path.suffix == ".txt":
        from .datasets.calibration import load_kitti_calibration

        kitti = load_kitti_calibration(path)
        return CameraLidarCalibration(kitti.P2, kitti.velo_to_rect, None, None, str(path))
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read calibration file {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"calibration file {str(path)!r} is not valid YAML: {exc}") from None
    return parse_calibration(document, str(path))


def label_cloud(frame: PointCloudFrame, labels: np.ndarray | None,
                calibration: CameraLidarCalibration) -> PointCloudFrame:
    """A copy of ``frame`` with a ``semantic_class`` (uint8) field: the class of
    the pixel of ``labels`` each point projects to, ``OUTSIDE_VIEW`` where it
    projects nowhere or where ``labels`` is None (no recent map)."""
    points = frame.points
    if labels is None:
        classes = np.full(points.size, OUTSIDE_VIEW, np.uint8)
    else:
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise InvalidFrameError(f"semantic map must be a 2-D label image, got shape "
                                    f"{labels.shape}")
        height, width = labels.shape
        xyz = np.stack([points[a] for a in ("x", "y", "z")], axis=1).astype(np.float64)
        classes = point_classes(xyz, labels, calibration.intrinsics_for(width, height),
                                calibration.lidar_to_camera)
    return with_class_field(frame, classes)


class SemanticMapCache:
    """The latest semantic map of a camera and its stamp; thread-safe.

    The camera codec is slower than the lidar codec, so a cloud usually
    reaches the encoder before the map of its time: ``get`` may wait (bounded)
    for it."""

    def __init__(self, max_age_s: float) -> None:
        if not (np.isfinite(max_age_s) and max_age_s >= 0):
            raise ConfigError(f"semantic map max age must be >= 0 s, got {max_age_s!r}")
        self.max_age_ns = round(max_age_s * 1e9)
        self._cond = threading.Condition()
        self._labels: np.ndarray | None = None
        self._stamp_ns = 0
        self._closed = False
        self.hits = 0
        self.misses = 0
        self.waits = 0  # gets that had to wait for a map

    def put(self, labels: np.ndarray, stamp_ns: int) -> None:
        """Keep the map unless a newer one is already held (worker threads race)."""
        with self._cond:
            if self._labels is None or stamp_ns >= self._stamp_ns:
                self._labels = labels
                self._stamp_ns = int(stamp_ns)
                self._cond.notify_all()

    def close(self) -> None:
        """Release every waiting ``get`` (shutting down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, stamp_ns: int, wait_s: float = 0.0) -> np.ndarray | None:
        """The map if its stamp is within the max age of ``stamp_ns`` (either
        side: the camera may run just ahead of the lidar), else None.

        With ``wait_s`` > 0 and no such map yet, waits up to that long for one,
        unless the map held is already newer than ``stamp_ns`` plus the max age
        (the camera has moved past this cloud's time)."""
        stamp_ns = int(stamp_ns)
        deadline = time.monotonic() + wait_s
        waited = False
        with self._cond:
            while True:
                if self._labels is not None:
                    if abs(stamp_ns - self._stamp_ns) <= self.max_age_ns:
                        self.hits += 1
                        return self._labels
                    if self._stamp_ns > stamp_ns + self.max_age_ns:
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                if not waited:
                    waited = True
                    self.waits += 1
                    self._cond.notify_all()  # lets a test see that it waits
                self._cond.wait(remaining)
            self.misses += 1
            return None


__all__ = ["CLASS_FIELD", "OUTSIDE_VIEW", "CameraLidarCalibration", "SemanticMapCache",
           "default_calibration_path", "label_cloud", "load_calibration", "parse_calibration"]
