"""Conversions between ROS messages and sensor_codec frames, without ROS.

Messages are read duck-typed (attribute names of sensor_msgs), so the same
functions serve rclpy messages in the nodes and rosbags messages in the bag
tools. Messages are built through a ``MessageTypes`` flavour that knows the
classes and how a ``uint8[]`` field wants its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import ConversionError, InvalidFrameError, WireFormatError
from .frames import IMAGE_ENCODINGS, CameraFrame, Modality, PointCloudFrame
from .wire import MAGIC, peek_header

# sensor_msgs/PointField datatype constants -> little-endian numpy type string.
POINTFIELD_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_NUMPY_TO_POINTFIELD = {v: k for k, v in POINTFIELD_TYPES.items()}

# Field names that mark a PointCloud2 as radar detections rather than lidar.
RADAR_FIELD_HINTS = frozenset({"rcs", "v_r", "v_r_compensated", "doppler", "vr", "radial_velocity",
                               "velocity", "snr", "rcs_dbsm"})

COMPRESSED_FORMAT_PREFIX = "sensor_codec/"


@dataclass(frozen=True)
class MessageTypes:
    """The message classes of one ROS Python flavour (rclpy or rosbags)."""

    Header: type
    Time: type
    Image: type
    PointField: type
    PointCloud2: type
    CompressedImage: type
    bytes_value: Callable[[bytes | np.ndarray], Any]


def rosbags_types(typestore=None) -> MessageTypes:
    """Pure-python rosbags message classes (for bags; no ROS install needed)."""
    if typestore is None:
        from rosbags.typesys import Stores, get_typestore
        typestore = get_typestore(Stores.ROS2_KILTED)
    t = typestore.types
    return MessageTypes(
        Header=t["std_msgs/msg/Header"], Time=t["builtin_interfaces/msg/Time"],
        Image=t["sensor_msgs/msg/Image"], PointField=t["sensor_msgs/msg/PointField"],
        PointCloud2=t["sensor_msgs/msg/PointCloud2"],
        CompressedImage=t["sensor_msgs/msg/CompressedImage"],
        bytes_value=lambda buf: np.frombuffer(buf, dtype=np.uint8),
    )


def rclpy_types() -> MessageTypes:
    """The generated sensor_msgs classes used by rclpy nodes."""
    import array

    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
    from std_msgs.msg import Header

    def to_array(buf):
        # array('B') is what the generated setter stores; building it from a
        # buffer is one memcpy, assigning it skips the setter's own copy.
        out = array.array("B")
        out.frombytes(memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf)
        return out

    return MessageTypes(Header=Header, Time=Time, Image=Image, PointField=PointField,
                        PointCloud2=PointCloud2, CompressedImage=CompressedImage,
                        bytes_value=to_array)


# --- headers -------------------------------------------------------------------

def header_stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def make_header(types: MessageTypes, stamp_ns: int, frame_id: str):
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def _data_view(msg) -> np.ndarray:
    return np.frombuffer(msg.data, dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)


# --- sensor_msgs/Image ---------------------------------------------------------

def image_to_frame(msg) -> CameraFrame:
    """sensor_msgs/Image -> CameraFrame, honouring ``step`` and ``is_bigendian``."""
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(
            f"image encoding {encoding!r} is not supported; supported: {sorted(IMAGE_ENCODINGS)}")
    channels, dtype = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"image has no pixels: {height}x{width}")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(
            f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)")
    data = _data_view(msg)
    if len(data) < step * (height - 1) + row_bytes:
        raise ConversionError(
            f"image data has {len(data)} bytes, {height} rows of step {step} need "
            f"{step * (height - 1) + row_bytes}")
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(step, 1))
    order = ">" if msg.is_bigendian else "<"
    pixels = rows.view(dtype.newbyteorder(order)) if dtype.itemsize > 1 else rows
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = np.ascontiguousarray(pixels).reshape(shape).astype(dtype, copy=False)
    return CameraFrame(pixels, encoding, header_stamp_ns(msg.header), str(msg.header.frame_id))


def frame_to_image(frame: CameraFrame, types: MessageTypes):
    """CameraFrame -> sensor_msgs/Image (little-endian, tightly packed rows)."""
    pixels = np.ascontiguousarray(frame.pixels.astype(frame.pixels.dtype.newbyteorder("<"),
                                                      copy=False))
    return types.Image(
        header=make_header(types, frame.stamp_ns, frame.frame_id),
        height=frame.height, width=frame.width, encoding=frame.encoding, is_bigendian=0,
        step=frame.width * frame.channels * pixels.dtype.itemsize,
        data=types.bytes_value(pixels.tobytes()))


# --- sensor_msgs/PointCloud2 ---------------------------------------------------

def is_radar_cloud(field_names) -> bool:
    """Whether a cloud's fields look like radar detections (RCS, Doppler)."""
    return any(name.lower() in RADAR_FIELD_HINTS for name in field_names)


def pointcloud2_dtype(fields, point_step: int, bigendian: bool) -> np.dtype:
    """Structured dtype for a PointCloud2's records, padding kept in the itemsize."""
    if point_step <= 0:
        raise ConversionError(f"point_step must be positive, got {point_step}")
    order = ">" if bigendian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        name, offset, datatype, count = str(f.name), int(f.offset), int(f.datatype), int(f.count)
        if count == 0:
            continue  # a declared-but-empty field carries no data
        if not name:
            raise ConversionError("PointCloud2 has a field with an empty name")
        if name in names:
            raise ConversionError(f"PointCloud2 declares field {name!r} twice")
        if datatype not in POINTFIELD_TYPES:
            raise ConversionError(f"field {name!r} has unknown PointField datatype {datatype}")
        base = np.dtype(order + POINTFIELD_TYPES[datatype])
        if offset < 0 or offset + base.itemsize * count > point_step:
            raise ConversionError(
                f"field {name!r} at offset {offset} ({count} x {base}) overruns point_step "
                f"{point_step}")
        names.append(name)
        formats.append(base if count == 1 else np.dtype((base, (count,))))
        offsets.append(offset)
    if not names:
        raise ConversionError("PointCloud2 declares no fields")
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": point_step})
    except ValueError as exc:  # overlapping fields
        raise ConversionError(f"PointCloud2 field layout is invalid: {exc}") from None


def pointcloud2_to_frame(msg, modality: Modality | str | None = None) -> PointCloudFrame:
    """sensor_msgs/PointCloud2 -> PointCloudFrame, keeping every field and the layout.

    ``modality`` defaults to radar when the fields look like radar detections,
    lidar otherwise. Big-endian clouds are converted to little-endian values;
    ``row_step`` padding is dropped, per-point padding is kept (zeroed).
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    src_dtype = pointcloud2_dtype(msg.fields, point_step, bool(msg.is_bigendian))
    if modality is None:
        modality = Modality.RADAR if is_radar_cloud(src_dtype.names) else Modality.LIDAR
    n = height * width
    data = _data_view(msg)
    if n:
        if row_step < width * point_step:
            raise ConversionError(
                f"row_step {row_step} is smaller than width {width} x point_step {point_step}")
        needed = row_step * (height - 1) + width * point_step
        if len(data) < needed:
            raise ConversionError(
                f"PointCloud2 data has {len(data)} bytes, {height}x{width} points need {needed}")
        rows = np.lib.stride_tricks.as_strided(data, shape=(height, width * point_step),
                                               strides=(row_step, 1))
        records = np.ascontiguousarray(rows).view(src_dtype).reshape(-1)
    else:
        records = np.zeros(0, dtype=src_dtype)
    le_dtype = _little_endian(src_dtype)
    points = np.zeros(n, dtype=le_dtype)  # zeroed so padding bytes are deterministic
    for name in le_dtype.names:
        points[name] = records[name]
    try:
        return PointCloudFrame(points, modality, height if n else 1, width if n else 0,
                               header_stamp_ns(msg.header), str(msg.header.frame_id))
    except InvalidFrameError as exc:
        raise ConversionError(f"PointCloud2 cannot become a frame: {exc}") from None


def _little_endian(dtype: np.dtype) -> np.dtype:
    formats = [dtype.fields[n][0].newbyteorder("<") for n in dtype.names]
    offsets = [dtype.fields[n][1] for n in dtype.names]
    return np.dtype({"names": list(dtype.names), "formats": formats, "offsets": offsets,
                     "itemsize": dtype.itemsize})


def frame_to_pointcloud2(frame: PointCloudFrame, types: MessageTypes):
    """PointCloudFrame -> sensor_msgs/PointCloud2 (little-endian, original layout)."""
    dt = frame.points.dtype
    fields = []
    for name in dt.names:
        sub, offset = dt.fields[name][:2]
        base = sub.base if sub.shape else sub
        key = base.str[1:]
        if key not in _NUMPY_TO_POINTFIELD:
            raise ConversionError(f"field {name!r} has dtype {base} with no PointField type")
        count = int(np.prod(sub.shape)) if sub.shape else 1
        fields.append(types.PointField(name=name, offset=int(offset),
                                       datatype=_NUMPY_TO_POINTFIELD[key], count=count))
    points = frame.points.astype(_little_endian(dt), copy=False)
    xyz = frame.xyz(np.float64) if frame.num_points else np.zeros((0, 3))
    return types.PointCloud2(
        header=make_header(types, frame.stamp_ns, frame.frame_id),
        height=int(frame.height), width=int(frame.width), fields=fields, is_bigendian=False,
        point_step=int(dt.itemsize), row_step=int(dt.itemsize) * int(frame.width),
        data=types.bytes_value(points.tobytes()), is_dense=bool(np.isfinite(xyz).all()))


# --- compressed topics (sensor_msgs/CompressedImage) ---------------------------

def payload_to_compressed(payload: bytes, types: MessageTypes, stamp_ns: int, frame_id: str):
    """Wrap a container in a CompressedImage whose ``format`` is its readable tag."""
    return types.CompressedImage(header=make_header(types, stamp_ns, frame_id),
                                 format=peek_header(payload).tag,
                                 data=types.bytes_value(payload))


def compressed_to_payload(msg) -> bytes:
    """The container bytes of a sensor_codec CompressedImage.

    Refuses messages from other transports (for example a plain JPEG from
    image_transport) with a WireFormatError naming their format.
    """
    fmt = str(msg.format)
    data = bytes(msg.data)
    if not fmt.startswith(COMPRESSED_FORMAT_PREFIX) and not data.startswith(MAGIC):
        raise WireFormatError(
            f"foreign CompressedImage: format {fmt!r} is not a sensor_codec payload")
    return data
