"""The built-in synthetic drive: camera, lidar and radar along one ego route.

Works on a fresh machine (no data files): the street is procedural
(:mod:`.scene`), every sensor ray-casts the same scene at its own time
stamps, so the modalities agree with each other and with the published
calibration.

Timing: lidar sweep ``k`` starts at ``k / lidar_hz``; the camera is
triggered when the lidar's sweep crosses the camera's field of view (as on
nuScenes), i.e. half a lidar period after each sweep start when the rates
match (``camera_sync=True``); radar cycle ``k`` is at ``k / radar_hz``.
Stamps are ``start_ns`` plus those offsets. Noise is seeded by
``(seed, sensor, index)``: the same arguments give byte-identical frames.

Frames (see :func:`SyntheticDrive.__iter__`): ``/camera/image_raw`` (rgb8),
``/camera/semantic`` (mono8 CamVid ids of the same exposure),
``/lidar/points`` and ``/radar/points`` (field layouts in :mod:`.lidar` and
:mod:`.radar`), frame ids ``camera``, ``lidar``, ``radar``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import ConfigError
from ..frames import CameraFrame, PointCloudFrame
from .camera import CameraImage, CameraRenderer, PinholeCamera, optical_to_body
from .lidar import LidarRenderer, LidarScan, LidarSpec
from .radar import RadarRenderer, RadarScan, RadarSpec
from .scene import Label, Scene

TOPIC_IMAGE = "/camera/image_raw"
TOPIC_SEMANTIC = "/camera/semantic"
TOPIC_LIDAR = "/lidar/points"
TOPIC_RADAR = "/radar/points"
TOPICS = (TOPIC_IMAGE, TOPIC_SEMANTIC, TOPIC_LIDAR, TOPIC_RADAR)
FRAME_IDS = {"camera": "camera", "lidar": "lidar", "radar": "radar"}
SENSORS = ("camera", "lidar", "radar")

# A fixed epoch (2023-11-14T22:13:20Z) so stamps do not depend on the clock.
DEFAULT_START_NS = 1_700_000_000_000_000_000

# Sensor mounts relative to the ego reference point (middle of the rear axle
# on the ground), metres in the ego frame (x forward, y left, z up).
CAMERA_OFFSET = (1.6, 0.0, 1.5)
CAMERA_PITCH_DOWN_DEG = 2.0
LIDAR_OFFSET = (1.0, 0.0, 1.9)
RADAR_OFFSET = (3.7, 0.0, 0.6)

_SENSOR_CODES = {"camera": 1, "lidar": 2, "radar": 3}


def _transform(rotation: np.ndarray, translation) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = rotation
    t[:3, 3] = translation
    return t


@dataclass(frozen=True)
class _Event:
    stamp_ns: int
    order: int
    sensor: str
    index: int
    t: float


class SyntheticDrive:
    """A seeded drive of ``duration_s`` seconds; iterate it for
    ``(topic, stamp_ns, frame)`` in time order."""

    def __init__(self, seed: int = 0, duration_s: float = 10.0, camera_size=(1920, 1080),
                 camera_hz: float = 10.0, lidar_hz: float = 10.0, radar_hz: float = 13.0,
                 lidar_beams: int = 64, lidar_columns: int = 2048, *,
                 camera_fov_deg: float = 70.0, organised_lidar: bool = False,
                 semantic: bool = True, noise: bool = True, camera_sync: bool = True,
                 sensors=SENSORS, start_ns: int = DEFAULT_START_NS):
        rates = {"camera_hz": camera_hz, "lidar_hz": lidar_hz, "radar_hz": radar_hz}
        for name, rate in rates.items():
            if not (isinstance(rate, (int, float)) and np.isfinite(rate) and rate > 0):
                raise ConfigError(f"{name} must be a positive rate in Hz, got {rate!r}")
        try:
            width, height = (int(v) for v in camera_size)
        except (TypeError, ValueError):
            raise ConfigError(f"camera_size must be (width, height), got {camera_size!r}") from None
        unknown = set(sensors) - set(SENSORS)
        if unknown:
            raise ConfigError(f"unknown sensor(s) {sorted(unknown)}; choose from {list(SENSORS)}")
        if int(start_ns) < 0:
            raise ConfigError(f"start_ns must be non-negative, got {start_ns}")
        self.seed = int(seed)
        self.duration_s = float(duration_s)
        self.camera_hz = float(camera_hz)
        self.lidar_hz = float(lidar_hz)
        self.radar_hz = float(radar_hz)
        self.semantic = semantic
        self.noise = noise
        self.organised_lidar = organised_lidar
        self.camera_sync = camera_sync
        self.sensors = tuple(s for s in SENSORS if s in sensors)
        self.start_ns = int(start_ns)
        self.scene = Scene(self.seed, self.duration_s)
        self.camera = PinholeCamera.from_fov(width, height, camera_fov_deg)
        self.camera_rotation = optical_to_body(np.radians(CAMERA_PITCH_DOWN_DEG))
        self.camera_renderer = CameraRenderer(self.scene, self.camera, self.camera_rotation,
                                              np.array(CAMERA_OFFSET), noise=noise)
        self.lidar_spec = LidarSpec(beams=int(lidar_beams), columns=int(lidar_columns),
                                    rate_hz=self.lidar_hz)
        self.lidar_renderer = LidarRenderer(self.scene, self.lidar_spec, np.array(LIDAR_OFFSET))
        self.radar_spec = RadarSpec(rate_hz=self.radar_hz)
        self.radar_renderer = RadarRenderer(self.scene, self.radar_spec, np.array(RADAR_OFFSET))

    # -- timing ------------------------------------------------------------

    @property
    def camera_phase_s(self) -> float:
        """Camera trigger delay after each lidar sweep start (0 unsynchronised)."""
        return 0.5 / self.lidar_hz if self.camera_sync else 0.0

    def times(self, sensor: str) -> np.ndarray:
        """Times (seconds since the start) of a sensor's frames within the drive."""
        rate = {"camera": self.camera_hz, "lidar": self.lidar_hz, "radar": self.radar_hz}[sensor]
        phase = self.camera_phase_s if sensor == "camera" else 0.0
        count = int(np.floor((self.duration_s - phase) * rate - 1e-9)) + 1
        t = phase + np.arange(max(count, 0)) / rate
        return t[t < self.duration_s]

    def stamp_ns(self, t: float) -> int:
        return self.start_ns + int(round(t * 1e9))

    def _events(self) -> list[_Event]:
        events = []
        for order, sensor in enumerate(self.sensors):
            for i, t in enumerate(self.times(sensor)):
                events.append(_Event(self.stamp_ns(t), order, sensor, i, float(t)))
        events.sort(key=lambda e: (e.stamp_ns, e.order, e.index))
        return events

    def __len__(self) -> int:
        per_camera = 2 if self.semantic else 1
        return sum(len(self.times(s)) * (per_camera if s == "camera" else 1) for s in self.sensors)

    # -- frames ------------------------------------------------------------

    def noise_seed(self, sensor: str, index: int) -> tuple[int, int, int]:
        return (self.seed, _SENSOR_CODES[sensor], int(index))

    def render_camera(self, index: int) -> CameraImage:
        t = float(self.times("camera")[index])
        return self.camera_renderer.render(t, self.noise_seed("camera", index))

    def camera_frames(self, index: int) -> tuple[CameraFrame, CameraFrame]:
        """(rgb8 image, mono8 semantic map) of camera frame ``index``."""
        t = float(self.times("camera")[index])
        image = self.render_camera(index)
        stamp = self.stamp_ns(t)
        return (CameraFrame(image.rgb, "rgb8", stamp, FRAME_IDS["camera"]),
                CameraFrame(image.labels, "mono8", stamp, FRAME_IDS["camera"]))

    def lidar_scan(self, index: int) -> LidarScan:
        t = float(self.times("lidar")[index])
        return self.lidar_renderer.scan(t, noise_seed=self.noise_seed("lidar", index),
                                        noise=self.noise, organised=self.organised_lidar,
                                        stamp_ns=self.stamp_ns(t), frame_id=FRAME_IDS["lidar"])

    def radar_scan(self, index: int) -> RadarScan:
        t = float(self.times("radar")[index])
        return self.radar_renderer.scan(t, noise_seed=self.noise_seed("radar", index),
                                        stamp_ns=self.stamp_ns(t), frame_id=FRAME_IDS["radar"])

    def __iter__(self) -> Iterator[tuple[str, int, CameraFrame | PointCloudFrame]]:
        """``(topic, stamp_ns, frame)`` in stamp order (ties: camera, lidar,
        radar; a semantic map right after its image)."""
        for event in self._events():
            if event.sensor == "camera":
                rgb, labels = self.camera_frames(event.index)
                yield TOPIC_IMAGE, event.stamp_ns, rgb
                if self.semantic:
                    yield TOPIC_SEMANTIC, event.stamp_ns, labels
            elif event.sensor == "lidar":
                yield TOPIC_LIDAR, event.stamp_ns, self.lidar_scan(event.index).frame
            else:
                yield TOPIC_RADAR, event.stamp_ns, self.radar_scan(event.index).frame

    def frames(self, steps: int | None = None
               ) -> Iterator[dict[str, CameraFrame | PointCloudFrame]]:
        """Per step (one camera frame), the camera image and the latest lidar
        sweep and radar cycle at or before it: ``{"camera", "lidar", "radar"}``.
        For tools that want matched samples rather than a message stream."""
        cam_t = self.times("camera")
        n = len(cam_t) if steps is None else min(int(steps), len(cam_t))
        for i in range(n):
            sample = {}
            if "camera" in self.sensors:
                sample["camera"] = self.camera_frames(i)[0]
            for sensor, scan in (("lidar", self.lidar_scan), ("radar", self.radar_scan)):
                if sensor in self.sensors:
                    times = self.times(sensor)
                    j = int(np.searchsorted(times, cam_t[i], side="right")) - 1
                    if j >= 0:
                        sample[sensor] = scan(j).frame
            yield sample

    # -- calibration -------------------------------------------------------

    def calibration(self) -> dict:
        """Intrinsics, extrinsics and sensor models, plain Python types (YAML-ready).

        ``T_a_to_b`` maps homogeneous points from frame a to frame b:
        ``p_b = T_a_to_b @ [p_a, 1]`` (KITTI's ``Tr_velo_to_cam`` convention).
        ``T_<sensor>_to_base`` is the sensor's pose on the ego (ego frame:
        x forward, y left, z up, origin on the ground).
        """
        cam_to_base = _transform(self.camera_rotation, CAMERA_OFFSET)
        lidar_to_base = _transform(np.eye(3), LIDAR_OFFSET)
        radar_to_base = _transform(np.eye(3), RADAR_OFFSET)
        base_to_cam = np.linalg.inv(cam_to_base)
        c = self.camera
        return {
            "frame_ids": dict(FRAME_IDS),
            "topics": {"image": TOPIC_IMAGE, "semantic": TOPIC_SEMANTIC,
                       "lidar": TOPIC_LIDAR, "radar": TOPIC_RADAR},
            "camera": {
                "width": c.width, "height": c.height, "rate_hz": self.camera_hz,
                "K": c.K.tolist(), "distortion_model": "plumb_bob", "D": [0.0] * 5,
                "optical_frame": "x right, y down, z forward",
                "pixel_centres": "integer coordinates: u = fx x / z + cx",
                "trigger_delay_after_lidar_sweep_s": self.camera_phase_s,
            },
            "lidar": {
                "beams": self.lidar_spec.beams, "columns": self.lidar_spec.columns,
                "rate_hz": self.lidar_hz,
                "elevations_deg": [float(e) for e in self.lidar_spec.elevations()],
                "ring_order": "ring 0 is the lowest beam",
                "rotation": "clockwise from above, sweep starts and ends behind (azimuth pi)",
                "max_range_m": self.lidar_spec.max_range_m,
                "intensity_range": [0.0, 1.0],
                "points": "in the lidar frame at each point's firing time (not de-skewed)",
            },
            "radar": {
                "rate_hz": self.radar_hz, "azimuth_fov_deg": self.radar_spec.azimuth_fov_deg,
                "elevation_fov_deg": self.radar_spec.elevation_fov_deg,
                "max_range_m": self.radar_spec.max_range_m,
                "v_r": "range rate relative to the moving sensor, negative when approaching",
                "v_r_compensated": "v_r with ego motion removed (0 for static objects)",
                "rcs_unit": "dBsm",
            },
            "T_camera_to_base": cam_to_base.tolist(),
            "T_lidar_to_base": lidar_to_base.tolist(),
            "T_radar_to_base": radar_to_base.tolist(),
            "T_lidar_to_camera": (base_to_cam @ lidar_to_base).tolist(),
            "T_radar_to_camera": (base_to_cam @ radar_to_base).tolist(),
            "semantic_classes": {int(label): label.name.lower() for label in Label},
            "seed": self.seed, "duration_s": self.duration_s, "start_ns": self.start_ns,
        }
