"""Dataset readers and importers: synthetic files in tmp_path, and the real samples."""

import json
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import yaml

from sensor_codec.bag.io import bag_topics, deserialize, read_messages
from sensor_codec.cli import main
from sensor_codec.datasets.calibration import (CalibrationError, load_kitti_calibration,
                                               parse_kitti_calibration)
from sensor_codec.datasets.comma2k19 import group_tracks, import_comma2k19, read_comma2k19
from sensor_codec.datasets.common import DEFAULT_STAMP_NS, DatasetError, read_bag_calibration
from sensor_codec.datasets.kitti import import_kitti
from sensor_codec.datasets.nuscenes import import_nuscenes, read_nuscenes
from sensor_codec.datasets.vod import import_vod, read_pose
from sensor_codec.frames import Modality
from sensor_codec.messages import image_to_frame, pointcloud2_to_frame

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(),
                                   reason=f"real samples not available at {SAMPLES}")

P2 = np.array([[700.0, 0, 600, 45], [0, 700, 180, -0.3], [0, 0, 1, 0.005]])
R0 = np.eye(3)
TR = np.array([[0.0, -1, 0, 0.1], [0, 0, -1, -0.2], [1, 0, 0, -0.3]])  # x fwd -> z fwd


def _calib_text(**override):
    rows = {"P0": P2, "P1": P2, "P2": P2, "P3": P2, "R0_rect": R0, "Tr_velo_to_cam": TR,
            "Tr_imu_to_velo": TR}
    rows.update(override)
    return "\n".join(f"{k}: " + " ".join(f"{v:.12e}" for v in np.ravel(m)) if m is not None
                     else f"{k}:" for k, m in rows.items()) + "\n"


def _messages(bag, topic):
    return [deserialize(m.data, m.msgtype) for m in read_messages(bag, [topic])]


def _cloud(bag, topic):
    (msg,) = _messages(bag, topic)
    return pointcloud2_to_frame(msg)


# --- calibration ---------------------------------------------------------------

def test_parse_calibration_shapes_and_projection():
    calib = parse_kitti_calibration(_calib_text(Tr_imu_to_velo=None), "synthetic")
    assert calib.P2.shape == (3, 4) and calib.R0_rect.shape == (3, 3)
    np.testing.assert_array_equal(calib.P2, P2)
    np.testing.assert_array_equal(calib.Tr_velo_to_cam, TR)
    assert "Tr_imu_to_velo" not in calib.matrices  # empty value counts as absent
    assert calib.Tr_velo_to_cam_4x4.shape == (4, 4)
    np.testing.assert_array_equal(calib.Tr_velo_to_cam_4x4[3], [0, 0, 0, 1])
    # A point 10 m ahead of the lidar lands at depth ~10 m near the principal point.
    uv, depth = calib.project(np.array([[10.0, 0, 0], [-10.0, 0, 0]]))
    cam = TR @ np.array([10.0, 0, 0, 1])
    expected = P2 @ np.append(cam, 1)
    np.testing.assert_allclose(uv[0], expected[:2] / expected[2])
    assert depth[0] == pytest.approx(expected[2]) and depth[1] < 0
    assert calib.to_dict()["P2"] == P2.tolist()


@pytest.mark.parametrize("text, match", [
    ("", "no calibration entries"),
    ("P2 1 2 3\n", "line 1: expected 'KEY: numbers'"),
    (_calib_text().replace("R0_rect: ", "R0_rect: 1 "), "R0_rect needs 9 values"),
    (_calib_text().replace("P2: ", "P2: abc "), "P2 has a non-numeric value"),
    (_calib_text() + "P2: " + " ".join(["1"] * 12) + "\n", "line 8: P2 appears twice"),
    (_calib_text(Tr_velo_to_cam=None), r"missing \['Tr_velo_to_cam'\]"),
    (_calib_text().replace("P3: 7.000000000000e+02", "P3: nan"), "P3 has non-finite values"),
    (_calib_text(R0_rect=2 * np.eye(3)), "R0_rect is not a rotation"),
])
def test_malformed_calibration_raises_typed_errors(text, match):
    with pytest.raises(CalibrationError, match=match):
        parse_kitti_calibration(text, "bad.txt")


def test_missing_calibration_file(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        load_kitti_calibration(tmp_path / "calib.txt")


# --- synthetic sample directories -------------------------------------------------

def _write_kitti(directory, rng, n=64):
    directory.mkdir()
    points = rng.uniform(-20, 20, (n, 4)).astype("<f4")
    points[:, 3] = rng.uniform(0, 1, n)
    points.tofile(directory / "velodyne.bin")
    image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    (directory / "image_2.png").write_bytes(imagecodecs.png_encode(image))
    (directory / "calib.txt").write_text(_calib_text())
    return points, image


def test_import_kitti_synthetic(tmp_path):
    rng = np.random.default_rng(1)
    points, image = _write_kitti(tmp_path / "k", rng)
    report = import_kitti(tmp_path / "k", tmp_path / "bag", stamp_ns=5_000_000_000)
    assert report.messages == {"/calibration": 1, "/camera/image_raw": 1, "/lidar/points": 1}
    assert report.points == {"/lidar/points": 64}
    assert bag_topics(tmp_path / "bag") == {"/calibration": "std_msgs/msg/String",
                                            "/camera/image_raw": "sensor_msgs/msg/Image",
                                            "/lidar/points": "sensor_msgs/msg/PointCloud2"}
    cloud = _cloud(tmp_path / "bag", "/lidar/points")
    assert cloud.field_names == ("x", "y", "z", "intensity")
    assert (cloud.stamp_ns, cloud.frame_id, cloud.modality) == (5_000_000_000, "lidar",
                                                                Modality.LIDAR)
    for i, name in enumerate(cloud.field_names):
        np.testing.assert_array_equal(cloud.points[name], points[:, i])
    (img_msg,) = _messages(tmp_path / "bag", "/camera/image_raw")
    frame = image_to_frame(img_msg)
    assert (frame.encoding, frame.frame_id) == ("rgb8", "camera")
    np.testing.assert_array_equal(frame.pixels, image)
    doc = read_bag_calibration(tmp_path / "bag")
    assert doc["dataset"] == "kitti" and doc["frames"] == {"camera": "camera", "lidar": "lidar"}
    np.testing.assert_array_equal(doc["calibration"]["lidar"]["P2"], P2)
    np.testing.assert_array_equal(doc["calibration"]["lidar"]["Tr_velo_to_cam"], TR)


def test_importer_input_errors(tmp_path):
    rng = np.random.default_rng(2)
    with pytest.raises(DatasetError, match="does not exist"):
        import_kitti(tmp_path / "none", tmp_path / "bag")
    _write_kitti(tmp_path / "k", rng)
    (tmp_path / "k" / "calib.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing \['calib.txt'\]"):
        import_kitti(tmp_path / "k", tmp_path / "bag")
    (tmp_path / "k" / "calib.txt").write_text(_calib_text())
    (tmp_path / "k" / "velodyne.bin").write_bytes(b"\x00" * 18)
    with pytest.raises(DatasetError, match="18 bytes, not a multiple of 16"):
        import_kitti(tmp_path / "k", tmp_path / "bag")
    (tmp_path / "k" / "velodyne.bin").write_bytes(b"\x00" * 16)
    (tmp_path / "k" / "image_2.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot decode image"):
        import_kitti(tmp_path / "k", tmp_path / "bag")
    assert not (tmp_path / "bag").exists()  # nothing written when reading fails


def test_nuscenes_ring_becomes_uint16_and_must_be_whole(tmp_path):
    rng = np.random.default_rng(3)
    d = tmp_path / "n"
    d.mkdir()
    table = rng.uniform(-30, 30, (50, 5)).astype("<f4")
    table[:, 3] = rng.integers(0, 256, 50)
    table[:, 4] = rng.integers(0, 32, 50)
    table.tofile(d / "LIDAR_TOP.pcd.bin")
    (d / "CAM_FRONT.jpg").write_bytes(imagecodecs.jpeg_encode(
        np.full((16, 16, 3), 128, np.uint8), level=95))
    import_nuscenes(d, tmp_path / "bag", storage="mcap")
    cloud = _cloud(tmp_path / "bag", "/lidar/points")
    assert cloud.points.dtype["ring"] == np.dtype("<u2")
    np.testing.assert_array_equal(cloud.points["ring"], table[:, 4].astype(np.uint16))
    np.testing.assert_array_equal(cloud.points["intensity"], table[:, 3])
    assert cloud.stamp_ns == DEFAULT_STAMP_NS
    table[0, 4] = 2.5
    table.tofile(d / "LIDAR_TOP.pcd.bin")
    with pytest.raises(DatasetError, match="'ring' should hold whole numbers"):
        read_nuscenes(d)


def test_import_vod_synthetic_with_radar_and_pose(tmp_path):
    rng = np.random.default_rng(4)
    d = tmp_path / "v"
    d.mkdir()
    lidar = rng.normal(size=(40, 4)).astype("<f4")
    radar = rng.normal(size=(9, 7)).astype("<f4")
    lidar.tofile(d / "lidar.bin")
    radar.tofile(d / "radar.bin")
    (d / "image_2.jpg").write_bytes(imagecodecs.jpeg_encode(
        rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))
    (d / "calib_lidar.txt").write_text(_calib_text(Tr_imu_to_velo=None))
    radar_tr = TR.copy()
    radar_tr[:, 3] = [0.5, 0.6, 0.7]
    (d / "calib_radar.txt").write_text(_calib_text(Tr_velo_to_cam=radar_tr, Tr_imu_to_velo=None))
    odom = np.arange(16.0).reshape(4, 4)
    (d / "pose.json").write_text(json.dumps({"odomToCamera": odom.ravel().tolist()}) + "\n"
                                 + json.dumps({"mapToCamera": (2 * odom).ravel().tolist()}))
    report = import_vod(d, tmp_path / "bag")
    assert report.points == {"/lidar/points": 40, "/radar/points": 9}
    cloud = _cloud(tmp_path / "bag", "/radar/points")
    assert cloud.modality == Modality.RADAR and cloud.frame_id == "radar"
    assert cloud.field_names == ("x", "y", "z", "rcs", "v_r", "v_r_compensated", "time")
    for i, name in enumerate(cloud.field_names):
        np.testing.assert_array_equal(cloud.points[name], radar[:, i])
    doc = read_bag_calibration(tmp_path / "bag")
    np.testing.assert_array_equal(doc["calibration"]["radar"]["Tr_velo_to_cam"], radar_tr)
    np.testing.assert_array_equal(doc["calibration"]["lidar"]["Tr_velo_to_cam"], TR)
    np.testing.assert_array_equal(doc["pose"]["mapToCamera"], 2 * odom)
    (d / "pose.json").write_text('{"odomToCamera": [1, 2, 3]}')
    with pytest.raises(DatasetError, match="must be 16 finite numbers"):
        read_pose(d / "pose.json")


def _write_comma(directory, t, value):
    directory.mkdir()
    np.save(directory / "t.npy", t)
    np.save(directory / "value.npy", value)


def test_comma2k19_groups_tracks_into_radar_cycles(tmp_path):
    # Two 20 Hz cycles of 3 tracks each, messages 10 us apart inside a burst; the
    # second cycle repeats address 530 after a short gap (a third burst starts there).
    t = np.array([100.0, 100.00001, 100.00002, 100.05, 100.05001, 100.05002, 100.0501])
    address = np.array([528, 529, 530, 528, 529, 530, 530])
    value = np.full((7, 7), np.nan)
    value[:, 0] = np.arange(7) * 10.0  # forward
    value[:, 1] = -np.arange(7)  # left
    value[:, 2] = 0.5 * np.arange(7)  # relative speed
    value[:, 5] = address
    value[:, 6] = [1, 0, 0, 0, 0, 0, 1]
    assert [g.tolist() for g in group_tracks(t, address)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(group_tracks(t, address, "timestamp")) == 7
    _write_comma(tmp_path / "c", t[::-1].copy(), value[::-1].copy())  # unsorted on disk
    frames = read_comma2k19(tmp_path / "c")
    assert [f.num_points for f in frames] == [3, 3, 1]
    first = frames[0]
    assert first.modality == Modality.RADAR and first.frame_id == "radar"
    assert first.field_names == ("x", "y", "z", "v_r", "track_id", "new_track")
    assert first.stamp_ns == round(100.00002 * 1e9)
    np.testing.assert_array_equal(first.points["x"], [0, 10, 20])
    np.testing.assert_array_equal(first.points["y"], [0, -1, -2])
    np.testing.assert_array_equal(first.points["z"], 0)
    np.testing.assert_array_equal(first.points["v_r"], [0, 0.5, 1.0])
    np.testing.assert_array_equal(first.points["track_id"], [528, 529, 530])
    np.testing.assert_array_equal(first.points["new_track"], [1, 0, 0])
    report = import_comma2k19(tmp_path / "c", tmp_path / "bag")
    assert report.messages == {"/radar/points": 3} and report.points == {"/radar/points": 7}
    assert [m.timestamp_ns for m in read_messages(tmp_path / "bag")] == [
        f.stamp_ns for f in frames]


def test_comma2k19_window_and_stream_groups_keep_message_times(tmp_path):
    t = np.array([10.0, 10.4, 10.99, 11.0, 11.7, 13.2])
    value = np.zeros((6, 7))
    value[:, 0] = np.arange(6)
    value[:, 5] = [528, 529, 528, 529, 528, 529]
    assert [g.tolist() for g in group_tracks(t, value[:, 5], "window", window_s=1.0)] == [[0, 1, 2], [3, 4], [5]]
    assert [g.tolist() for g in group_tracks(t, value[:, 5], "stream")] == [[0, 1, 2, 3, 4, 5]]
    _write_comma(tmp_path / "c", t, value)
    windows = read_comma2k19(tmp_path / "c", "window", window_s=1.0)
    assert [f.num_points for f in windows] == [3, 2, 1]
    assert windows[1].stamp_ns == 11_000_000_000
    np.testing.assert_allclose(windows[1].points["time"], [0.0, 0.7], atol=1e-6)
    np.testing.assert_array_equal(windows[1].points["x"], [3, 4])
    (stream,) = read_comma2k19(tmp_path / "c", "stream")
    np.testing.assert_allclose(stream.points["time"], t - 10.0, atol=1e-6)
    with pytest.raises(DatasetError, match="window_s"):
        read_comma2k19(tmp_path / "c", "window", window_s=0.0)
    report = import_comma2k19(tmp_path / "c", tmp_path / "bag", group="window", window_s=2.0)
    assert report.messages == {"/radar/points": 2} and report.points == {"/radar/points": 6}


def test_comma2k19_rejects_bad_arrays(tmp_path):
    _write_comma(tmp_path / "a", np.zeros(3), np.zeros((3, 6)))
    with pytest.raises(DatasetError, match=r"value.npy \(N, 7\)"):
        read_comma2k19(tmp_path / "a")
    value = np.zeros((2, 7))
    value[:, 5] = [528.5, 529]
    _write_comma(tmp_path / "b", np.array([1.0, 2.0]), value)
    with pytest.raises(DatasetError, match="CAN addresses"):
        read_comma2k19(tmp_path / "b")
    value[:, 5] = 528
    _write_comma(tmp_path / "c", np.array([1.0, 2.0]), value)
    with pytest.raises(DatasetError, match="unknown grouping 'per_frame'"):
        read_comma2k19(tmp_path / "c", group="per_frame")


def test_import_cli_on_synthetic_kitti(tmp_path, capsys):
    _write_kitti(tmp_path / "k", np.random.default_rng(5))
    bag = tmp_path / "bag"
    assert main(["import", "kitti", str(tmp_path / "k"), "-o", str(bag), "--storage", "mcap",
                 "--stamp", "2.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["storage"] == "mcap" and report["points"] == {"/lidar/points": 64}
    assert [m.timestamp_ns for m in read_messages(bag)] == [2_500_000_000] * 3
    assert main(["import", "kitti", str(tmp_path / "k"), "-o", str(bag)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["import", "kitti", str(tmp_path / "k"), "-o", str(bag), "--overwrite"]) == 0
    assert "/lidar/points: 1 message(s), 64 points" in capsys.readouterr().out


# --- the real samples ------------------------------------------------------------

@needs_samples
def test_real_kitti_sample(tmp_path):
    src = SAMPLES / "kitti_000000"
    raw = np.fromfile(src / "velodyne.bin", dtype="<f4").reshape(-1, 4)
    import_kitti(src, tmp_path / "bag")
    cloud = _cloud(tmp_path / "bag", "/lidar/points")
    assert cloud.num_points == len(raw) == 115_384
    for i, name in enumerate(("x", "y", "z", "intensity")):
        np.testing.assert_array_equal(cloud.points[name], raw[:, i])
    (img,) = _messages(tmp_path / "bag", "/camera/image_raw")
    assert (img.height, img.width, img.encoding) == (370, 1224, "rgb8")
    calib = load_kitti_calibration(src / "calib.txt")
    assert calib.P2[0, 0] == pytest.approx(707.0493) and calib.P2[0, 3] == pytest.approx(45.75831)
    assert calib.Tr_velo_to_cam[2, 3] == pytest.approx(-0.3321029)
    # ~20k of KITTI's 115k points fall inside the left colour camera's image.
    uv, depth = calib.project(cloud.xyz())
    inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 1224) & (uv[:, 1] >= 0) & (
        uv[:, 1] < 370)
    assert 18_000 < inside.sum() < 23_000
    doc = read_bag_calibration(tmp_path / "bag")
    np.testing.assert_array_equal(doc["calibration"]["lidar"]["R0_rect"], calib.R0_rect)


@needs_samples
def test_real_nuscenes_sample(tmp_path):
    src = SAMPLES / "nuscenes_n015"
    raw = np.fromfile(src / "LIDAR_TOP.pcd.bin", dtype="<f4").reshape(-1, 5)
    import_nuscenes(src, tmp_path / "bag")
    cloud = _cloud(tmp_path / "bag", "/lidar/points")
    assert cloud.num_points == 34_688
    np.testing.assert_array_equal(cloud.points["intensity"], raw[:, 3])
    np.testing.assert_array_equal(cloud.points["ring"], raw[:, 4].astype(np.uint16))
    assert sorted(np.unique(cloud.points["ring"])) == list(range(32))
    (img,) = _messages(tmp_path / "bag", "/camera/image_raw")
    assert (img.height, img.width) == (900, 1600)


@needs_samples
def test_real_vod_sample(tmp_path):
    src = SAMPLES / "vod_00549"
    raw_radar = np.fromfile(src / "radar.bin", dtype="<f4").reshape(-1, 7)
    import_vod(src, tmp_path / "bag")
    assert _cloud(tmp_path / "bag", "/lidar/points").num_points == 167_772
    radar = _cloud(tmp_path / "bag", "/radar/points")
    assert radar.num_points == 322 and radar.modality == Modality.RADAR
    np.testing.assert_array_equal(radar.points["v_r"], raw_radar[:, 4])
    np.testing.assert_array_equal(radar.points["rcs"], raw_radar[:, 3])
    doc = read_bag_calibration(tmp_path / "bag")
    np.testing.assert_allclose(doc["calibration"]["radar"]["Tr_velo_to_cam"][0],
                               [-0.013857, -0.9997468, 0.01772762, 0.05283124])
    assert set(doc["pose"]) == {"odomToCamera", "mapToCamera", "UTMToCamera"}
    assert doc["pose"]["odomToCamera"].shape == (4, 4)
    (img,) = _messages(tmp_path / "bag", "/camera/image_raw")
    assert (img.height, img.width) == (1216, 1936)


@needs_samples
def test_real_comma2k19_sample(tmp_path):
    src = SAMPLES / "comma2k19_radar"
    value = np.load(src / "value.npy")
    report = import_comma2k19(src, tmp_path / "bag")
    assert report.points == {"/radar/points": 10_100}
    clouds = [pointcloud2_to_frame(m) for m in _messages(tmp_path / "bag", "/radar/points")]
    # 60 s of a 20 Hz radar: about 1200 cycles, each track slot at most once.
    assert 1150 <= len(clouds) <= 1250
    for c in clouds:
        assert len(np.unique(c.points["track_id"])) == c.num_points
    stamps = np.array([c.stamp_ns for c in clouds]) / 1e9
    assert np.median(np.diff(stamps)) == pytest.approx(0.05, abs=0.002)
    merged = np.concatenate([c.points["track_id"] for c in clouds])
    assert sorted(np.unique(merged)) == sorted(np.unique(value[:, 5]).astype(int))
    assert sum(int(c.points["new_track"].sum()) for c in clouds) == int(value[:, 6].sum())


@needs_samples
def test_real_calibration_files_parse():
    vod = load_kitti_calibration(SAMPLES / "vod_00549" / "calib_lidar.txt")
    assert "Tr_imu_to_velo" not in vod.matrices  # empty in View-of-Delft files
    assert vod.P2[0, 0] == pytest.approx(1495.468642)
    assert yaml.safe_load(yaml.safe_dump(vod.to_dict()))["P2"][1][2] == pytest.approx(624.89592)
