"""Semantic steering: each lidar point takes the class of the camera pixel it
projects to, and the class sets its error bound.

Inputs are a label image (H x W integer class ids, e.g. from the camera
segmentation backbone), the camera intrinsics (3x3 K, or a 3x4 projection
P) and the lidar-to-camera extrinsics (4x4, or 3x4 ``Tr_velo_to_cam``).
Points behind the camera or outside the image get ``OUTSIDE_VIEW`` and the
default bound. The per-class bound table lives in
``config/lidar_semantic_bounds.yaml``; the codec stores the table it used
in each payload, so decoding never needs the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, InvalidFrameError
from ..resources import data_file

CLASS_FIELD = "semantic_class"
OUTSIDE_VIEW = 255
MIN_DEPTH = 0.1  # metres in front of the camera


def default_bounds_path() -> Path:
    """``config/lidar_semantic_bounds.yaml`` of the source tree or the installed package."""
    return data_file("config", "lidar_semantic_bounds.yaml")


def load_class_bounds(path: str | Path | None = None) -> tuple[float, dict[int, float], dict[int, str]]:
    """(default bound, {class id: bound}, {class id: name}) from the YAML table."""
    import yaml
    path = Path(path) if path else default_bounds_path()
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read semantic bound table {path}: {exc}") from None
    try:
        default = float(doc["default_bound"])
        bounds, names = {}, {}
        for entry in doc["classes"]:
            cid = int(entry["id"])
            bounds[cid] = float(entry["bound"])
            names[cid] = str(entry.get("name", cid))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"semantic bound table {path} is malformed ({exc}); it needs "
                          "default_bound and classes: [{id, name, bound}]") from None
    for cid, b in list(bounds.items()) + [(-1, default)]:
        if not (np.isfinite(b) and 1e-4 <= b <= 10.0):
            raise ConfigError(f"bound {b} for class {cid} in {path} is outside 1e-4..10 m")
        if not 0 <= cid < 256 and cid != -1:
            raise ConfigError(f"class id {cid} in {path} is outside 0..255")
    return default, bounds, names


def _as_4x4(m: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(m, np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise ConfigError(f"{what} must be a finite 3x4 or 4x4 matrix, got shape {m.shape}")
    return m


def project_points(xyz: np.ndarray, intrinsics: np.ndarray, lidar_to_camera: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) and depth of N x 3 lidar points.

    ``intrinsics`` is 3x3 K or a 3x4 projection P (KITTI's P2, which also
    holds the stereo baseline); ``lidar_to_camera`` is 3x4 or 4x4 (for
    KITTI, R0_rect @ Tr_velo_to_cam)."""
    k = np.asarray(intrinsics, np.float64)
    if k.shape == (3, 3):
        k = np.hstack([k, np.zeros((3, 1))])
    if k.shape != (3, 4) or not np.isfinite(k).all():
        raise ConfigError(f"intrinsics must be a finite 3x3 or 3x4 matrix, got {k.shape}")
    t = _as_4x4(lidar_to_camera, "lidar-to-camera extrinsics")
    homog = np.hstack([xyz, np.ones((xyz.shape[0], 1))])
    cam = homog @ t.T
    img = cam @ k.T
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = img[:, 0] / img[:, 2]
        v = img[:, 1] / img[:, 2]
    return u, v, depth


def point_classes(xyz: np.ndarray, labels: np.ndarray, intrinsics: np.ndarray,
                  lidar_to_camera: np.ndarray) -> np.ndarray:
    """Class id (uint8) of every point; ``OUTSIDE_VIEW`` where the point is
    behind the camera, outside the image or not finite."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidFrameError(f"label image must be 2-D integer, got {labels.dtype} "
                                f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise InvalidFrameError("label image class ids must be within 0..255")
    xyz = np.asarray(xyz, np.float64)
    u, v, depth = project_points(xyz, intrinsics, lidar_to_camera)
    h, w = labels.shape
    inside = (np.isfinite(u) & np.isfinite(v) & (depth > MIN_DEPTH)
              & (u >= 0) & (u < w) & (v >= 0) & (v < h))
    out = np.full(xyz.shape[0], OUTSIDE_VIEW, np.uint8)
    out[inside] = labels[v[inside].astype(np.int64), u[inside].astype(np.int64)]
    return out


def bounds_for_classes(classes: np.ndarray, default: float, table: dict[int, float]) -> np.ndarray:
    """Per-point bound from class ids (default for unknown ids and OUTSIDE_VIEW)."""
    lut = np.full(256, default, np.float64)
    for cid, b in table.items():
        lut[cid] = b
    lut[OUTSIDE_VIEW] = default
    return lut[np.asarray(classes, np.int64)]


def with_class_field(frame, classes: np.ndarray):
    """A copy of a lidar ``PointCloudFrame`` with a ``semantic_class`` uint8
    field appended (what the codec's ``semantic`` mode reads)."""
    from ..frames import PointCloudFrame
    pts = frame.points
    if classes.shape != (pts.size,):
        raise InvalidFrameError(f"{classes.shape[0]} classes for {pts.size} points")
    names = [n for n in pts.dtype.names if n != CLASS_FIELD]
    dtype = np.dtype([(n, pts.dtype[n]) for n in names] + [(CLASS_FIELD, np.uint8)])
    out = np.empty(pts.size, dtype)
    for n in names:
        out[n] = pts[n]
    out[CLASS_FIELD] = classes
    return PointCloudFrame(out, frame.modality, frame.height, frame.width, frame.stamp_ns,
                           frame.frame_id)


def read_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """KITTI calib.txt: {key: matrix as a flat float array}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if ":" in line:
            key, vals = line.split(":", 1)
            if vals.strip():
                out[key.strip()] = np.array([float(x) for x in vals.split()])
    return out
