"""Sensor frames: plain numpy containers that every codec reads and writes.

They carry what a ROS header carries (stamp and frame id) so that a frame can
travel through a file or a bag and come back with its header, but they import
nothing from ROS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidFrameError


class Modality(enum.IntEnum):
    """Sensor modality. Values are fixed wire ids: never renumber."""

    CAMERA = 1
    LIDAR = 2
    RADAR = 3

    @classmethod
    def parse(cls, value: "Modality | str | int") -> "Modality":
        if isinstance(value, Modality):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise InvalidFrameError(
                    f"unknown modality {value!r}; expected one of "
                    f"{[m.name.lower() for m in cls]}") from None
        try:
            return cls(int(value))
        except ValueError:
            raise InvalidFrameError(f"unknown modality id {value!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


# Image encodings we accept, with (channels, dtype). Names follow
# sensor_msgs/image_encodings.
IMAGE_ENCODINGS: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
}


@dataclass
class CameraFrame:
    """One camera image.

    ``pixels`` is H x W x C for colour encodings and H x W for mono ones, in
    native byte order, C-contiguous.
    """

    pixels: np.ndarray
    encoding: str = "rgb8"
    stamp_ns: int = 0
    frame_id: str = ""

    modality = Modality.CAMERA

    def __post_init__(self) -> None:
        if self.encoding not in IMAGE_ENCODINGS:
            raise InvalidFrameError(
                f"unsupported image encoding {self.encoding!r}; supported: "
                f"{sorted(IMAGE_ENCODINGS)}")
        channels, dtype = IMAGE_ENCODINGS[self.encoding]
        pixels = np.asarray(self.pixels)
        if pixels.dtype != dtype:
            raise InvalidFrameError(
                f"{self.encoding} needs {dtype} pixels, got {pixels.dtype}")
        if channels == 1 and pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        expected_ndim = 2 if channels == 1 else 3
        if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
            raise InvalidFrameError(
                f"{self.encoding} needs shape (H, W{'' if channels == 1 else f', {channels}'}), "
                f"got {pixels.shape}")
        if pixels.shape[0] == 0 or pixels.shape[1] == 0:
            raise InvalidFrameError(f"empty image of shape {pixels.shape}")
        self.pixels = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("=")))

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return IMAGE_ENCODINGS[self.encoding][0]

    def to_rgb8(self) -> np.ndarray:
        """The image as H x W x 3 uint8 RGB (what colour codecs consume)."""
        p = self.pixels
        if self.encoding == "rgb8":
            return p
        if self.encoding == "bgr8":
            return np.ascontiguousarray(p[:, :, ::-1])
        if self.encoding == "rgba8":
            return np.ascontiguousarray(p[:, :, :3])
        if self.encoding == "bgra8":
            return np.ascontiguousarray(p[:, :, 2::-1])
        if self.encoding == "mono8":
            return np.repeat(p[:, :, None], 3, axis=2)
        return np.repeat((p >> 8).astype(np.uint8)[:, :, None], 3, axis=2)

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)


@dataclass
class PointCloudFrame:
    """A lidar scan or a set of radar detections.

    ``points`` is a 1-D numpy structured array, one record per point, whose
    fields are exactly the cloud's fields (x, y, z and any others such as
    intensity, ring, time, rcs, v_r) in their own dtypes, little-endian.
    ``height`` x ``width`` keep an organised cloud's grid (height 1 when
    unorganised). ``point_step`` and the field offsets in ``points.dtype``
    keep the original memory layout, padding included, so a PointCloud2 can
    be rebuilt byte-for-byte in layout.
    """

    points: np.ndarray
    modality: Modality = Modality.LIDAR
    height: int = 1
    width: int | None = None
    stamp_ns: int = 0
    frame_id: str = ""
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modality = Modality.parse(self.modality)
        if self.modality == Modality.CAMERA:
            raise InvalidFrameError("a point cloud frame cannot have modality camera")
        pts = np.asarray(self.points)
        if pts.dtype.names is None:
            raise InvalidFrameError(
                "points must be a structured array with named fields, got "
                f"plain dtype {pts.dtype}")
        if pts.ndim != 1:
            pts = pts.reshape(-1)
        for axis in ("x", "y", "z"):
            if axis not in pts.dtype.names:
                raise InvalidFrameError(
                    f"point cloud has no {axis!r} field; fields: {list(pts.dtype.names)}")
        self.points = pts
        if self.width is None:
            self.width = len(pts) // max(self.height, 1) if self.height else 0
        if self.height * self.width != len(pts):
            raise InvalidFrameError(
                f"height {self.height} x width {self.width} != {len(pts)} points")

    @classmethod
    def from_arrays(cls, modality: "Modality | str" = Modality.LIDAR, *,
                    height: int = 1, stamp_ns: int = 0, frame_id: str = "",
                    **fields: np.ndarray) -> "PointCloudFrame":
        """Build a packed (no padding) cloud from named 1-D arrays."""
        if not fields:
            raise InvalidFrameError("from_arrays needs at least x, y and z")
        arrays = {k: np.asarray(v).reshape(-1) for k, v in fields.items()}
        n = {len(a) for a in arrays.values()}
        if len(n) != 1:
            raise InvalidFrameError(
                f"field lengths differ: { {k: len(a) for k, a in arrays.items()} }")
        dtype = np.dtype([(k, a.dtype.newbyteorder("<")) for k, a in arrays.items()])
        points = np.empty(n.pop(), dtype=dtype)
        for k, a in arrays.items():
            points[k] = a
        return cls(points=points, modality=modality, height=height,
                   stamp_ns=stamp_ns, frame_id=frame_id)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.points.dtype.names)

    @property
    def num_points(self) -> int:
        return int(len(self.points))

    @property
    def point_step(self) -> int:
        return int(self.points.dtype.itemsize)

    def xyz(self, dtype=np.float64) -> np.ndarray:
        """N x 3 coordinates (NaNs kept)."""
        p = self.points
        return np.stack([p["x"], p["y"], p["z"]], axis=1).astype(dtype, copy=False)

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes)


Frame = CameraFrame | PointCloudFrame
