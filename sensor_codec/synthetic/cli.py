"""``sensor-codec synth``: write the built-in synthetic drive as a rosbag.

Besides the bag, writes the calibration (intrinsics, extrinsics, sensor
models) as ``<BAG>.calibration.yaml`` next to it; the same calibration is
stored, as JSON, in the bag's custom data under ``sensor_codec.calibration``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import yaml

from ..errors import ConfigError

log = logging.getLogger(__name__)

CALIBRATION_KEY = "sensor_codec.calibration"


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"camera size must be WIDTHxHEIGHT like 1920x1080, got {text!r}") from None
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise ConfigError(f"camera size {width}x{height} is outside 16..8192 pixels per side")
    return width, height


def calibration_path(bag: str | Path) -> Path:
    bag = Path(bag)
    return bag.with_name(bag.name + ".calibration.yaml")


def write_drive_bag(bag: str | Path, *, duration_s: float = 10.0, seed: int = 0,
                    camera_size: tuple[int, int] = (1920, 1080), lidar_beams: int = 64,
                    storage: str = "sqlite3", overwrite: bool = False,
                    **drive_options) -> dict:
    """Render the drive into a new bag; returns ``{"counts": {topic: n},
    "calibration": path, "seconds": wall time}``. Extra keyword arguments go to
    :class:`~sensor_codec.synthetic.drive.SyntheticDrive`."""
    from ..bag.io import STORAGES, BagWriter
    from ..messages import frame_to_image, frame_to_pointcloud2, rosbags_types
    from .drive import SyntheticDrive

    if storage not in STORAGES:
        raise ConfigError(f"unknown bag storage {storage!r}; choose from {sorted(STORAGES)}")
    if not (duration_s > 0):
        raise ConfigError(f"duration must be positive seconds, got {duration_s!r}")
    drive = SyntheticDrive(seed=seed, duration_s=duration_s, camera_size=camera_size,
                           lidar_beams=lidar_beams, **drive_options)
    calibration = drive.calibration()
    types = rosbags_types()
    started = time.monotonic()
    total = len(drive)
    with BagWriter(bag, storage, overwrite=overwrite,
                   custom_data={CALIBRATION_KEY: json.dumps(calibration)}) as writer:
        for done, (topic, stamp_ns, frame) in enumerate(drive, start=1):
            if frame.modality.label == "camera":
                msg = frame_to_image(frame, types)
            else:
                msg = frame_to_pointcloud2(frame, types)
            writer.write(topic, stamp_ns, msg)
            if done % 50 == 0 or done == total:
                log.info("synth: %d/%d messages (%.0f s)", done, total, time.monotonic() - started)
        counts = dict(writer.counts)
    calib_file = calibration_path(bag)
    calib_file.write_text(yaml.safe_dump(calibration, sort_keys=False))
    return {"counts": counts, "calibration": calib_file, "seconds": time.monotonic() - started}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="BAG",
                        help="output bag directory (must not exist unless --overwrite)")
    parser.add_argument("--duration", type=float, default=10.0, metavar="S",
                        help="seconds of drive (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="scene and noise seed (default %(default)s)")
    parser.add_argument("--camera-size", default="1920x1080", metavar="WxH",
                        help="camera resolution (default %(default)s)")
    parser.add_argument("--lidar-beams", type=int, default=64, metavar="N",
                        help="lidar beams: 64 (HDL-64E), 32 (HDL-32E), 16 (VLP-16) or any "
                             "count (default %(default)s)")
    parser.add_argument("--lidar-columns", type=int, default=2048, metavar="N",
                        help="lidar firings per sweep (default %(default)s)")
    parser.add_argument("--camera-hz", type=float, default=10.0, metavar="HZ",
                        help="camera frame rate (default %(default)s)")
    parser.add_argument("--lidar-hz", type=float, default=10.0, metavar="HZ",
                        help="lidar sweeps per second (default %(default)s)")
    parser.add_argument("--radar-hz", type=float, default=13.0, metavar="HZ",
                        help="radar cycles per second (default %(default)s)")
    parser.add_argument("--organised-lidar", action="store_true",
                        help="keep the beams x columns grid, NaN where no return")
    parser.add_argument("--no-semantic", action="store_true",
                        help="leave out the /camera/semantic label maps")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3",
                        help="bag storage (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")


def run(args: argparse.Namespace) -> int:
    result = write_drive_bag(
        args.output, duration_s=args.duration, seed=args.seed,
        camera_size=parse_size(args.camera_size), lidar_beams=args.lidar_beams,
        storage=args.storage, overwrite=args.overwrite, lidar_columns=args.lidar_columns,
        camera_hz=args.camera_hz, lidar_hz=args.lidar_hz, radar_hz=args.radar_hz,
        organised_lidar=args.organised_lidar, semantic=not args.no_semantic)
    for topic, count in sorted(result["counts"].items()):
        print(f"{topic}: {count} messages")
    print(f"wrote {args.output} ({args.storage}) in {result['seconds']:.1f} s; "
          f"calibration: {result['calibration']}")
    return 0
