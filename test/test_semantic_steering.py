"""Labelling lidar points with the camera's semantic map (issue 4 item 2)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml

from sensor_codec.errors import ConfigError, InvalidFrameError
from sensor_codec.frames import Modality, PointCloudFrame
from sensor_codec.semantic_steering import (CLASS_FIELD, OUTSIDE_VIEW, CameraLidarCalibration,
                                            SemanticMapCache, label_cloud, load_calibration,
                                            parse_calibration)

# Lidar x forward, y left, z up -> camera x right, y down, z forward.
LIDAR_TO_CAMERA = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0],
                            [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
# A 6x4 image, focal length 10 px, principal point at the centre (2.5, 1.5).
K = np.array([[10.0, 0.0, 2.5], [0.0, 10.0, 1.5], [0.0, 0.0, 1.0]])
LABELS = np.arange(24, dtype=np.uint8).reshape(4, 6)  # class = 6 * row + column


def cloud(xyz) -> PointCloudFrame:
    xyz = np.asarray(xyz, np.float32)
    return PointCloudFrame.from_arrays(Modality.LIDAR, x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2],
                                       intensity=np.arange(len(xyz), dtype=np.float32),
                                       stamp_ns=5, frame_id="lidar")


def test_points_take_the_class_of_the_pixel_they_project_to():
    calibration = CameraLidarCalibration(K, LIDAR_TO_CAMERA, 6, 4)
    points = cloud([
        [10.0, 0.0, 0.0],     # optical axis: u = 2.5, v = 1.5 -> column 3, row 2 -> 15
        [10.0, 2.4, 1.4],     # u = 0.1, v = 0.1 -> pixel (0, 0) -> 0
        [10.0, -2.4, -1.4],   # u = 4.9, v = 2.9 -> column 5, row 3 -> 23
        [10.0, 2.6, 0.0],     # u = -0.1: nearest centre is still column 0 -> 12
        [10.0, 3.1, 0.0],     # u = -0.6: left of the image
        [-10.0, 0.0, 0.0],    # behind the camera
        [np.nan, 0.0, 0.0],   # not finite
        [10.0, 0.0, -2.1],    # v = 3.6: below the image
    ])
    labelled = label_cloud(points, LABELS, calibration)
    np.testing.assert_array_equal(labelled.points[CLASS_FIELD],
                                  [15, 0, 23, 12] + [OUTSIDE_VIEW] * 4)
    # Every other field is kept, the class field is appended as uint8.
    assert labelled.points.dtype.names == ("x", "y", "z", "intensity", CLASS_FIELD)
    assert labelled.points.dtype[CLASS_FIELD] == np.uint8
    np.testing.assert_array_equal(labelled.points["intensity"], np.arange(8))
    assert (labelled.stamp_ns, labelled.frame_id) == (5, "lidar")


def test_a_map_of_another_size_uses_scaled_intrinsics():
    # The calibration is for 12x8; the map is 6x4, half the size.
    k12 = np.array([[20.0, 0.0, 5.5], [0.0, 20.0, 3.5], [0.0, 0.0, 1.0]])  # same camera
    calibration = CameraLidarCalibration(k12, LIDAR_TO_CAMERA, 12, 8)
    points = cloud([[10.0, 0.0, 0.0], [10.0, 2.4, 1.4], [10.0, -2.4, -1.4]])
    labelled = label_cloud(points, LABELS, calibration)
    np.testing.assert_array_equal(labelled.points[CLASS_FIELD], [15, 0, 23])
    np.testing.assert_allclose(calibration.intrinsics_for(6, 4), [[10, 0, 3], [0, 10, 2],
                                                                  [0, 0, 1]])


def test_no_map_means_every_point_gets_the_default_class():
    labelled = label_cloud(cloud([[10.0, 0.0, 0.0], [5.0, 1.0, 1.0]]), None,
                           CameraLidarCalibration(K, LIDAR_TO_CAMERA, 6, 4))
    np.testing.assert_array_equal(labelled.points[CLASS_FIELD], [OUTSIDE_VIEW] * 2)
    with pytest.raises(InvalidFrameError, match="2-D label image"):
        label_cloud(cloud([[1.0, 0.0, 0.0]]), np.zeros((2, 2, 3), np.uint8),
                    CameraLidarCalibration(K, LIDAR_TO_CAMERA, 6, 4))


def test_shipped_calibration_matches_the_synthetic_drive():
    from sensor_codec.synthetic.drive import SyntheticDrive

    calibration = load_calibration()
    drive = SyntheticDrive(seed=3, duration_s=0.3, camera_size=(640, 360), lidar_beams=32,
                           lidar_columns=1024)
    expected = drive.calibration()
    np.testing.assert_allclose(calibration.lidar_to_camera, expected["T_lidar_to_camera"],
                               atol=1e-9)
    image, scan = drive.render_camera(0), drive.lidar_scan(0)
    classes = label_cloud(scan.frame, image.labels, calibration).points[CLASS_FIELD]
    in_view = classes != OUTSIDE_VIEW
    # The camera sees the 70-degree cone ahead: about an eighth of the sweep.
    assert 0.10 < in_view.mean() < 0.18
    # Labels from the camera agree with the lidar's own ground truth where the
    # point is seen (disagreement: object edges at 640x360, and the camera
    # fires 50 ms into the sweep).
    agreement = (classes[in_view] == scan.labels[in_view]).mean()
    assert agreement > 0.9, agreement


def test_synth_calibration_file_and_kitti_file_are_read(tmp_path):
    from sensor_codec.synthetic.drive import SyntheticDrive

    synth = tmp_path / "drive.calibration.yaml"
    synth.write_text(yaml.safe_dump(SyntheticDrive(duration_s=0.1,
                                                   camera_size=(640, 360)).calibration()))
    calibration = load_calibration(synth)
    assert (calibration.width, calibration.height) == (640, 360)
    shipped = load_calibration()
    # Same rig at a third of the size: the shipped K scaled equals the drive's own.
    np.testing.assert_allclose(shipped.intrinsics_for(640, 360),
                               calibration.intrinsics_for(640, 360), rtol=1e-9)
    np.testing.assert_allclose(calibration.intrinsics_for(640, 360)[0, 2], 320.0)

    kitti = tmp_path / "calib.txt"
    kitti.write_text("P2: 700 0 600 45 0 700 180 0.2 0 0 1 0.003\n"
                     "R0_rect: 1 0 0 0 1 0 0 0 1\n"
                     "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 -0.08 1 0 0 -0.27\n")
    calibration = load_calibration(kitti)
    assert calibration.K.shape == (3, 4) and calibration.width is None
    # Lidar (20.27, 0, -0.08) is camera (0, 0, 20); P2 puts it at
    # u = (600 * 20 + 45) / 20.003 = 602.16, v = (180 * 20 + 0.2) / 20.003 = 179.98.
    labels = np.zeros((400, 1300), np.uint8)
    labels[180, 602] = 7
    labels[179, 602] = labels[180, 603] = 9
    got = label_cloud(cloud([[20.27, 0.0, -0.08]]), labels, calibration).points[CLASS_FIELD]
    assert got[0] == 7


@pytest.mark.parametrize("document, message", [
    ({}, "needs 'camera: {width, height, K}'"),
    ({"camera": {"width": 4, "height": 3}, "T_lidar_to_camera": np.eye(4).tolist()},
     "camera has no 'K'"),
    ({"camera": {"K": [[1, 0], [0, 1]]}, "T_lidar_to_camera": np.eye(4).tolist()},
     "camera.K must be a finite 3x3 or 3x4 matrix, got shape \\(2, 2\\)"),
    ({"camera": {"K": K.tolist()}, "T_lidar_to_camera": (2 * np.eye(4)).tolist()},
     "not a rotation"),
    ({"camera": {"K": K.tolist(), "width": 6}, "T_lidar_to_camera": np.eye(4).tolist()},
     "both camera.width and camera.height"),
    ({"camera": {"K": K.tolist(), "width": 6, "height": -4},
      "T_lidar_to_camera": np.eye(4).tolist()}, "positive integers"),
])
def test_malformed_calibration_raises_config_error(document, message):
    with pytest.raises(ConfigError, match=message):
        parse_calibration(document, "test.yaml")


def test_missing_calibration_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read calibration file .*nope.yaml"):
        load_calibration(tmp_path / "nope.yaml")


def test_map_cache_keeps_the_newest_map_and_honours_the_max_age():
    cache = SemanticMapCache(max_age_s=0.2)
    assert cache.get(1_000_000_000) is None  # nothing yet
    first, second = np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)
    cache.put(second, 1_100_000_000)
    cache.put(first, 1_000_000_000)  # older: a late worker does not overwrite
    assert cache.get(1_250_000_000) is second
    assert cache.get(1_000_000_000) is second  # the map may be ahead of the cloud
    assert cache.get(1_300_000_001) is None    # 0.200000001 s old: too old
    assert (cache.hits, cache.misses) == (2, 2)
    with pytest.raises(ConfigError, match="max age must be >= 0 s"):
        SemanticMapCache(-1.0)


def test_map_cache_waits_for_the_map_of_the_cloud_time():
    cache = SemanticMapCache(max_age_s=0.15)
    cache.put(np.zeros((2, 2), np.uint8), 1_000_000_000)
    # A cloud at 1.5 s: the camera has not got there yet, so the lidar worker waits.
    result = {}
    waiter = threading.Thread(target=lambda: result.update(map=cache.get(1_500_000_000, 30.0)))
    waiter.start()
    with cache._cond:
        assert cache._cond.wait_for(lambda: cache.waits == 1, timeout=30.0)
    later = np.ones((2, 2), np.uint8)
    cache.put(later, 1_550_000_000)  # the camera frame 50 ms after the sweep
    waiter.join(30.0)
    assert result["map"] is later and (cache.hits, cache.misses, cache.waits) == (1, 0, 1)

    # The camera is already past the cloud's time: no waiting, no map.
    started = time.monotonic()
    assert cache.get(1_000_000_000, 30.0) is None
    assert time.monotonic() - started < 10.0
    # Nothing comes within the wait: None after it.
    started = time.monotonic()
    assert cache.get(2_000_000_000, 0.05) is None
    assert time.monotonic() - started >= 0.05
    assert (cache.hits, cache.misses, cache.waits) == (1, 2, 2)
    # Closing releases a waiter at once.
    waiter = threading.Thread(target=lambda: result.update(closed=cache.get(3_000_000_000, 60.0)))
    waiter.start()
    with cache._cond:
        assert cache._cond.wait_for(lambda: cache.waits == 3, timeout=30.0)
    cache.close()
    waiter.join(30.0)
    assert not waiter.is_alive() and result["closed"] is None
