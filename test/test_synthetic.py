"""The built-in synthetic drive: geometry, sensor models, calibration,
timing, determinism and the ``synth`` command. Small sizes keep it fast."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from sensor_codec.frames import Modality
from sensor_codec.synthetic import raycast
from sensor_codec.synthetic.drive import (TOPIC_IMAGE, TOPIC_LIDAR, TOPIC_RADAR, TOPIC_SEMANTIC,
                                          SyntheticDrive)
from sensor_codec.synthetic.lidar import LidarSpec, hdl64_elevations
from sensor_codec.synthetic.scene import EGO_LANE_Y, Label, Scene

CAMERA_SIZE = (320, 180)


@pytest.fixture(scope="module")
def drive() -> SyntheticDrive:
    """Noise-free drive (exact geometry) with a full 64-beam lidar."""
    return SyntheticDrive(seed=5, duration_s=1.0, camera_size=CAMERA_SIZE, lidar_columns=1024,
                          noise=False)


# --- ray casting ----------------------------------------------------------------------------

def _rays(origin, directions):
    d = np.asarray(directions, dtype=np.float64)
    o = [np.full((1, 1), v) for v in origin]
    return raycast.RayGrid(*o, d[:, 0][None, :], d[:, 1][None, :], d[:, 2][None, :])


def _one_primitive(kind, center, half, rotation=None):
    return raycast.PrimitiveSet(
        kind=np.array([kind], np.int8), center=np.array([center], float),
        rotation=np.array([np.eye(3) if rotation is None else rotation]),
        half=np.array([half], float), velocity=np.zeros((1, 3)), material=np.zeros(1, np.int16),
        label=np.zeros(1, np.uint8), tint=np.ones((1, 3), np.float32),
        object_id=np.zeros(1, np.int32))


def test_ray_primitive_distances_are_analytic():
    diag = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    dirs = [[1, 0, 0], [0, 1, 0], diag, [0, 0, -1], [0, 0, 1]]
    grid = _rays((0.0, 0.0, 0.0), dirs)
    cases = [
        # box 10..12 in x, |y| < 1, |z| < 1: entry at x = 10
        (raycast.BOX, (11, 0, 0), (1, 1, 1), [10.0, np.inf, np.inf, np.inf, np.inf]),
        # cylinder of radius 2 about a vertical axis at (0, 5): side at y = 3
        (raycast.CYLINDER, (0, 5, 0), (2, 2, 1), [np.inf, 3.0, np.inf, np.inf, np.inf]),
        # sphere of radius 1 at distance 6 on the diagonal
        (raycast.ELLIPSOID, tuple(6 * diag), (1, 1, 1), [np.inf, np.inf, 5.0, np.inf, np.inf]),
        # cylinder below the origin, seen through its top cap at z = -2
        (raycast.CYLINDER, (0, 0, -3), (0.5, 0.5, 1), [np.inf, np.inf, np.inf, 2.0, np.inf]),
    ]
    for kind, center, half, expected in cases:
        prims = _one_primitive(kind, center, half)
        t, ids = raycast.cast(grid, prims, prims.center, [(0, 0, 1, 0, len(dirs))],
                              dtype=np.float64)
        np.testing.assert_allclose(t[0], expected, rtol=1e-9, err_msg=raycast.KIND_NAMES[kind])
        np.testing.assert_array_equal(ids[0], np.where(np.isfinite(expected), 0, raycast.NO_HIT))
    # The ground plane z = -1.5 along a ray pointing 30 degrees down: 1.5 / sin(30 deg) = 3.
    down = _rays((0, 0, 0), [[np.cos(np.pi / 6), 0, -np.sin(np.pi / 6)]])
    prims = _one_primitive(raycast.BOX, (100, 100, 100), (1, 1, 1))
    t, ids = raycast.cast(down, prims, prims.center, [], ground_z=-1.5, dtype=np.float64)
    assert ids[0, 0] == raycast.GROUND_HIT
    assert t[0, 0] == pytest.approx(3.0, rel=1e-12)


def test_rotated_box_hit_and_normal():
    yaw = np.radians(45)
    rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    prims = _one_primitive(raycast.BOX, (10, 0, 0), (1, 1, 1), rot)
    grid = _rays((0, 0, 0), [[1, 0, 0]])
    t, _ = raycast.cast(grid, prims, prims.center, [(0, 0, 1, 0, 1)], dtype=np.float64)
    # A cube turned 45 degrees shows its vertical edge at 10 - sqrt(2).
    assert t[0, 0] == pytest.approx(10 - np.sqrt(2), rel=1e-9)
    # Slightly to the left of the edge the ray meets the face facing (-1, 1, 0) / sqrt(2).
    off = _rays((0, 0, 0), [[1, 0.05, 0]])
    t, _ = raycast.cast(off, prims, prims.center, [(0, 0, 1, 0, 1)], dtype=np.float64)
    hits = raycast.surface_hits(prims, 0, prims.center[0], None, np.array([[1.0], [0.05], [0.0]]),
                                t[0])
    np.testing.assert_allclose(hits.normal[:, 0], [-np.sqrt(0.5), np.sqrt(0.5), 0], atol=1e-12)
    np.testing.assert_allclose(np.abs(hits.local[:, 0]).max(), 1.0, rtol=1e-12)


# --- determinism -------------------------------------------------------------------------------

def _stream(seed):
    d = SyntheticDrive(seed=seed, duration_s=0.2, camera_size=(96, 64), lidar_beams=16,
                       lidar_columns=256)
    return [(topic, stamp,
             f.pixels.tobytes() if topic.startswith("/camera") else f.points.tobytes())
            for topic, stamp, f in d]


def test_same_seed_gives_byte_identical_frames():
    first, again, other = _stream(11), _stream(11), _stream(12)
    assert [x[:2] for x in first] == [x[:2] for x in again]
    assert all(a[2] == b[2] for a, b in zip(first, again))
    assert len(first) == 2 + 2 + 2 + 3  # 2 camera (+2 semantic), 2 lidar, 3 radar in 0.2 s
    changed = {a[0] for a, b in zip(first, other) if a[2] != b[2]}
    assert {TOPIC_IMAGE, TOPIC_LIDAR, TOPIC_RADAR} <= changed


def test_textures_are_reproducible():
    from sensor_codec.synthetic.scene import _textures
    a, b = _textures.__wrapped__(4), _textures.__wrapped__(4)
    for name in ("asphalt", "brick", "car_side"):
        np.testing.assert_array_equal(a[name].flat, b[name].flat)


# --- lidar -------------------------------------------------------------------------------------

def test_lidar_rings_elevations_intensity_and_time(drive):
    scan = drive.lidar_scan(3)
    p = scan.frame.points
    assert p.dtype.names == ("x", "y", "z", "intensity", "ring", "time")
    assert p["ring"].dtype == np.uint16 and p["x"].dtype == np.float32
    np.testing.assert_array_equal(np.unique(p["ring"]), np.arange(64))
    r = np.sqrt(p["x"].astype(np.float64) ** 2 + p["y"] ** 2 + p["z"] ** 2)
    elevation = np.degrees(np.arcsin(p["z"] / r))
    np.testing.assert_allclose(elevation, hdl64_elevations()[p["ring"]], atol=2e-3)
    assert hdl64_elevations()[0] == pytest.approx(-24.33) and hdl64_elevations()[-1] == 2.0
    assert p["intensity"].min() >= 0.0 and p["intensity"].max() <= 1.0
    # Lane paint and signs are retro-reflective, asphalt is dark.
    road = scan.labels == Label.ROAD
    assert np.median(p["intensity"][road]) < 0.15
    assert np.percentile(p["intensity"][road], 99.5) > 0.5
    # Firing order: time never decreases and spans one revolution.
    assert np.all(np.diff(p["time"]) >= 0)
    assert p["time"][0] == 0.0 and p["time"][-1] == pytest.approx(0.1 * 1023 / 1024, rel=1e-6)
    assert 30_000 < scan.frame.num_points <= 64 * 1024


def test_lidar_ranges_match_analytic_surfaces(drive):
    scan = drive.lidar_scan(2)
    p = scan.frame.points
    xyz = scan.frame.xyz()
    rng_m = np.linalg.norm(xyz, axis=1)
    np.testing.assert_allclose(rng_m, scan.true_range, rtol=2e-6)
    # Road plane: a beam at elevation e < 0 hits it at height / sin(-e).
    ground = scan.prim_ids == raycast.GROUND_HIT
    assert ground.sum() > 5000
    height = drive.calibration()["T_lidar_to_base"][2][3]
    elevation = np.radians(hdl64_elevations())[p["ring"][ground]]
    np.testing.assert_allclose(rng_m[ground], height / np.sin(-elevation), rtol=1e-5)
    # A building facade (a box face at constant world y): points moved to world
    # coordinates with the ego pose at their own firing time lie on the plane.
    t0 = drive.times("lidar")[2]
    prims = drive.scene.prims
    world = xyz + drive.lidar_renderer.position(t0 + p["time"].astype(np.float64))
    checked = 0
    for k in np.unique(scan.prim_ids[scan.labels == Label.BUILDING]):
        sel = scan.prim_ids == k
        if sel.sum() < 50:
            continue
        face_y = prims.center[k, 1] - np.sign(prims.center[k, 1]) * prims.half[k, 1]
        on_face = np.abs(world[sel, 1] - face_y) < 0.05
        if on_face.mean() > 0.5:
            np.testing.assert_allclose(world[sel][on_face, 1], face_y, atol=2e-4)
            checked += 1
    assert checked >= 3


def test_organised_lidar_keeps_the_grid_with_nan():
    d = SyntheticDrive(seed=2, duration_s=0.1, camera_size=(64, 48), lidar_beams=32,
                       lidar_columns=512, organised_lidar=True, sensors=("lidar",))
    frame = d.lidar_scan(0).frame
    assert (frame.height, frame.width) == (32, 512)
    grid = frame.points.reshape(32, 512)
    np.testing.assert_array_equal(grid["ring"], np.repeat(np.arange(32), 512).reshape(32, 512))
    missing = np.isnan(grid["x"])
    assert 0 < missing.mean() < 0.6   # the upper beams see sky
    assert missing[-1].mean() > missing[0].mean()
    assert np.all(np.isnan(grid["intensity"]) == missing)
    np.testing.assert_allclose(np.diff(grid["time"][0]), 0.1 / 512, rtol=1e-4)
    elevations = d.calibration()["lidar"]["elevations_deg"]
    np.testing.assert_allclose(elevations, -30.67 + np.arange(32) * 4 / 3)


def test_lidar_spec_rejects_bad_configuration():
    from sensor_codec.errors import ConfigError
    with pytest.raises(ConfigError, match="elevations"):
        LidarSpec(beams=4, elevations_deg=(0.0, 1.0, 2.0))
    with pytest.raises(ConfigError, match="increasing"):
        LidarSpec(beams=3, elevations_deg=(1.0, 0.0, 2.0))
    with pytest.raises(ConfigError, match="rate"):
        LidarSpec(rate_hz=0)


# --- camera ------------------------------------------------------------------------------------

def test_semantic_map_has_street_classes_in_plausible_proportions(drive):
    fractions = np.zeros(11)
    for i in range(0, 10, 3):
        _, labels = drive.camera_frames(i)
        assert labels.encoding == "mono8" and labels.pixels.shape == CAMERA_SIZE[::-1]
        fractions += np.bincount(labels.pixels.ravel(), minlength=11)[:11] / labels.pixels.size / 4
    assert 0.2 < fractions[Label.ROAD] < 0.6
    assert 0.02 < fractions[Label.SKY] < 0.35
    assert 0.1 < fractions[Label.BUILDING] < 0.55
    assert 0.01 < fractions[Label.CAR] < 0.2
    assert 0.005 < fractions[Label.PAVEMENT] < 0.2
    assert fractions[Label.POLE] + fractions[Label.SIGN_SYMBOL] > 5e-4
    assert fractions[Label.TREE] > 0.005


def test_camera_image_has_texture_and_noise():
    d = SyntheticDrive(seed=5, duration_s=0.2, camera_size=(160, 96), sensors=("camera",))
    rgb = d.camera_frames(0)[0].pixels
    labels = d.render_camera(0).labels
    assert rgb.shape == (96, 160, 3) and rgb.dtype == np.uint8
    sky = rgb[labels == Label.SKY].astype(float)
    road = rgb[labels == Label.ROAD].astype(float)
    assert sky[:, 2].mean() > sky[:, 0].mean()          # blue sky
    assert 40 < road.mean() < 160                         # grey asphalt
    assert 1.0 < road[:, 1].std() < 40                    # textured, not flat


def test_lidar_points_land_on_camera_pixels_of_the_same_class(drive):
    calib = drive.calibration()
    K = np.array(calib["camera"]["K"])
    T = np.array(calib["T_lidar_to_camera"])
    image = drive.render_camera(4)
    t_cam = drive.times("camera")[4]
    t_lidar = drive.times("lidar")[4]
    assert t_cam - t_lidar == pytest.approx(0.05)   # camera fires mid-sweep
    scan = drive.lidar_scan(4)
    p = scan.frame.points
    # Undo the ego motion between each point's firing and the exposure.
    shift = (drive.lidar_renderer.position(t_lidar + p["time"].astype(np.float64))
             - drive.lidar_renderer.position(t_cam))
    xyz = scan.frame.xyz() + shift
    cam = xyz @ T[:3, :3].T + T[:3, 3]
    front = cam[:, 2] > 1.0
    uv = cam[front] @ K.T
    u = np.rint(uv[:, 0] / uv[:, 2]).astype(int)
    v = np.rint(uv[:, 1] / uv[:, 2]).astype(int)
    inside = (u >= 0) & (u < CAMERA_SIZE[0]) & (v >= 0) & (v < CAMERA_SIZE[1])
    u, v = u[inside], v[inside]
    z = cam[front][inside, 2]
    lidar_labels = scan.labels[front][inside]
    # Points the camera also sees (same depth, not hidden behind something).
    visible = np.abs(image.depth[v, u] - z) < 0.02 * z + 0.05
    assert visible.sum() > 2000 and visible.mean() > 0.8
    match = image.labels[v, u][visible] == lidar_labels[visible]
    assert match.mean() > 0.99
    seen = set(np.unique(lidar_labels[visible]))
    assert {Label.ROAD, Label.BUILDING, Label.CAR} <= seen


# --- radar -------------------------------------------------------------------------------------

def test_radar_doppler_signs_and_ego_compensation(drive):
    prims = drive.scene.prims
    approaching, receding, static_comp, static_vr, counts = [], [], [], [], []
    for i in range(len(drive.times("radar"))):
        scan = drive.radar_scan(i)
        p = scan.frame.points
        counts.append(len(p))
        assert p.dtype.names == ("x", "y", "z", "rcs", "v_r", "v_r_compensated", "time")
        on = scan.prim_ids >= 0
        vx = np.where(on, prims.velocity[np.maximum(scan.prim_ids, 0), 0], np.nan)
        approaching.append(p["v_r"][on & (vx < 0)])
        receding.append(p["v_r_compensated"][on & (vx > 9)])
        static = on & (vx == 0) & (scan.labels != Label.PEDESTRIAN)
        static_comp.append(p["v_r_compensated"][static])
        u = scan.frame.xyz()[static]
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        ego_v = drive.scene.ego.velocity(drive.times("radar")[i])
        static_vr.append(p["v_r"][static] + u @ ego_v)
    approaching = np.concatenate(approaching)
    assert len(approaching) > 20 and np.all(approaching < -5.0)   # oncoming cars: negative
    receding = np.concatenate(receding)
    assert len(receding) > 5 and np.median(receding) > 5.0        # faster lead cars: positive
    static_comp = np.concatenate(static_comp)
    assert len(static_comp) > 500
    assert np.abs(static_comp).max() < 0.3 and abs(static_comp.mean()) < 0.01
    # For static objects v_r is minus the ego speed along the line of sight
    # (the azimuth noise of the measured position blurs the projection a bit).
    assert np.abs(np.concatenate(static_vr)).mean() < 0.15
    assert 30 <= min(counts) and max(counts) <= 500


# --- timing and calibration ----------------------------------------------------------------------

def test_stream_is_time_ordered_at_the_configured_rates():
    d = SyntheticDrive(seed=1, duration_s=1.0, camera_size=(32, 24), lidar_beams=8,
                       lidar_columns=64, radar_hz=13.0)
    stamps: dict[str, list[int]] = {}
    previous = -1
    for topic, stamp, frame in d:
        assert stamp >= previous
        previous = stamp
        assert frame.stamp_ns == stamp
        assert frame.frame_id == topic.split("/")[1]
        stamps.setdefault(topic, []).append(stamp)
    assert {k: len(v) for k, v in stamps.items()} == {
        TOPIC_IMAGE: 10, TOPIC_SEMANTIC: 10, TOPIC_LIDAR: 10, TOPIC_RADAR: 13}
    assert stamps[TOPIC_IMAGE] == stamps[TOPIC_SEMANTIC]
    np.testing.assert_array_equal(np.diff(stamps[TOPIC_LIDAR]), 100_000_000)
    assert np.abs(np.diff(stamps[TOPIC_RADAR]) - 1e9 / 13).max() <= 1
    assert stamps[TOPIC_IMAGE][0] - stamps[TOPIC_LIDAR][0] == 50_000_000
    assert len(d) == 43


def test_calibration_transforms_are_consistent(drive):
    calib = drive.calibration()
    T_lc = np.array(calib["T_lidar_to_camera"])
    T_rc = np.array(calib["T_radar_to_camera"])
    T_cb = np.array(calib["T_camera_to_base"])
    for T in (T_lc, T_rc, T_cb):
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
        np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
    # The lidar's forward axis is the camera's optical axis, pitched 2 degrees up.
    forward = T_lc[:3, :3] @ [1, 0, 0]
    assert forward[2] == pytest.approx(np.cos(np.radians(2)))
    assert forward[1] == pytest.approx(-np.sin(np.radians(2)))
    # A point 1 m to the lidar's left is left of the camera (negative x).
    assert (T_lc @ [0, 1, 0, 1])[0] < (T_lc @ [0, 0, 0, 1])[0]
    K = np.array(calib["camera"]["K"])
    assert K[0, 2] == (CAMERA_SIZE[0] - 1) / 2 and K[0, 0] == K[1, 1]


def test_scene_is_built_around_the_ego_route():
    scene = Scene(seed=9, duration_s=30.0)
    assert scene.ego.position(0.0)[1] == EGO_LANE_Y
    assert scene.x_max > scene.ego.position(30.0)[0] + 300
    prims = scene.prims
    ego_lane = np.abs(prims.center[:, 1] - EGO_LANE_Y) < 1.0
    moving_cars = ego_lane & (prims.label == Label.CAR)
    # Cars in the ego lane drive away from the ego (ahead) or follow it (behind).
    assert np.all(prims.velocity[moving_cars, 0] > 0)
    assert np.all(prims.label[prims.kind == raycast.ELLIPSOID] != Label.CAR)
    for label in (Label.BUILDING, Label.POLE, Label.SIGN_SYMBOL, Label.TREE, Label.FENCE,
                  Label.CAR, Label.PEDESTRIAN, Label.BICYCLIST, Label.PAVEMENT):
        assert np.any(prims.label == label), label.name


# --- the synth command ---------------------------------------------------------------------------

def test_synth_command_writes_bag_and_calibration(tmp_path, capsys):
    from sensor_codec.bag.io import read_messages, deserialize
    from sensor_codec.cli import main
    from sensor_codec.messages import image_to_frame, pointcloud2_to_frame

    bag = tmp_path / "drive"
    argv = ["synth", "-o", str(bag), "--duration", "0.25", "--seed", "3", "--camera-size", "64x48",
            "--lidar-beams", "16", "--lidar-columns", "128", "--storage", "mcap"]
    assert main(argv) == 0
    assert "/lidar/points: 3 messages" in capsys.readouterr().out
    calib = yaml.safe_load((tmp_path / "drive.calibration.yaml").read_text())
    assert calib["camera"]["width"] == 64 and calib["lidar"]["beams"] == 16
    expected = SyntheticDrive(seed=3, duration_s=0.25, camera_size=(64, 48), lidar_beams=16,
                              lidar_columns=128)
    np.testing.assert_allclose(calib["T_lidar_to_camera"],
                               expected.calibration()["T_lidar_to_camera"])
    written = list(read_messages(bag))
    reference = list(expected)
    assert [(m.topic, m.timestamp_ns) for m in written] == [(t, s) for t, s, _ in reference]
    for m, (_, _, frame) in zip(written, reference):
        msg = deserialize(m.data, m.msgtype)
        if m.msgtype == "sensor_msgs/msg/Image":
            got = image_to_frame(msg)
            assert got.encoding == frame.encoding
            np.testing.assert_array_equal(got.pixels, frame.pixels)
        else:
            modality = Modality.RADAR if m.topic == TOPIC_RADAR else Modality.LIDAR
            got = pointcloud2_to_frame(msg, modality)
            assert got.points.tobytes() == frame.points.tobytes()
            assert got.frame_id == frame.frame_id
    # Refuses to overwrite, and bad sizes are a usage error (exit status 2).
    assert main(argv) == 2
    assert main(["synth", "-o", str(tmp_path / "x"), "--camera-size", "big"]) == 2
