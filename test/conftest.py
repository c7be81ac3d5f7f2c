"""Shared fixtures: the real-data folder (skipped when absent) and seeded
synthetic frames that look like sensor data rather than noise."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sensor_codec.frames import CameraFrame, Modality, PointCloudFrame

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# ROS tests run on a block of ROS_DOMAIN_BLOCK consecutive domain ids inside
# 1..101 (higher ids put a domain's ports in Linux's ephemeral range), picked
# by the pytest process id so that two runs on one machine (CI beside a
# developer) rarely meet. Offsets: see ros_domain_id's callers.
ROS_DOMAIN_BLOCK = 5
MAX_SAFE_DOMAIN_ID = 101


def ros_domain_id(offset: int) -> int:
    """This test run's domain id number ``offset`` (0 .. ROS_DOMAIN_BLOCK - 1)."""
    if not 0 <= offset < ROS_DOMAIN_BLOCK:
        raise ValueError(f"domain offset {offset} outside 0..{ROS_DOMAIN_BLOCK - 1}")
    blocks = MAX_SAFE_DOMAIN_ID // ROS_DOMAIN_BLOCK
    return 1 + (os.getpid() % blocks) * ROS_DOMAIN_BLOCK + offset


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that use it skip on machines without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sensor data not present at {SHARED_DATA}")
    return SHARED_DATA


def synthetic_rgb(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with a few flat shapes and mild noise: what
    image codecs are built for, so quality windows are meaningful."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([255 * xx / max(width - 1, 1), 255 * yy / max(height - 1, 1),
                    128 + 80 * np.sin(xx / 7.0) * np.cos(yy / 9.0)], axis=2)
    for _ in range(4):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(4, max(height, width) / 4)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def camera_frame(encoding: str = "rgb8", height: int = 48, width: int = 64,
                 seed: int = 0) -> CameraFrame:
    """A synthetic frame in any supported encoding (alpha is a gradient)."""
    rgb = synthetic_rgb(height, width, seed)
    alpha = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    alpha = alpha.astype(np.uint8)[:, :, None]
    pixels = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
        "mono8": rgb[:, :, 1],
        "mono16": rgb[:, :, 1].astype(np.uint16) * 257 + rgb[:, :, 0] // 16,
    }[encoding]
    return CameraFrame(np.ascontiguousarray(pixels), encoding, stamp_ns=1_700_000_000_123_456_789,
                       frame_id="camera_front")


def lidar_frame(rings: int = 16, columns: int = 64, seed: int = 0, nan_fraction: float = 0.0,
                organised: bool = True) -> PointCloudFrame:
    """A spinning-lidar scan of a room-sized scene in ring-major scan order,
    with float32 intensity and uint16 ring fields."""
    rng = np.random.default_rng(seed)
    azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False)[None, :].repeat(rings, 0)
    elevation = np.linspace(-0.4, 0.1, rings)[:, None].repeat(columns, 1)
    distance = 8 + 4 * np.cos(2 * azimuth) + rng.normal(0, 0.02, azimuth.shape)
    # Low rings hit the ground 1.7 m below the sensor.
    ground = 1.7 / np.maximum(-np.sin(elevation), 1e-3)
    distance = np.where(elevation < -0.2, np.minimum(distance, ground), distance)
    x = distance * np.cos(elevation) * np.cos(azimuth)
    y = distance * np.cos(elevation) * np.sin(azimuth)
    z = distance * np.sin(elevation)
    if nan_fraction:
        missing = rng.random(x.shape) < nan_fraction
        x, y, z = (np.where(missing, np.nan, a) for a in (x, y, z))
    intensity = np.round(rng.uniform(0, 1, x.shape), 2)
    ring = np.arange(rings, dtype=np.uint16)[:, None].repeat(columns, 1)
    return PointCloudFrame.from_arrays(
        Modality.LIDAR, height=rings if organised else 1, stamp_ns=1_700_000_000_500_000_000,
        frame_id="lidar_top", x=x.astype(np.float32), y=y.astype(np.float32),
        z=z.astype(np.float32), intensity=intensity.astype(np.float32), ring=ring)


def radar_frame(n: int = 60, seed: int = 0) -> PointCloudFrame:
    """Radar detections as View-of-Delft stores them, plus an integer id."""
    rng = np.random.default_rng(seed)
    rng_m = rng.uniform(2, 60, n)
    az = rng.uniform(-0.6, 0.6, n)
    return PointCloudFrame.from_arrays(
        Modality.RADAR, stamp_ns=1_700_000_000_250_000_000, frame_id="radar_front",
        x=(rng_m * np.cos(az)).astype(np.float32), y=(rng_m * np.sin(az)).astype(np.float32),
        z=rng.uniform(-1, 2, n).astype(np.float32), rcs=rng.uniform(-40, 20, n).astype(np.float32),
        v_r=rng.normal(0, 5, n).astype(np.float32),
        v_r_compensated=rng.normal(0, 1, n).astype(np.float32),
        track_id=rng.integers(0, 2**31, n).astype(np.uint32))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


# The factories, as fixtures (tests take them by name instead of importing conftest).

@pytest.fixture(scope="session")
def make_camera():
    return camera_frame


@pytest.fixture(scope="session")
def make_lidar():
    return lidar_frame


@pytest.fixture(scope="session")
def make_radar():
    return radar_frame


@pytest.fixture(scope="session")
def make_frame():
    """modality -> a default synthetic frame of it."""
    factories = {Modality.CAMERA: camera_frame, Modality.LIDAR: lidar_frame,
                 Modality.RADAR: radar_frame}
    return lambda modality: factories[Modality.parse(modality)]()


@pytest.fixture(scope="session")
def image_psnr():
    return psnr
