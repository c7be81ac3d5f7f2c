"""Frames to and from ordinary files, for the ``compress``/``decompress`` CLI.

Images: PNG, JPEG (and anything else imagecodecs reads) in, PNG out.
Point clouds: KITTI/nuScenes-style float32 ``.bin`` (columns named by the
caller; by default x, y, z, intensity, plus ring for nuScenes' ``*.pcd.bin``),
PCD (ascii, binary and binary_compressed in; ascii or binary out) and
``.npy`` (a structured array, or N x K numbers with named columns).
A ``.npy`` of uint8/uint16 pixels is an image.

Malformed files raise ``InvalidFrameError`` naming the file and what is
wrong; a missing file raises the usual ``OSError``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import imagecodecs
import numpy as np

from ..errors import ConfigError, InvalidFrameError
from ..frames import IMAGE_ENCODINGS, CameraFrame, Frame, Modality, PointCloudFrame
from ..wire import MAX_POINTS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".avif", ".jxl", ".tif", ".tiff",
                  ".bmp", ".ppm", ".pgm")
CLOUD_SUFFIXES = (".bin", ".pcd")
KITTI_FIELDS = ("x", "y", "z", "intensity")
# nuScenes names its lidar sweeps *.pcd.bin; they hold 5 float32 columns.
NUSCENES_FIELDS = ("x", "y", "z", "intensity", "ring")

# PCD TYPE letter + SIZE <-> numpy kind + size, for the types PointCloud2 can carry.
_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2",
              ("I", 4): "i4", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4"}
_PCD_LETTERS = {v: k for k, v in _PCD_TYPES.items()}


def _kind_size(dtype: np.dtype) -> str:
    return f"{dtype.kind}{dtype.itemsize}"
_PCD_MAX_HEADER_LINES = 64


def guess_modality(path: str | os.PathLike, modality: Modality | str | None = None) -> Modality:
    """The modality named, else camera for image files and lidar for clouds."""
    if modality is not None:
        return Modality.parse(modality)
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Modality.CAMERA
    if suffix in CLOUD_SUFFIXES:
        return Modality.LIDAR
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return Modality.CAMERA if array.dtype in (np.uint8, np.uint16) else Modality.LIDAR
    raise ConfigError(f"cannot tell what {path} holds from its suffix {suffix!r}; "
                      f"images: {', '.join(IMAGE_SUFFIXES)}; clouds: .bin, .pcd, .npy")


def read_frame(path: str | os.PathLike, modality: Modality | str | None = None, *,
               fields: tuple[str, ...] | None = None, stamp_ns: int = 0,
               frame_id: str = "") -> Frame:
    """Read an image or point-cloud file as a frame (see the module doc)."""
    path = Path(path)
    modality = guess_modality(path, modality)
    suffix = path.suffix.lower()
    if modality == Modality.CAMERA:
        if suffix == ".npy":
            pixels = np.load(path, allow_pickle=False)
        elif suffix in IMAGE_SUFFIXES:
            try:
                pixels = imagecodecs.imread(str(path))
            except (RuntimeError, ValueError) as exc:
                raise InvalidFrameError(f"{path} is not a readable image: {exc}") from None
        else:
            raise ConfigError(f"{path}: a camera frame is read from an image file or .npy, "
                              f"not {suffix!r}")
        return image_frame(pixels, stamp_ns=stamp_ns, frame_id=frame_id, source=str(path))
    if suffix == ".bin":
        points, height = read_bin(path, fields or default_bin_fields(path)), 1
    elif suffix == ".pcd":
        if fields:
            raise ConfigError("--fields does not apply to .pcd files, whose header names them")
        points, height = read_pcd(path)
    elif suffix == ".npy":
        points, height = read_npy_points(path, fields), 1
    else:
        raise ConfigError(f"{path}: a {modality.label} cloud is read from .bin, .pcd or .npy, "
                          f"not {suffix!r}")
    width = len(points) // height if height else 0
    return PointCloudFrame(points, modality, height, width, stamp_ns, frame_id)


def default_bin_fields(path: Path) -> tuple[str, ...]:
    """Column names of a .bin cloud nobody named: nuScenes for ``*.pcd.bin``,
    else KITTI."""
    return NUSCENES_FIELDS if path.name.lower().endswith(".pcd.bin") else KITTI_FIELDS


def write_frame(frame: Frame, path: str | os.PathLike, *, pcd_data: str = "binary") -> None:
    """Write a frame by ``path``'s suffix: .png/.npy for images,
    .bin/.pcd/.npy for clouds."""
    path = Path(path)
    suffix = path.suffix.lower()
    if isinstance(frame, CameraFrame):
        if suffix == ".png":
            path.write_bytes(imagecodecs.png_encode(_file_pixels(frame)))
        elif suffix == ".npy":
            np.save(path, frame.pixels, allow_pickle=False)
        else:
            raise ConfigError(f"an image is written as .png or .npy, not {suffix!r} ({path})")
        return
    if suffix == ".bin":
        write_bin(frame, path)
    elif suffix == ".pcd":
        write_pcd(frame, path, data=pcd_data)
    elif suffix == ".npy":
        np.save(path, frame.points, allow_pickle=False)
    else:
        raise ConfigError(f"a point cloud is written as .bin, .pcd or .npy, not {suffix!r} "
                          f"({path})")


def image_frame(pixels: np.ndarray, *, stamp_ns: int = 0, frame_id: str = "",
                source: str = "image") -> CameraFrame:
    """Wrap a decoded image array, picking the encoding from its shape and type."""
    pixels = np.asarray(pixels)
    channels = 1 if pixels.ndim == 2 else pixels.shape[-1] if pixels.ndim == 3 else None
    encoding = {(np.dtype(np.uint8), 1): "mono8", (np.dtype(np.uint16), 1): "mono16",
                (np.dtype(np.uint8), 3): "rgb8", (np.dtype(np.uint8), 4): "rgba8"}.get(
                    (pixels.dtype, channels))
    if encoding is None:
        raise InvalidFrameError(
            f"{source}: {pixels.dtype} pixels of shape {pixels.shape} fit none of "
            f"{sorted(IMAGE_ENCODINGS)} (8-bit grey/RGB/RGBA or 16-bit grey)")
    return CameraFrame(pixels, encoding, stamp_ns, frame_id)


def _file_pixels(frame: CameraFrame) -> np.ndarray:
    """Pixels in the channel order image files use (RGB, RGBA or grey)."""
    if frame.encoding == "bgr8":
        return np.ascontiguousarray(frame.pixels[:, :, ::-1])
    if frame.encoding == "bgra8":
        return np.ascontiguousarray(frame.pixels[:, :, [2, 1, 0, 3]])
    return frame.pixels


# --- .bin --------------------------------------------------------------------

def read_bin(path: Path, fields: tuple[str, ...]) -> np.ndarray:
    """Float32 records, one column per name in ``fields``."""
    _check_field_names(fields, path)
    record = 4 * len(fields)
    size = path.stat().st_size
    if size % record:
        raise InvalidFrameError(
            f"{path} is {size} bytes, not a whole number of {len(fields)}-column float32 "
            f"records ({record} bytes); name its columns with --fields (KITTI: "
            f"x,y,z,intensity; nuScenes LIDAR_TOP: x,y,z,intensity,ring)")
    _check_points(size // record, path)
    dtype = np.dtype([(name, "<f4") for name in fields])
    return np.fromfile(path, dtype=dtype)


def write_bin(frame: PointCloudFrame, path: Path) -> None:
    """Every field as float32 columns, in field order (KITTI layout)."""
    names = frame.points.dtype.names
    columns = [np.asarray(frame.points[n], dtype=np.float64).reshape(frame.num_points, -1)
               for n in names]
    table = np.concatenate(columns, axis=1) if columns else np.zeros((0, 0))
    as_f4 = table.astype("<f4")
    if not np.array_equal(as_f4.astype(np.float64), table, equal_nan=True):
        log.warning("%s: some values of %s do not fit float32 exactly and were rounded",
                    path, ", ".join(names))
    as_f4.tofile(path)


# --- .npy --------------------------------------------------------------------

def read_npy_points(path: Path, fields: tuple[str, ...] | None) -> np.ndarray:
    array = np.load(path, allow_pickle=False)
    if array.dtype.names is not None:
        if fields:
            raise ConfigError(f"{path} holds a structured array whose fields are named; "
                              "drop --fields")
        _check_points(array.size, path)
        return array.reshape(-1)
    if array.ndim != 2 or array.dtype.kind not in "fiu":
        raise InvalidFrameError(f"{path}: expected a structured array or N x K numbers, got "
                                f"{array.dtype} of shape {array.shape}")
    if not fields:
        fields = {3: ("x", "y", "z"), 4: KITTI_FIELDS}.get(array.shape[1])
        if fields is None:
            raise ConfigError(f"{path} has {array.shape[1]} columns; name them with --fields")
    _check_field_names(fields, path)
    if len(fields) != array.shape[1]:
        raise ConfigError(f"{path} has {array.shape[1]} columns, --fields names {len(fields)}")
    _check_points(array.shape[0], path)
    # Keep the array's type where a PointCloud2 field can hold it.
    kind_size = _kind_size(array.dtype)
    if kind_size not in _PCD_LETTERS:
        kind_size = "f8" if array.dtype.kind == "f" else "i4"
    dtype = np.dtype(f"<{kind_size}")
    points = np.empty(array.shape[0], dtype=[(name, dtype) for name in fields])
    for i, name in enumerate(fields):
        points[name] = array[:, i]
    return points


# --- .pcd --------------------------------------------------------------------

def read_pcd(path: Path) -> tuple[np.ndarray, int]:
    """(records, height) of a PCD v0.7 file: ascii, binary or binary_compressed."""
    with open(path, "rb") as f:
        header: dict[str, list[str]] = {}
        for _ in range(_PCD_MAX_HEADER_LINES):
            line = f.readline()
            if not line:
                raise InvalidFrameError(f"{path}: PCD header ends before its DATA line")
            text = line.decode("ascii", "replace").strip()
            if not text or text.startswith("#"):
                continue
            key, *values = text.split()
            header[key.upper()] = values
            if key.upper() == "DATA":
                break
        else:
            raise InvalidFrameError(f"{path}: no DATA line in the first "
                                    f"{_PCD_MAX_HEADER_LINES} header lines")
        body = f.read()
    file_dtype, keep = _pcd_dtype(header, path)
    try:
        width, height = int(header["WIDTH"][0]), int(header.get("HEIGHT", ["1"])[0])
        n = int(header.get("POINTS", [width * height])[0])
    except (KeyError, IndexError, ValueError):
        raise InvalidFrameError(f"{path}: PCD WIDTH/HEIGHT/POINTS missing or not integers") \
            from None
    _check_points(n, path)
    if width * height != n:
        height = 1  # an inconsistent grid is read as unorganised
    data = (header["DATA"] or ["?"])[0].lower()
    if data == "ascii":
        records = _pcd_ascii(body, file_dtype, n, path)
    elif data == "binary":
        if len(body) < n * file_dtype.itemsize:
            raise InvalidFrameError(f"{path}: binary PCD data holds {len(body)} bytes, "
                                    f"{n} points need {n * file_dtype.itemsize}")
        records = np.frombuffer(body, dtype=file_dtype, count=n)
    elif data == "binary_compressed":
        records = _pcd_binary_compressed(body, file_dtype, n, path)
    else:
        raise InvalidFrameError(f"{path}: unknown PCD DATA kind {data!r}; expected ascii, "
                                "binary or binary_compressed")
    return np.ascontiguousarray(records[keep]), height


def _pcd_dtype(header: dict, path: Path) -> tuple[np.dtype, list[str]]:
    """The packed record type of the file, and the fields to keep (PCL's
    "_" padding fields are dropped)."""
    try:
        names, sizes, types = header["FIELDS"], header["SIZE"], header["TYPE"]
        counts = header.get("COUNT", ["1"] * len(names))
        sizes, counts = [int(s) for s in sizes], [int(c) for c in counts]
    except (KeyError, ValueError):
        raise InvalidFrameError(f"{path}: PCD header lacks FIELDS/SIZE/TYPE or has "
                                "non-integer SIZE/COUNT") from None
    if not (len(names) == len(sizes) == len(types) == len(counts)) or not names:
        raise InvalidFrameError(f"{path}: PCD FIELDS, SIZE, TYPE and COUNT differ in length")
    spec, keep = [], []
    for i, (name, size, letter, count) in enumerate(zip(names, sizes, types, counts)):
        kind_size = _PCD_TYPES.get((letter.upper(), size))
        if kind_size is None or not 1 <= count <= 1024:
            raise InvalidFrameError(f"{path}: PCD field {name!r} of TYPE {letter} SIZE {size} "
                                    f"COUNT {count} has no PointCloud2 equivalent")
        if name == "_":
            name = f"_pad{i}"
        else:
            keep.append(name)
        base = f"<{kind_size}"
        spec.append((name, base) if count == 1 else (name, base, (count,)))
    try:
        return np.dtype(spec), keep
    except ValueError as exc:  # duplicate field names
        raise InvalidFrameError(f"{path}: bad PCD fields {names}: {exc}") from None


def _pcd_ascii(body: bytes, dtype: np.dtype, n: int, path: Path) -> np.ndarray:
    values_per_point = sum(_count_of(dtype, name) for name in dtype.names)
    try:
        values = np.array(body.split()[:n * values_per_point], dtype=np.float64)
    except ValueError as exc:
        raise InvalidFrameError(f"{path}: ascii PCD data has a non-number: {exc}") from None
    if values.size != n * values_per_point:
        raise InvalidFrameError(f"{path}: ascii PCD data holds {values.size} values, "
                                f"{n} points x {values_per_point} need {n * values_per_point}")
    table = values.reshape(n, values_per_point)
    records = np.zeros(n, dtype=dtype)
    col = 0
    for name in dtype.names:
        k = _count_of(dtype, name)
        records[name] = table[:, col:col + k].reshape(records[name].shape)
        col += k
    return records


def _pcd_binary_compressed(body: bytes, dtype: np.dtype, n: int, path: Path) -> np.ndarray:
    if len(body) < 8:
        raise InvalidFrameError(f"{path}: binary_compressed PCD data is shorter than its sizes")
    compressed, raw_size = np.frombuffer(body[:8], dtype="<u4")
    if raw_size != n * dtype.itemsize or 8 + compressed > len(body):
        raise InvalidFrameError(
            f"{path}: binary_compressed PCD claims {compressed} -> {raw_size} bytes; "
            f"{n} points need {n * dtype.itemsize}, the file holds {len(body) - 8}")
    try:
        raw = imagecodecs.lzf_decode(body[8:8 + int(compressed)], out=int(raw_size))
    except RuntimeError as exc:
        raise InvalidFrameError(f"{path}: binary_compressed PCD data is corrupt: {exc}") \
            from None
    # Field-major: all of field 0, then all of field 1, ...
    records = np.zeros(n, dtype=dtype)
    offset = 0
    for name in dtype.names:
        sub = dtype.fields[name][0]
        size = n * sub.itemsize
        records[name] = np.frombuffer(raw, dtype=sub.base, count=n * _count_of(dtype, name),
                                      offset=offset).reshape(records[name].shape)
        offset += size
    return records


def write_pcd(frame: PointCloudFrame, path: Path, *, data: str = "binary") -> None:
    """PCD v0.7, ``data`` "binary" (packed records) or "ascii"."""
    if data not in ("binary", "ascii"):
        raise ConfigError(f"PCD data kind {data!r} is not one of 'binary', 'ascii'")
    points = frame.points
    names = points.dtype.names
    packed = np.dtype([(n, points.dtype.fields[n][0]) for n in names])
    records = np.empty(len(points), dtype=packed)
    for n in names:
        records[n] = points[n]
    sizes, types, counts = [], [], []
    for n in names:
        sub = packed.fields[n][0]
        kind_size = _kind_size(sub.base)
        if kind_size not in _PCD_LETTERS:
            raise InvalidFrameError(f"field {n!r} of type {sub.base} has no PCD type")
        letter, size = _PCD_LETTERS[kind_size]
        sizes.append(str(size))
        types.append(letter)
        counts.append(str(_count_of(packed, n)))
    header = "\n".join([
        "# .PCD v0.7 - Point Cloud Data file format (written by sensor_codec)",
        "VERSION 0.7", f"FIELDS {' '.join(names)}", f"SIZE {' '.join(sizes)}",
        f"TYPE {' '.join(types)}", f"COUNT {' '.join(counts)}", f"WIDTH {frame.width}",
        f"HEIGHT {frame.height}", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {frame.num_points}",
        f"DATA {data}", ""]).encode("ascii")
    with open(path, "wb") as f:
        f.write(header)
        if data == "binary":
            f.write(records.tobytes())
            return
        for n in names:
            if not n.isidentifier():
                raise InvalidFrameError(f"field name {n!r} cannot be written to an ascii PCD")
        columns, formats = [], []
        for n in names:
            sub = packed.fields[n][0]
            k = _count_of(packed, n)
            columns.append(np.asarray(records[n]).reshape(len(records), k))
            fmt = "%d" if sub.base.kind in "iu" else "%.9g" if sub.base.itemsize == 4 else "%.17g"
            formats.extend([fmt] * k)
        table = np.concatenate(columns, axis=1).astype(object) if columns else np.zeros((0, 0))
        np.savetxt(f, table, fmt=formats)


# --- shared checks --------------------------------------------------------------

def _count_of(dtype: np.dtype, name: str) -> int:
    return int(np.prod(dtype.fields[name][0].shape, dtype=np.int64))


def _check_field_names(fields, path) -> None:
    if len(set(fields)) != len(fields) or not all(fields):
        raise ConfigError(f"field names {list(fields)} for {path} must be distinct and non-empty")
    for axis in ("x", "y", "z"):
        if axis not in fields:
            raise ConfigError(f"field names {list(fields)} for {path} lack {axis!r}")


def _check_points(n: int, path) -> None:
    if n > MAX_POINTS:
        raise InvalidFrameError(f"{path} holds {n} points, more than the {MAX_POINTS} a frame "
                                "may carry")

