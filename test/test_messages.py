"""Message <-> frame conversions for every image encoding and point layout."""

import numpy as np
import pytest

from sensor_codec import messages as m
from sensor_codec.errors import ConversionError, WireFormatError
from sensor_codec.frames import IMAGE_ENCODINGS, CameraFrame, Modality, PointCloudFrame
from sensor_codec.codecs import encode

FLAVOURS = {"rosbags": m.rosbags_types}
try:  # the rclpy flavour needs the ROS wheels' generated message classes
    import sensor_msgs.msg  # noqa: F401
    FLAVOURS["rclpy"] = m.rclpy_types
except ImportError:  # pragma: no cover - exercised only without ROS wheels
    pass


@pytest.fixture(params=sorted(FLAVOURS))
def types(request):
    return FLAVOURS[request.param]()


def _random_image(encoding, h=5, w=7, seed=0):
    channels, dtype = IMAGE_ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_image_round_trip_every_encoding(types, encoding):
    pixels = _random_image(encoding)
    frame = CameraFrame(pixels, encoding, stamp_ns=1_700_000_000_123_456_789, frame_id="cam0")
    msg = m.frame_to_image(frame, types)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (5, 7, encoding, 0)
    assert msg.step == 7 * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    back = m.image_to_frame(msg)
    np.testing.assert_array_equal(back.pixels, pixels)
    assert (back.encoding, back.stamp_ns, back.frame_id) == (encoding, frame.stamp_ns, "cam0")


def _image_msg(types, pixels, encoding, step, bigendian=False):
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1).astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    raw = np.zeros((h, step), np.uint8)
    raw[:, :row.nbytes // h] = row.view(np.uint8).reshape(h, -1)
    return types.Image(header=m.make_header(types, 5, "f"), height=h, width=w, encoding=encoding,
                       is_bigendian=int(bigendian), step=step, data=types.bytes_value(raw.tobytes()))


@pytest.mark.parametrize("encoding", ["rgb8", "bgra8", "mono8", "mono16"])
def test_image_respects_padded_step(types, encoding):
    pixels = _random_image(encoding, h=4, w=3, seed=1)
    row_bytes = pixels.nbytes // 4
    msg = _image_msg(types, pixels, encoding, step=row_bytes + 13)
    np.testing.assert_array_equal(m.image_to_frame(msg).pixels, pixels)


def test_big_endian_mono16(types):
    pixels = np.array([[1, 256, 65535], [4660, 0, 43981]], np.uint16)
    msg = _image_msg(types, pixels, "mono16", step=6, bigendian=True)
    frame = m.image_to_frame(msg)
    np.testing.assert_array_equal(frame.pixels, pixels)
    assert frame.pixels.dtype == np.dtype("=u2")


@pytest.mark.parametrize("change,match", [
    (dict(encoding="yuv422"), "not supported"),
    (dict(step=5), "smaller than one row"),
    (dict(height=9), "bytes"),
    (dict(width=0), "no pixels"),
])
def test_bad_images_are_refused(types, change, match):
    msg = _image_msg(types, _random_image("rgb8", h=4, w=3), "rgb8", step=9)
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ConversionError, match=match):
        m.image_to_frame(msg)


# --- PointCloud2 -----------------------------------------------------------------

def _cloud_msg(types, fields, point_step, records: bytes, height, width, row_step=None,
               bigendian=False):
    pf = [types.PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    row_step = row_step or point_step * width
    return types.PointCloud2(header=m.make_header(types, 42, "lidar"), height=height, width=width,
                             fields=pf, is_bigendian=bigendian, point_step=point_step,
                             row_step=row_step, data=types.bytes_value(records), is_dense=False)


def test_ouster_like_layout_with_padding_and_nans(types):
    # x y z (f4) + 4 pad bytes + intensity f4 + t u4 + reflectivity u2 + ring u2 (+pad to 48)
    dtype = np.dtype({"names": ["x", "y", "z", "intensity", "t", "reflectivity", "ring"],
                      "formats": ["<f4", "<f4", "<f4", "<f4", "<u4", "<u2", "<u2"],
                      "offsets": [0, 4, 8, 16, 20, 24, 26], "itemsize": 48})
    rng = np.random.default_rng(2)
    rec = np.zeros(2 * 4, dtype)
    for name in ("x", "y", "z", "intensity"):
        rec[name] = rng.normal(size=8).astype(np.float32)
    rec["x"][3] = np.nan
    rec["t"] = rng.integers(0, 2**32 - 1, 8, dtype=np.uint32)
    rec["ring"] = [0, 1, 0, 1, 0, 1, 0, 1]
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 16, 7, 1),
              ("t", 20, 6, 1), ("reflectivity", 24, 4, 1), ("ring", 26, 4, 1)]
    msg = _cloud_msg(types, fields, 48, rec.tobytes(), height=2, width=4)
    frame = m.pointcloud2_to_frame(msg)
    assert (frame.height, frame.width, frame.point_step, frame.modality) == (2, 4, 48, Modality.LIDAR)
    assert frame.field_names == tuple(dtype.names)
    for name in dtype.names:
        np.testing.assert_array_equal(frame.points[name], rec[name])
    out = m.frame_to_pointcloud2(frame, types)
    assert [(f.name, f.offset, f.datatype, f.count) for f in out.fields] == fields
    assert (out.point_step, out.row_step, out.is_dense) == (48, 192, False)
    again = m.pointcloud2_to_frame(out)
    assert again.points.tobytes() == frame.points.tobytes()


def test_big_endian_cloud_with_row_padding(types):
    dtype_be = np.dtype([("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("rcs", ">i2")])
    rec = np.zeros(6, dtype_be)
    rec["x"], rec["y"], rec["z"] = np.arange(6), -np.arange(6), 0.5
    rec["rcs"] = [-3, 2, 300, -32768, 32767, 0]
    rows = rec.view(np.uint8).reshape(2, 3 * dtype_be.itemsize)
    padded = np.concatenate([rows, np.full((2, 10), 0xAB, np.uint8)], axis=1)
    fields = [("x", 0, 8, 1), ("y", 8, 8, 1), ("z", 16, 8, 1), ("rcs", 24, 3, 1)]
    msg = _cloud_msg(types, fields, dtype_be.itemsize, padded.tobytes(), 2, 3,
                     row_step=padded.shape[1], bigendian=True)
    frame = m.pointcloud2_to_frame(msg)
    assert frame.modality == Modality.RADAR  # rcs marks it as radar detections
    np.testing.assert_array_equal(frame.points["rcs"], rec["rcs"])
    np.testing.assert_array_equal(frame.points["x"], np.arange(6))
    assert frame.points.dtype["x"].byteorder in "<="


def test_array_field_count_and_empty_cloud(types):
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("desc", "<u1", (3,))])
    rec = np.zeros(2, dtype)
    rec["desc"] = [[1, 2, 3], [4, 5, 6]]
    msg = _cloud_msg(types, [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("desc", 12, 2, 3)],
                     15, rec.tobytes(), 1, 2)
    frame = m.pointcloud2_to_frame(msg)
    np.testing.assert_array_equal(frame.points["desc"], [[1, 2, 3], [4, 5, 6]])
    assert [f.count for f in m.frame_to_pointcloud2(frame, types).fields] == [1, 1, 1, 3]

    empty = _cloud_msg(types, [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, b"", 1, 0)
    frame = m.pointcloud2_to_frame(empty)
    assert frame.num_points == 0 and m.frame_to_pointcloud2(frame, types).width == 0


@pytest.mark.parametrize("fields,step,match", [
    ([("x", 0, 7, 1), ("y", 4, 7, 1)], 12, "no 'z' field"),
    ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 10, 7, 1)], 12, "overruns"),
    ([("x", 0, 7, 1), ("x", 4, 7, 1), ("z", 8, 7, 1)], 12, "twice"),
    ([("x", 0, 9, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, "datatype 9"),
    ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 0, "point_step"),
])
def test_bad_point_layouts_are_refused(types, fields, step, match):
    msg = _cloud_msg(types, fields, step, bytes(max(step, 0) * 2), 1, 2)
    with pytest.raises(ConversionError, match=match):
        m.pointcloud2_to_frame(msg)


def test_truncated_cloud_data_is_refused(types):
    msg = _cloud_msg(types, [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, bytes(20), 1, 2)
    with pytest.raises(ConversionError, match="20 bytes"):
        m.pointcloud2_to_frame(msg)


# --- CompressedImage -------------------------------------------------------------

def test_compressed_message_carries_tag_and_payload(types):
    frame = PointCloudFrame.from_arrays("radar", x=np.ones(3), y=np.zeros(3), z=np.zeros(3),
                                        stamp_ns=7, frame_id="radar")
    payload = encode(frame, "zstd")
    msg = m.payload_to_compressed(payload, types, 7, "radar")
    assert msg.format == "sensor_codec/radar/zstd; v1; model=classical"
    assert msg.header.frame_id == "radar" and msg.header.stamp.nanosec == 7
    assert m.compressed_to_payload(msg) == payload


def test_foreign_compressed_image_is_refused(types):
    msg = types.CompressedImage(header=m.make_header(types, 0, ""), format="jpeg",
                                data=types.bytes_value(b"\xff\xd8\xff\xe0"))
    with pytest.raises(WireFormatError, match="'jpeg'"):
        m.compressed_to_payload(msg)
