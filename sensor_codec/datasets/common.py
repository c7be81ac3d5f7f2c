"""Shared pieces of the dataset importers: file readers, topic names, the bag writer.

Every importer writes the same topics so that downstream tools need no
per-dataset knowledge:

=====================  ===============================  ===========
topic                  type                             frame id
=====================  ===============================  ===========
``/camera/image_raw``  sensor_msgs/Image (rgb8)          ``camera``
``/lidar/points``      sensor_msgs/PointCloud2          ``lidar``
``/radar/points``      sensor_msgs/PointCloud2          ``radar``
``/calibration``       std_msgs/String (YAML document)  -
=====================  ===============================  ===========

The calibration travels *inside* the bag as one ``std_msgs/String`` message
holding YAML (dataset name, frame ids, every calibration matrix, pose), at
the bag's first timestamp: it is copied unchanged by ``bag compress`` and
``bag decompress`` and needs no side file. ``read_bag_calibration`` parses it
back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import SensorCodecError
from ..frames import CameraFrame, PointCloudFrame

log = logging.getLogger(__name__)

CAMERA_TOPIC = "/camera/image_raw"
LIDAR_TOPIC = "/lidar/points"
RADAR_TOPIC = "/radar/points"
CALIBRATION_TOPIC = "/calibration"
CAMERA_FRAME, LIDAR_FRAME, RADAR_FRAME = "camera", "lidar", "radar"
# Single-frame samples carry no time. ROS time 0 means "latest" to tf2, so they get 1 s.
DEFAULT_STAMP_NS = 1_000_000_000


class DatasetError(SensorCodecError, ValueError):
    """Dataset files are missing or do not have the documented layout."""


def require_files(directory: str | Path, names: Iterable[str], dataset: str) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{dataset} directory {str(directory)!r} does not exist")
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir())
        raise DatasetError(f"{str(directory)!r} is not a {dataset} sample: missing {missing} "
                           f"(found {present})")
    return directory


def read_float32_table(path: str | Path, columns: int) -> np.ndarray:
    """A raw little-endian float32 file of N x ``columns`` values."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {str(path)!r}: {exc}") from None
    row = 4 * columns
    if len(raw) % row:
        raise DatasetError(f"{str(path)!r} has {len(raw)} bytes, not a multiple of {row} "
                           f"({columns} float32 per point): wrong file or truncated")
    return np.frombuffer(raw, dtype="<f4").reshape(-1, columns)


def cloud_from_table(table: np.ndarray, names: Iterable[str], modality: str, *,
                     stamp_ns: int, frame_id: str,
                     dtypes: dict[str, Any] | None = None) -> PointCloudFrame:
    """Columns of ``table`` -> a packed PointCloudFrame with the given field names."""
    names = list(names)
    dtypes = dtypes or {}
    arrays = {}
    for i, name in enumerate(names):
        column = table[:, i]
        dtype = np.dtype(dtypes.get(name, np.float32))
        if dtype.kind in "iu":
            if not np.all(np.isfinite(column)) or not np.all(column == np.round(column)):
                raise DatasetError(f"field {name!r} should hold whole numbers, got e.g. "
                                   f"{column[np.flatnonzero(column != np.round(column))[:3]]}")
            info = np.iinfo(dtype)
            if column.size and (column.min() < info.min or column.max() > info.max):
                raise DatasetError(f"field {name!r} values {column.min()}..{column.max()} do "
                                   f"not fit {dtype}")
        arrays[name] = column.astype(dtype)
    return PointCloudFrame.from_arrays(modality, stamp_ns=stamp_ns, frame_id=frame_id, **arrays)


def read_image(path: str | Path, *, stamp_ns: int, frame_id: str = CAMERA_FRAME) -> CameraFrame:
    """Decode a PNG or JPEG file into an rgb8 / rgba8 / mono8 / mono16 frame."""
    import imagecodecs

    path = Path(path)
    try:
        pixels = imagecodecs.imread(str(path))
    except FileNotFoundError:
        raise DatasetError(f"image {str(path)!r} does not exist") from None
    except (OSError, ValueError, RuntimeError) as exc:  # per-format codec errors included
        raise DatasetError(f"cannot decode image {str(path)!r}: {exc}") from None
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        encoding = "rgb8" if pixels.shape[2] == 3 else "rgba8"
    elif pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint16):
        encoding = "mono8" if pixels.dtype == np.uint8 else "mono16"
    else:
        raise DatasetError(f"image {str(path)!r} has unsupported shape {pixels.shape} / "
                           f"dtype {pixels.dtype}")
    return CameraFrame(pixels, encoding, stamp_ns, frame_id)


@dataclass
class ImportReport:
    dataset: str
    source: str
    bag: str
    storage: str
    messages: dict[str, int] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)  # topic -> total points written

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "source": self.source, "bag": self.bag,
                "storage": self.storage, "messages": dict(self.messages),
                "points": dict(self.points)}


def calibration_yaml(dataset: str, source: str, frames: dict[str, str],
                     matrices: dict[str, dict], extra: dict | None = None) -> str:
    doc = {"dataset": dataset, "source": source, "frames": frames, "calibration": matrices}
    if extra:
        doc.update(extra)
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200)


def write_dataset_bag(bag: str | Path, dataset: str, source: str | Path,
                      frames: Iterable[tuple[str, int, Any]], *, storage: str,
                      calibration: str | None, overwrite: bool = False) -> ImportReport:
    """Write ``(topic, stamp_ns, CameraFrame | PointCloudFrame)`` items (+ calibration)."""
    from ..bag.io import BagWriter, typestore
    from ..messages import frame_to_image, frame_to_pointcloud2, rosbags_types

    types = rosbags_types(typestore())
    report = ImportReport(dataset, str(source), str(bag), storage)
    with BagWriter(bag, storage, overwrite=overwrite) as writer:
        first = True
        for topic, stamp_ns, frame in frames:
            if first and calibration is not None:
                string_type = typestore().types["std_msgs/msg/String"]
                writer.write(CALIBRATION_TOPIC, stamp_ns, string_type(data=calibration))
                report.messages[CALIBRATION_TOPIC] = 1
            first = False
            if isinstance(frame, CameraFrame):
                msg = frame_to_image(frame, types)
            else:
                msg = frame_to_pointcloud2(frame, types)
                report.points[topic] = report.points.get(topic, 0) + frame.num_points
            writer.write(topic, stamp_ns, msg)
            report.messages[topic] = report.messages.get(topic, 0) + 1
    log.debug("%s %s -> %s: %s", dataset, source, bag, report.messages)
    return report


def read_bag_calibration(bag: str | Path) -> dict:
    """The calibration document an importer wrote, matrices as numpy arrays."""
    from ..bag.io import bag_topics, deserialize, read_messages

    if CALIBRATION_TOPIC not in bag_topics(bag):
        raise DatasetError(f"bag {str(bag)!r} has no {CALIBRATION_TOPIC} topic")
    for message in read_messages(bag, [CALIBRATION_TOPIC]):
        doc = yaml.safe_load(deserialize(message.data, message.msgtype).data)
        if not isinstance(doc, dict):
            raise DatasetError(f"{CALIBRATION_TOPIC} in {str(bag)!r} is not a YAML mapping")
        for group in ("calibration", "pose"):
            section = doc.get(group) or {}
            for name, matrices in section.items():
                section[name] = _arrays(matrices)
        return doc
    raise DatasetError(f"{CALIBRATION_TOPIC} in {str(bag)!r} holds no message")


def _arrays(value):
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    return np.asarray(value, dtype=np.float64)
