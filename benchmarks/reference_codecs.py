"""Reference-codec benchmark on the shared real data (CamVid, KITTI, nuScenes, VoD).

    .venv/bin/python benchmarks/reference_codecs.py --data ../shared/data --limit 20

Camera: the first ``--limit`` CamVid ``val`` frames (sorted by name; 480x360
RGB) through png, jpeg, webp, avif, jpegxl and x265 (HEVC intra 4:4:4, the
BPG stand-in) over quality sweeps. Prints per setting bpp, PSNR, MS-SSIM
and times; then per codec the bpp needed for 32 dB and 35 dB PSNR (pchip of
log-rate against PSNR, read off each codec's mean curve) and BD-rates
against JPEG on PSNR and on MS-SSIM (dB).

Lidar: the three sample scans through draco (quantisation sweep), grid
(E = 1 cm and 2 cm) and lossless zstd. Bits per point are given twice: for
the full record as the datasets store it (intensity, ring: kept exactly by
every codec here) and for the x, y, z geometry alone, the number lidar
compression papers report. Errors are measured per point (order is kept).

Radar: the View-of-Delft detections through radar_quant at its defaults
and zstd.

Writes ``OUT/{camera,lidar,lidar_xyz,radar}/results.json`` and RD plots,
and ``OUT/reference_summary.json``. Needs the shared data; it is not part
of the product or the tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path


from sensor_codec.bench import bdrate, plots, runner
from sensor_codec.bench.cli import format_bd_rates, format_table
from sensor_codec.errors import SensorCodecError
from sensor_codec.frames import Modality, PointCloudFrame

CAMERA_SPECS = (
    "png",
    "jpeg:quality=30,50,70,85,95",
    "webp:quality=30,50,70,85,95",
    "avif:quality=30,50,65,80:speed=8",
    "jpegxl:quality=30,50,70,85,95:effort=3",
    "x265:qp=22,27,32,37,42:preset=medium",
)
LIDAR_SPECS = ("draco:quantization_bits=10,12,14,16", "grid:max_error=0.01,0.02", "zstd")
RADAR_SPECS = ("radar_quant", "zstd")
LIDAR_FILES = (("kitti", "samples/kitti_000000/velodyne.bin", ("x", "y", "z", "intensity")),
               ("nuscenes", "samples/nuscenes_n015/LIDAR_TOP.pcd.bin",
                ("x", "y", "z", "intensity", "ring")),
               ("vod", "samples/vod_00549/lidar.bin", ("x", "y", "z", "intensity")))
RADAR_FILE = ("vod_radar", "samples/vod_00549/radar.bin",
              ("x", "y", "z", "rcs", "v_r", "v_r_compensated", "time"))
PSNR_TARGETS = (32.0, 35.0)
ANCHOR = "jpeg"


def _save(out: Path, name: str, result: runner.BenchResult, extra: dict) -> list[dict]:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    written = plots.write_rd_plots(summary, folder, title=name)
    doc = {**extra, "frames": result.frames, "summary": summary, "skipped": result.skipped,
           "plots": [p.name for p in written], "records": result.records}
    (folder / "results.json").write_text(
        json.dumps(runner.json_ready(doc), indent=1, allow_nan=False))
    return summary


def run_camera(data: Path, limit: int, out: Path, log) -> dict:
    settings = runner.parse_codec_specs(CAMERA_SPECS)
    frames = runner.camvid_frames(data / "camvid", "val", limit)
    started = time.perf_counter()
    result = runner.run_benchmark(frames, settings,
                                  progress=lambda i, key: log.info("camvid %d/%d %s",
                                                                   i + 1, limit, key))
    seconds = time.perf_counter() - started
    summary = _save(out, "camera", result, {"source": "camvid/val", "limit": limit,
                                            "codecs": list(CAMERA_SPECS)})
    print(f"== Camera: CamVid val, first {result.frames} frames (sorted by name), 480x360 RGB, "
          f"{seconds:.0f} s ==")
    print(format_table(summary), end="")
    targets = {}
    for codec in dict.fromkeys(r["codec"] for r in summary):
        rates, psnrs = bdrate.summary_curve(summary, codec, "bpp", "psnr")
        targets[codec] = {f"{t:g}": (bdrate.rate_at_quality(rates, psnrs, t)
                                     if len(rates) >= 2 else None) for t in PSNR_TARGETS}
    print("bpp needed for a mean PSNR of (pchip of log-bpp vs PSNR; '-' = outside the sweep):")
    print(f"  {'codec':8s}" + "".join(f"{f'{t:g} dB':>10s}" for t in PSNR_TARGETS))
    for codec, row in targets.items():
        print(f"  {codec:8s}" + "".join(
            f"{'-' if row[f'{t:g}'] is None else format(row[f'{t:g}'], '.3f'):>10s}"
            for t in PSNR_TARGETS))
    comparisons = [c for codec in targets if codec not in (ANCHOR, "png")
                   for c in bdrate.compare_codecs(summary, ANCHOR, codec)]
    print()
    print(format_bd_rates(comparisons), end="")
    return {"frames": result.frames, "seconds": seconds, "bpp_at_psnr": targets,
            "bd_rates_vs_jpeg": comparisons, "summary": summary}


def _cloud_frames(data: Path, files, xyz_only: bool, modality: Modality):
    from sensor_codec.io import files as file_io
    for name, rel, fields in files:
        frame = file_io.read_frame(data / rel, modality, fields=fields, frame_id=name)
        if xyz_only:
            frame = PointCloudFrame.from_arrays(modality, frame_id=name,
                                                **{k: frame.points[k] for k in "xyz"})
        yield runner.BenchFrame(frame, name)


def run_clouds(data: Path, out: Path, log) -> dict:
    report = {}
    for name, files, specs, modality, xyz_only in (
            ("lidar", LIDAR_FILES, LIDAR_SPECS, Modality.LIDAR, False),
            ("lidar_xyz", LIDAR_FILES, LIDAR_SPECS, Modality.LIDAR, True),
            ("radar", (RADAR_FILE,), RADAR_SPECS, Modality.RADAR, False)):
        settings = runner.parse_codec_specs(specs)
        per_file = []
        for item in _cloud_frames(data, files, xyz_only, modality):
            log.info("%s %s: %d points", name, item.frame_key, item.frame.num_points)
            result = runner.run_benchmark([item], settings)
            summary = _save(out / name, item.frame_key, result,
                            {"source": item.frame_key, "codecs": list(specs)})
            fields = ",".join(item.frame.field_names)
            print(f"== {name}: {item.frame_key}, {item.frame.num_points} points, float32 "
                  f"[{fields}] ({item.frame.point_step * 8} raw bits/point) ==")
            print(format_table(summary), end="")
            if modality == Modality.RADAR:
                for row in summary:
                    errors = ", ".join(f"{k} {v:.4g}" for k, v in row["field_max_error"].items())
                    print(f"  {row['codec']} max error per field: {errors}")
                print()
            per_file.append({"file": item.frame_key, "points": item.frame.num_points,
                             "fields": fields, "summary": summary})
        report[name] = per_file
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"),
                        help="the shared data folder (default ../shared/data)")
    parser.add_argument("--limit", type=int, default=20,
                        help="CamVid val frames to use (default 20 of 101)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/reference"),
                        help="output folder (default bench-results/reference)")
    parser.add_argument("--skip-camera", action="store_true")
    parser.add_argument("--skip-clouds", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s",
                        stream=sys.stderr)
    log = logging.getLogger("reference_codecs")
    if not (args.data / "camvid").is_dir():
        sys.stderr.write(f"no shared data at {args.data} (pass --data)\n")
        return 2
    report = {"machine": platform.platform(), "argv": sys.argv[1:] if argv is None else argv}
    try:
        if not args.skip_camera:
            report["camera"] = run_camera(args.data, args.limit, args.out, log)
        if not args.skip_clouds:
            report["clouds"] = run_clouds(args.data, args.out, log)
    except SensorCodecError as exc:
        sys.stderr.write(f"reference_codecs: error: {exc}\n")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reference_summary.json").write_text(
        json.dumps(runner.json_ready(report), indent=1, allow_nan=False))
    print(f"wrote {args.out / 'reference_summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
