"""Write the golden payloads that pin the container format and the reference
codecs' bitstreams.

    .venv/bin/python test/golden/make_golden.py

Run it only after a deliberate format change (and bump the container
version if old payloads no longer decode). For each case it writes
``<case>.scdc`` (the payload) and ``<case>.npy`` (what decoding it must
give: the pixels, or the point records). ``test_wire.py`` checks that
decoding each golden payload still gives that, and that encoding the same
input still gives the same bytes.

Inputs are small and generated here from fixed seeds, independently of the
test fixtures, so changing a fixture cannot silently change the goldens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sensor_codec.codecs import decode, encode
from sensor_codec.frames import CameraFrame, Frame, Modality, PointCloudFrame

HERE = Path(__file__).resolve().parent


def _image(encoding: str) -> CameraFrame:
    rng = np.random.default_rng(20240601)
    yy, xx = np.mgrid[0:12, 0:16]
    base = (xx * 13 + yy * 7 + rng.integers(0, 6, xx.shape)).astype(np.uint8)
    pixels = {
        "rgb8": np.stack([base, base[::-1], 255 - base], axis=2),
        "rgba8": np.stack([base, base[:, ::-1], 255 - base, 255 - base[::-1]], axis=2),
        "mono16": base.astype(np.uint16) * 251,
    }[encoding]
    return CameraFrame(np.ascontiguousarray(pixels), encoding, stamp_ns=1_234_567_890_123_456_789,
                       frame_id="golden_camera")


def _lidar() -> PointCloudFrame:
    rng = np.random.default_rng(20240602)
    n = 4 * 24
    azimuth = np.linspace(0, 2 * np.pi, n, endpoint=False)
    distance = 5 + rng.normal(0, 0.3, n)
    x = (distance * np.cos(azimuth)).astype(np.float32)
    y = (distance * np.sin(azimuth)).astype(np.float32)
    z = np.repeat(np.linspace(-1, 0.5, 4), 24).astype(np.float32)
    x[7] = np.nan
    z[30] = np.inf
    return PointCloudFrame.from_arrays(
        Modality.LIDAR, height=4, stamp_ns=1_234_567_890_500_000_000, frame_id="golden_lidar",
        x=x, y=y, z=z, intensity=np.round(rng.uniform(0, 1, n), 2).astype(np.float32),
        ring=np.repeat(np.arange(4, dtype=np.uint16), 24))


def _radar() -> PointCloudFrame:
    rng = np.random.default_rng(20240603)
    n = 20
    v_r = rng.normal(0, 4, n).astype(np.float32)
    v_r[4] = np.nan
    return PointCloudFrame.from_arrays(
        Modality.RADAR, stamp_ns=1_234_567_890_750_000_000, frame_id="golden_radar",
        x=rng.uniform(1, 50, n).astype(np.float32), y=rng.uniform(-10, 10, n).astype(np.float32),
        z=rng.uniform(-1, 2, n).astype(np.float32), rcs=rng.uniform(-30, 10, n).astype(np.float32),
        v_r=v_r, track_id=rng.integers(0, 1000, n).astype(np.uint32))


# case name -> (input frame, codec, settings)
CASES = {
    "zstd_camera_rgb8": (lambda: _image("rgb8"), "zstd", {"level": 19}),
    "zstd_lidar": (_lidar, "zstd", {"level": 19}),
    "png_camera_rgba8": (lambda: _image("rgba8"), "png", {"level": 6}),
    "png_camera_mono16": (lambda: _image("mono16"), "png", {"level": 6}),
    "grid_lidar": (_lidar, "grid", {"max_error": 0.01, "zstd_level": 9}),
    "radar_quant_radar": (_radar, "radar_quant", {}),
}


def golden_input(case: str) -> tuple[Frame, str, dict]:
    make, codec, settings = CASES[case]
    return make(), codec, dict(settings)


def frame_array(frame: Frame) -> np.ndarray:
    return frame.pixels if isinstance(frame, CameraFrame) else frame.points


def main() -> None:
    for case in CASES:
        frame, codec, settings = golden_input(case)
        payload = encode(frame, codec, **settings)
        (HERE / f"{case}.scdc").write_bytes(payload)
        np.save(HERE / f"{case}.npy", frame_array(decode(payload)), allow_pickle=False)
        print(f"{case}: {len(payload)} bytes")


if __name__ == "__main__":
    main()
