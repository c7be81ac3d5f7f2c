"""KITTI-format calibration files (KITTI, View-of-Delft): parse into numpy matrices.

A file holds one ``KEY: v1 v2 ...`` line per matrix, row-major::

    P2: 12 values        3x4 projection of the rectified left colour camera
    R0_rect: 9 values    3x3 rectifying rotation
    Tr_velo_to_cam: 12   3x4 [R|t] from the lidar (View-of-Delft: the file's
                         sensor, lidar or radar) frame to the camera frame

Other keys (P0, P1, P3, Tr_imu_to_velo, ...) are kept too; a key with no
values (View-of-Delft writes ``Tr_imu_to_velo:``) counts as absent.
Projecting a sensor point ``X`` (homogeneous, 4-vector) to pixels:
``P2 @ R0_rect_4x4 @ Tr_velo_to_cam_4x4 @ X``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError

REQUIRED_KEYS = ("P2", "R0_rect", "Tr_velo_to_cam")
# Shapes of the keys we know; unknown keys keep their flat values.
KNOWN_SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
                "R_rect": (3, 3), "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4),
                "Tr_cam_to_road": (3, 4)}


class CalibrationError(ConfigError):
    """A calibration file is missing, malformed or lacks a required matrix."""


def _homogeneous(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


@dataclass(frozen=True)
class KittiCalibration:
    """The matrices of one KITTI-format calibration file (float64)."""

    P2: np.ndarray              # 3x4
    R0_rect: np.ndarray         # 3x3
    Tr_velo_to_cam: np.ndarray  # 3x4
    matrices: dict[str, np.ndarray] = field(default_factory=dict)  # every key in the file
    source: str = "<string>"

    @property
    def R0_rect_4x4(self) -> np.ndarray:
        return _homogeneous(self.R0_rect)

    @property
    def Tr_velo_to_cam_4x4(self) -> np.ndarray:
        return _homogeneous(self.Tr_velo_to_cam)

    @property
    def velo_to_rect(self) -> np.ndarray:
        """4x4: sensor frame -> rectified camera frame."""
        return self.R0_rect_4x4 @ self.Tr_velo_to_cam_4x4

    @property
    def velo_to_image(self) -> np.ndarray:
        """3x4: sensor frame -> homogeneous pixel coordinates of camera 2."""
        return self.P2 @ self.velo_to_rect

    def project(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sensor points (N x 3) -> (pixel u, v as N x 2, depth in the camera N).

        Points behind the camera get depth <= 0 and meaningless pixels; filter
        with ``depth > 0``.
        """
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise CalibrationError(f"project needs N x 3 points, got shape {xyz.shape}")
        hom = np.concatenate([xyz, np.ones((len(xyz), 1))], axis=1)
        img = hom @ self.velo_to_image.T
        depth = img[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = img[:, :2] / depth[:, None]
        return uv, depth

    def to_dict(self) -> dict:
        """Every matrix as nested lists (for YAML/JSON)."""
        return {k: v.tolist() for k, v in self.matrices.items()}


def parse_kitti_calibration(text: str, source: str = "<string>",
                            required: tuple[str, ...] = REQUIRED_KEYS) -> KittiCalibration:
    """Parse the text of a KITTI-format calibration file.

    ``required`` keys must be present; with fewer required keys, the missing
    ones among P2 / R0_rect / Tr_velo_to_cam are ``None`` on the result.
    """
    matrices: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, values = line.partition(":")
        key = key.strip()
        where = f"{source} line {lineno}"
        if not sep or not key or " " in key:
            raise CalibrationError(f"{where}: expected 'KEY: numbers', got {line.strip()[:60]!r}")
        if key in matrices:
            raise CalibrationError(f"{where}: {key} appears twice")
        try:
            flat = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError as exc:
            raise CalibrationError(f"{where}: {key} has a non-numeric value ({exc})") from None
        if flat.size == 0:
            continue  # declared but empty: treated as absent
        if not np.isfinite(flat).all():
            raise CalibrationError(f"{where}: {key} has non-finite values")
        shape = KNOWN_SHAPES.get(key)
        if shape is not None:
            if flat.size != shape[0] * shape[1]:
                raise CalibrationError(f"{where}: {key} needs {shape[0] * shape[1]} values "
                                       f"({shape[0]}x{shape[1]}), got {flat.size}")
            matrices[key] = flat.reshape(shape)
        else:
            matrices[key] = flat
    if not matrices:
        raise CalibrationError(f"{source}: no calibration entries found (empty file?)")
    missing = [k for k in required if k not in matrices]
    if missing:
        raise CalibrationError(f"{source}: missing {missing}; it has {sorted(matrices)}")
    rotation = matrices["R0_rect"] if "R0_rect" in matrices else None
    if rotation is not None and not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3):
        raise CalibrationError(f"{source}: R0_rect is not a rotation (R R^T != I)")
    return KittiCalibration(P2=matrices.get("P2"), R0_rect=matrices.get("R0_rect"),
                            Tr_velo_to_cam=matrices.get("Tr_velo_to_cam"), matrices=matrices,
                            source=source)


def load_kitti_calibration(path: str | Path) -> KittiCalibration:
    """Read and parse a KITTI-format calibration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration file {str(path)!r}: {exc}") from None
    return parse_kitti_calibration(text, source=str(path))
