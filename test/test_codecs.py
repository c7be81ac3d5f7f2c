"""Round trips of every registered codec, and the promises of the reference
codecs: quality windows for images, error bounds for point clouds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor_codec.codecs import codec_class, codec_names, decode, encode, get_codec
from sensor_codec.codecs.pointquant import quantisation_step
from sensor_codec.codecs.radar import parse_resolutions
from sensor_codec.errors import ConfigError, InvalidFrameError, UnknownCodecError
from sensor_codec.frames import IMAGE_ENCODINGS, CameraFrame, Modality, PointCloudFrame
from sensor_codec.wire import unpack

CODEC_MODALITIES = [(name, m) for name in codec_names()
                    for m in sorted(codec_class(name).modalities)]
IMAGE_CODECS = ("jpeg", "webp", "avif", "jpegxl")


def _euclidean_error(a: PointCloudFrame, b: PointCloudFrame) -> np.ndarray:
    """Distance between corresponding points whose coordinates are all finite."""
    finite = np.isfinite(a.xyz()).all(axis=1)
    return np.linalg.norm(a.xyz()[finite] - b.xyz()[finite], axis=1)


# --- every codec ----------------------------------------------------------------

@pytest.mark.parametrize("name,modality", CODEC_MODALITIES,
                         ids=[f"{n}-{m.label}" for n, m in CODEC_MODALITIES])
def test_round_trip_keeps_header_shape_and_layout(name, modality, make_frame):
    frame = make_frame(modality)
    payload = encode(frame, name)
    back = decode(payload)
    assert type(back) is type(frame)
    assert (back.modality, back.stamp_ns, back.frame_id) == \
        (frame.modality, frame.stamp_ns, frame.frame_id)
    if isinstance(frame, CameraFrame):
        assert (back.encoding, back.pixels.shape, back.pixels.dtype) == \
            (frame.encoding, frame.pixels.shape, frame.pixels.dtype)
        exact = np.array_equal(back.pixels, frame.pixels)
    else:
        assert back.points.dtype == frame.points.dtype
        assert (back.height, back.width) == (frame.height, frame.width)
        exact = all(np.array_equal(back.points[n], frame.points[n]) for n in frame.field_names)
    if codec_class(name).lossless:
        assert exact, f"lossless codec {name} changed the data"
    # A payload states who made it, and the codec's own decoder agrees.
    assert get_codec(name).decode(payload).stamp_ns == frame.stamp_ns


@pytest.mark.parametrize("name,modality", CODEC_MODALITIES,
                         ids=[f"{n}-{m.label}" for n, m in CODEC_MODALITIES])
def test_codec_refuses_modalities_it_does_not_handle(name, modality, make_frame):
    for other in set(Modality) - codec_class(name).modalities:
        with pytest.raises(InvalidFrameError, match=other.label):
            encode(make_frame(other), name)


def test_unknown_codec_and_bad_settings_raise_typed_errors():
    with pytest.raises(UnknownCodecError, match="'nope'.*available"):
        get_codec("nope")
    with pytest.raises(ConfigError, match="above the maximum"):
        get_codec("jpeg", quality=101)
    with pytest.raises(ConfigError, match="below the minimum"):
        get_codec("grid", max_error=0.0)
    with pytest.raises(ConfigError, match="must be int"):
        get_codec("draco", quantization_bits=11.5)
    with pytest.raises(ConfigError, match="no setting"):
        get_codec("png", quality=50)
    with pytest.raises(ConfigError, match="not one of"):
        get_codec("jpeg", subsampling="411")


# --- camera -----------------------------------------------------------------------

# (codec, quality) -> PSNR window on the 96 x 128 synthetic image; measured
# values sit near the middle.
PSNR_WINDOWS = {("jpeg", 90): (30, 36), ("webp", 90): (30, 37), ("avif", 60): (32, 40),
                ("jpegxl", 90): (29, 36)}


@pytest.mark.parametrize("name,quality", sorted(PSNR_WINDOWS))
def test_lossy_image_quality_window_and_rate_grows_with_quality(name, quality, make_camera,
                                                              image_psnr):
    frame = make_camera("rgb8", 96, 128)
    high = encode(frame, name, quality=quality)
    low = encode(frame, name, quality=30)
    p_high = image_psnr(frame.pixels, decode(high).pixels)
    p_low = image_psnr(frame.pixels, decode(low).pixels)
    lo, hi = PSNR_WINDOWS[(name, quality)]
    assert lo < p_high < hi
    assert len(low) < len(high) and p_low < p_high
    assert len(high) < frame.nbytes / 5  # and it does compress


@pytest.mark.parametrize("name", IMAGE_CODECS + ("png",))
@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_image_codecs_keep_every_encoding_or_refuse_it(name, encoding, make_camera,
                                                       image_psnr):
    frame = make_camera(encoding)
    if encoding == "mono16" and name not in ("png", "jpegxl"):
        with pytest.raises(InvalidFrameError, match="mono16.*'png'"):
            encode(frame, name)
        return
    back = decode(encode(frame, name))
    assert back.encoding == encoding and back.pixels.shape == frame.pixels.shape
    if name == "png":
        np.testing.assert_array_equal(back.pixels, frame.pixels)
        return
    if frame.channels == 1:
        peak = 65535 if encoding == "mono16" else 255
        assert image_psnr(frame.pixels, back.pixels, peak) > 35
        return
    # Every colour encoding is the same RGB picture underneath, coded alike.
    rgb_reference = decode(encode(make_camera("rgb8"), name)).pixels
    np.testing.assert_array_equal(back.to_rgb8(), rgb_reference)
    assert image_psnr(frame.to_rgb8(), back.to_rgb8()) > 25
    if encoding in ("rgba8", "bgra8"):
        np.testing.assert_array_equal(back.pixels[:, :, 3], frame.pixels[:, :, 3])


@pytest.mark.parametrize("name", IMAGE_CODECS)
def test_bgr_channel_order_survives(name):
    # Pure red in BGR order: channel 2 high, channels 0 and 1 low.
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, :, 2] = 220
    back = decode(encode(CameraFrame(pixels, "bgr8"), name)).pixels.astype(float)
    assert back[:, :, 2].mean() > 190 and back[:, :, 0].mean() < 30 and back[:, :, 1].mean() < 30


# --- grid (bounded-error lidar) ---------------------------------------------------

@pytest.mark.parametrize("max_error", [0.001, 0.01, 0.05])
def test_grid_error_bound_holds_for_every_point_and_rate_falls(max_error, make_lidar):
    frame = make_lidar(nan_fraction=0.05)
    back = decode(encode(frame, "grid", max_error=max_error))
    finite = np.isfinite(frame.xyz()).all(axis=1)
    err = _euclidean_error(frame, back)
    assert err.max() <= max_error
    assert err.max() > 0.5 * max_error  # the bound is used, not wasted
    # NaN points, other fields and the organised grid come back exactly.
    np.testing.assert_array_equal(back.xyz()[~finite], frame.xyz()[~finite])
    for name in ("intensity", "ring"):
        np.testing.assert_array_equal(back.points[name], frame.points[name])
    assert (back.height, back.width) == (frame.height, frame.width)


def test_grid_compresses_better_at_coarser_bounds_and_beats_zstd(make_lidar):
    frame = make_lidar(rings=32, columns=256)
    sizes = [len(encode(frame, "grid", max_error=e)) for e in (0.001, 0.01, 0.05)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[1] < 0.5 * len(encode(frame, "zstd"))


@pytest.mark.parametrize("offset", [4e4, 7e4, 1e6])
def test_grid_keeps_its_bound_far_from_the_origin(offset):
    # float32 spacing is 0.004 m at 4e4, 0.008 m at 7e4 (about the grid step
    # for 1 cm, where rounding to float32 would break a naive bound) and
    # 0.0625 m at 1e6; the step shrinks so that the bound holds at each.
    rng = np.random.default_rng(5)
    x = (offset + rng.uniform(-50, 50, 2000)).astype(np.float32)
    y = (-offset + rng.uniform(-50, 50, 2000)).astype(np.float32)
    z = rng.uniform(-3, 3, 2000).astype(np.float32)
    frame = PointCloudFrame.from_arrays("lidar", x=x, y=y, z=z)
    back = decode(encode(frame, "grid", max_error=0.01))
    assert _euclidean_error(frame, back).max() <= 0.01


def test_grid_refuses_values_it_cannot_bound():
    frame = PointCloudFrame.from_arrays("lidar", x=np.array([1e30], np.float32),
                                        y=np.zeros(1, np.float32), z=np.zeros(1, np.float32))
    with pytest.raises(InvalidFrameError, match="'x' holds 1e\\+30"):
        encode(frame, "grid", max_error=1e-3)


def test_quantisation_step_is_just_under_twice_the_bound_for_small_values():
    step = quantisation_step(0.005, np.dtype("<f4"), 100.0)
    assert 0.00999 < step < 0.01
    # At 1e6 m float32 spacing (0.0625) exceeds the bound: step falls back to it.
    assert quantisation_step(0.005, np.dtype("<f4"), 1e6) == pytest.approx(0.005, rel=1e-6)


_float32s = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 200), scale=st.sampled_from([1e-3, 1.0, 100.0, 1e5]),
       max_error=st.sampled_from([1e-5, 1e-3, 0.01, 0.3]), nan_every=st.integers(0, 7),
       duplicates=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_grid_bound_property(n, scale, max_error, nan_every, duplicates, seed):
    rng = np.random.default_rng(seed)
    xyz = (rng.standard_normal((n, 3)) * scale).astype(np.float32)
    if duplicates and n > 1:
        xyz[n // 2:] = xyz[: n - n // 2]
    if nan_every and n:
        xyz[::nan_every + 1, rng.integers(0, 3)] = np.nan
        xyz[1::nan_every + 3, 0] = -np.inf
    frame = PointCloudFrame.from_arrays("lidar", x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2],
                                        t=rng.random(n))
    back = decode(encode(frame, "grid", max_error=max_error))
    assert back.num_points == n
    assert np.all(_euclidean_error(frame, back) <= max_error)
    # Non-finite coordinates come back as the very same values; the finite
    # coordinates of such points are quantised like any other.
    special = ~np.isfinite(xyz)
    np.testing.assert_array_equal(back.xyz()[special], frame.xyz()[special])
    assert np.all(np.abs(back.xyz()[~special] - frame.xyz()[~special]) <= max_error)
    np.testing.assert_array_equal(back.points["t"], frame.points["t"])


@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.tuples(_float32s, _float32s, _float32s), min_size=1, max_size=40))
def test_grid_bound_property_on_arbitrary_float32_values(values):
    xyz = np.array(values, dtype=np.float32)
    frame = PointCloudFrame.from_arrays("lidar", x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2])
    back = decode(encode(frame, "grid", max_error=1e-5))
    assert np.all(_euclidean_error(frame, back) <= 1e-5)


# --- draco ----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 11, 14])
def test_draco_error_within_quantisation_bound_and_order_kept(bits, make_lidar):
    frame = make_lidar(nan_fraction=0.03)
    back = decode(encode(frame, "draco", quantization_bits=bits))
    xyz = frame.xyz()
    finite = np.isfinite(xyz).all(axis=1)
    extent = np.ptp(xyz[finite], axis=0).max()
    # Half a quantisation level per axis, plus float32 rounding of the output.
    bound = extent / (2 ** bits - 1) / 2 + np.spacing(np.float32(np.abs(xyz[finite]).max()))
    per_axis = np.abs(back.xyz() - xyz)[finite]
    assert per_axis.max() <= bound
    assert per_axis.max() > 0.25 * bound  # it really quantises at this level
    np.testing.assert_array_equal(back.xyz()[~finite], xyz[~finite])
    for name in ("intensity", "ring"):  # exact, and still aligned with their points
        np.testing.assert_array_equal(back.points[name], frame.points[name])
    assert (back.height, back.width) == (frame.height, frame.width)


def test_draco_takes_single_point_empty_and_all_nan_clouds():
    one = PointCloudFrame.from_arrays("lidar", x=np.array([1.5], np.float32),
                                      y=np.array([-2.0], np.float32),
                                      z=np.array([0.25], np.float32))
    np.testing.assert_allclose(decode(encode(one, "draco")).xyz(), one.xyz(), atol=1e-6)
    empty = PointCloudFrame.from_arrays("lidar", x=np.zeros(0, np.float32),
                                        y=np.zeros(0, np.float32), z=np.zeros(0, np.float32))
    assert decode(encode(empty, "draco")).num_points == 0
    nan = np.full(3, np.nan, np.float32)
    all_nan = PointCloudFrame.from_arrays("radar", x=nan, y=nan, z=nan)
    assert np.isnan(decode(encode(all_nan, "draco")).xyz()).all()


# --- radar_quant -----------------------------------------------------------------------

def test_radar_quant_keeps_each_field_within_half_its_resolution(make_radar):
    frame = make_radar()
    frame.points["v_r"][3] = np.nan
    resolutions = {"x": 0.02, "y": 0.02, "z": 0.1, "rcs": 0.5, "v_r": 0.05}
    text = ",".join(f"{k}={v}" for k, v in resolutions.items())
    back = decode(encode(frame, "radar_quant", resolutions=text, default_resolution=0.2))
    expected = dict(resolutions, v_r_compensated=0.2)  # unlisted float field: the default
    for name, res in expected.items():
        a, b = frame.points[name].astype(np.float64), back.points[name].astype(np.float64)
        finite = np.isfinite(a)
        err = np.abs(a - b)[finite]
        assert err.max() <= res / 2, name
        assert err.max() > res / 8, name  # quantised at that resolution, not finer
    assert np.isnan(back.points["v_r"][3])
    np.testing.assert_array_equal(back.points["track_id"], frame.points["track_id"])


def test_radar_quant_resolution_zero_keeps_a_field_exact(make_radar):
    frame = make_radar()
    back = decode(encode(frame, "radar_quant", resolutions="x=0,y=0.01,z=0.01",
                         default_resolution=0.0))
    for name in ("x", "rcs", "v_r", "v_r_compensated"):
        np.testing.assert_array_equal(back.points[name], frame.points[name])
    assert np.abs(back.points["y"] - frame.points["y"]).max() <= 0.005


@pytest.mark.parametrize("text,message", [
    ("x", "not of the form"), ("=0.1", "not of the form"), ("x=abc", "must be a number"),
    ("x=-1", "finite and >= 0"), ("x=nan", "finite and >= 0"), ("x=0.1,x=0.2", "twice")])
def test_radar_resolutions_syntax_errors_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        get_codec("radar_quant", resolutions=text)


def test_radar_resolutions_parse():
    assert parse_resolutions(" x=0.01, rcs = 0.5 ,") == {"x": 0.01, "rcs": 0.5}
    assert parse_resolutions("") == {}


def test_point_codecs_keep_padded_layouts_and_array_fields():
    # A PointCloud2-like layout: padding after z, a 2-value field, step 32.
    dtype = np.dtype({"names": ["x", "y", "z", "intensity", "pair"],
                      "formats": ["<f4", "<f4", "<f4", "<f4", ("<u2", (2,))],
                      "offsets": [0, 4, 8, 16, 20], "itemsize": 32})
    rng = np.random.default_rng(3)
    points = np.zeros(50, dtype=dtype)
    for axis in "xyz":
        points[axis] = rng.uniform(-10, 10, 50)
    points["intensity"] = rng.uniform(0, 100, 50)
    points["pair"] = rng.integers(0, 60000, (50, 2))
    frame = PointCloudFrame(points, "lidar", stamp_ns=7, frame_id="padded")
    for name in ("grid", "draco", "zstd"):
        back = decode(encode(frame, name))
        assert back.points.dtype == dtype, name
        np.testing.assert_array_equal(back.points["pair"], points["pair"])
        np.testing.assert_array_equal(back.points["intensity"], points["intensity"])
        assert np.abs(back.xyz() - frame.xyz()).max() <= 0.01


def test_grid_other_fields_use_a_palette_when_they_have_few_values(make_lidar):
    # intensity in steps of 0.01 has at most 101 values: coded as one byte per point.
    frame = make_lidar(rings=32, columns=256)
    coding = {entry[0]: entry for entry in unpack(encode(frame, "grid")).metadata["coding"]}
    assert coding["intensity"][2] == "palette" and coding["ring"][2] in ("palette", "delta")
    assert coding["x"][2] == "delta"  # scan order makes neighbours close
    # The grid step: just under 2 * max_error / sqrt(3).
    assert 0.0115 < coding["x"][1] < 2 * 0.01 / math.sqrt(3)


@pytest.mark.parametrize("name", [n for n in codec_names(Modality.LIDAR)])
def test_one_byte_fields_survive_every_lidar_codec(name):
    # numpy spells one-byte types "|u1"/"|i1": the layout must still round-trip.
    rng = np.random.default_rng(11)
    frame = PointCloudFrame.from_arrays(
        "lidar", x=rng.uniform(-9, 9, 64).astype(np.float32),
        y=rng.uniform(-9, 9, 64).astype(np.float32), z=rng.uniform(-1, 1, 64).astype(np.float32),
        intensity=rng.integers(0, 256, 64).astype(np.uint8),
        flags=rng.integers(-128, 128, 64).astype(np.int8))
    back = decode(encode(frame, name))
    assert back.points.dtype == frame.points.dtype
    np.testing.assert_array_equal(back.points["intensity"], frame.points["intensity"])
    np.testing.assert_array_equal(back.points["flags"], frame.points["flags"])


def test_byte_shuffle_round_trip_and_size_check():
    from sensor_codec.codecs.streams import byte_shuffle, byte_unshuffle
    from sensor_codec.errors import WireFormatError

    values = np.array([1, 256, -2, 70000], np.int32)
    shuffled = byte_shuffle(values)
    assert shuffled[:4] == bytes([1, 0, 254, 112])   # the low bytes first
    np.testing.assert_array_equal(byte_unshuffle(shuffled, np.int32, 4), values)
    assert byte_unshuffle(b"", np.float32, 0).dtype == np.float32
    with pytest.raises(WireFormatError, match="holds 15 bytes"):
        byte_unshuffle(shuffled[:-1], np.int32, 4)
