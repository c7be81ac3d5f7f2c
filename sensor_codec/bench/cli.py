"""``sensor-codec bench``: rate-distortion benchmark of codecs on images, clouds, bags.

Examples::

    sensor-codec bench --source camvid ../shared/data/camvid --limit 20 \\
        --codecs jpeg:quality=50,70,90 webp:quality=50,70,90 x265:qp=22,27,32,37 \\
        --out bench-out --bd-rate jpeg x265
    sensor-codec bench --source pointcloud velodyne.bin --fields x,y,z,intensity \\
        --codecs draco:quantization_bits=11,14 zstd --out bench-lidar

Writes ``OUT/results.json`` (per-frame records, a summary per codec setting,
BD-rates, what was skipped and why) and RD plots ``OUT/*.png``, and prints a
table (or the summary as JSON with ``--json``). Metric definitions:
``sensor_codec.bench.metrics``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..frames import Modality
from . import bdrate, plots, runner

log = logging.getLogger(__name__)

SOURCES = ("images", "camvid", "pointcloud", "bag", "synthetic")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--source", required=True, choices=SOURCES,
                        help="images: image files/folders; camvid: a CamVid root (reads "
                             "SPLIT/); pointcloud: .bin/.pcd/.npy files; bag: a rosbag2; "
                             "synthetic: the built-in synthetic drive")
    parser.add_argument("inputs", nargs="*", metavar="PATH",
                        help="files or folders of the source (none for synthetic)")
    parser.add_argument("--codecs", nargs="+", required=True, metavar="SPEC",
                        help="NAME[:KEY=V1,V2,...[:KEY2=...]], e.g. jpeg:quality=50,70,90 "
                             "x265:qp=22,27,32,37 png")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="at most N frames (bag: per topic; synthetic: drive steps, "
                             "default 10)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="output folder for results.json and the plots")
    parser.add_argument("--bd-rate", nargs=2, action="append", default=[],
                        metavar=("ANCHOR", "TEST"),
                        help="BD-rate of codec TEST against codec ANCHOR (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary and BD-rates as JSON instead of a table")
    parser.add_argument("--split", default="val", help="CamVid split folder (default val)")
    parser.add_argument("--fields", default=None,
                        help="pointcloud .bin/.npy column names, e.g. x,y,z,intensity")
    parser.add_argument("--modality", default="lidar", choices=("lidar", "radar"),
                        help="modality of pointcloud files (default lidar)")
    parser.add_argument("--topics", nargs="+", default=None, help="bag topics to read")
    parser.add_argument("--seed", type=int, default=0, help="synthetic drive seed")
    parser.add_argument("--no-geometry", action="store_true",
                        help="skip Chamfer and D1 PSNR (nearest-neighbour search) on clouds")
    parser.add_argument("--d1-peak", type=float, default=None, metavar="METRES",
                        help="D1 PSNR peak; default: each cloud's bounding-box diagonal")
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG plots")


def make_source(args: argparse.Namespace):
    """The frame iterator the arguments describe."""
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    kind, inputs = args.source, list(args.inputs)
    if kind != "synthetic" and not inputs:
        raise ConfigError(f"--source {kind} needs at least one PATH")
    if kind == "synthetic" and inputs:
        raise ConfigError(f"--source synthetic takes no PATH, got {inputs}")
    if kind in ("camvid", "bag") and len(inputs) != 1:
        raise ConfigError(f"--source {kind} takes exactly one PATH, got {inputs}")
    if kind == "images":
        return runner.image_frames(inputs, args.limit)
    if kind == "camvid":
        return runner.camvid_frames(inputs[0], args.split, args.limit)
    if kind == "pointcloud":
        fields = args.fields.split(",") if args.fields else None
        return runner.pointcloud_frames(inputs, args.limit, fields=fields,
                                        modality=Modality.parse(args.modality))
    if kind == "bag":
        return runner.bag_frames(inputs[0], args.topics, args.limit)
    return runner.synthetic_frames(args.limit, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    settings = runner.parse_codec_specs(args.codecs)
    names = {s.codec for s in settings}
    for anchor, test in args.bd_rate:
        missing = [c for c in (anchor, test) if c not in names]
        if missing:
            raise ConfigError(f"--bd-rate names codec(s) {missing} that --codecs does not run "
                              f"(it runs {sorted(names)})")
    source = make_source(args)
    started = time.perf_counter()
    result = runner.run_benchmark(
        source, settings, geometry=not args.no_geometry, d1_peak=args.d1_peak,
        progress=lambda i, key: log.info("frame %d: %s", i + 1, key))
    elapsed = time.perf_counter() - started
    if not result.records:
        raise ConfigError(f"nothing was measured: {result.frames} frame(s) read, "
                          f"{len(result.skipped)} skipped (see the warnings above)")
    summary = result.summary()
    comparisons = [row for anchor, test in args.bd_rate
                   for row in bdrate.compare_codecs(summary, anchor, test)]
    args.out.mkdir(parents=True, exist_ok=True)
    plot_files = [] if args.no_plots else plots.write_rd_plots(summary, args.out,
                                                               title=args.source)
    document = {
        "source": {"kind": args.source, "inputs": [str(p) for p in args.inputs],
                   "limit": args.limit, "split": args.split if args.source == "camvid" else None},
        "codecs": list(args.codecs),
        "frames": result.frames,
        "seconds": elapsed,
        "machine": platform.platform(),
        "metric_definitions": "sensor_codec.bench.metrics module docstring",
        "summary": summary,
        "bd_rates": comparisons,
        "skipped": result.skipped,
        "plots": [p.name for p in plot_files],
        "records": result.records,
    }
    results_path = args.out / "results.json"
    results_path.write_text(json.dumps(runner.json_ready(document), indent=1, allow_nan=False))
    if args.json:
        sys.stdout.write(json.dumps(runner.json_ready(
            {"summary": summary, "bd_rates": comparisons}), indent=1, allow_nan=False) + "\n")
    else:
        sys.stdout.write(format_table(summary))
        if comparisons:
            sys.stdout.write(format_bd_rates(comparisons))
        sys.stdout.write(f"{result.frames} frame(s), {len(result.records)} measurements, "
                         f"{len(result.skipped)} skipped, {elapsed:.1f} s; wrote "
                         f"{results_path}" + (f" and {len(plot_files)} plot(s)" if plot_files
                                              else "") + "\n")
    return 0


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


_COLUMNS = {
    "camera": (("bpp", 3), ("psnr", 2), ("ms_ssim", 4), ("ms_ssim_db", 2), ("ratio", 1),
               ("enc_ms", 1), ("dec_ms", 1)),
    "lidar": (("bits_per_point", 2), ("max_error", 4), ("mean_error", 4), ("chamfer", 4),
              ("d1_psnr", 2), ("ratio", 1), ("enc_ms", 1), ("dec_ms", 1)),
    "radar": (("bits_per_point", 2), ("max_error", 4), ("mean_error", 4), ("ratio", 1),
              ("enc_ms", 1), ("dec_ms", 1)),
}


def format_table(summary: list[dict], extra_columns: tuple[tuple[str, int], ...] = ()) -> str:
    """A fixed-width table per modality of the summary rows; ``extra_columns``
    ((key, decimals), ...) are appended to every modality's columns."""
    out = []
    for modality, columns in _COLUMNS.items():
        columns = columns + tuple(extra_columns)
        rows = [r for r in summary if r["modality"] == modality]
        if not rows:
            continue
        header = ["codec", "setting", "frames"] + [c for c, _ in columns]
        body = [[r["codec"], r["setting"], str(r["frames"])]
                + [_fmt(r.get(c), d) for c, d in columns] for r in rows]
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        out.append(f"{modality}:")
        for line in [header] + body:
            out.append("  ".join(x.ljust(w) if i < 2 else x.rjust(w)
                                 for i, (x, w) in enumerate(zip(line, widths))))
        out.append("")
    return "\n".join(out) + "\n"


def format_bd_rates(rows: list[dict]) -> str:
    out = ["Bjontegaard deltas (pchip; negative BD-rate = test needs fewer bits):"]
    for r in rows:
        rate = (f"BD-rate {r['bd_rate_percent']:+.2f} %" if "bd_rate_percent" in r
                else f"BD-rate n/a ({r['bd_rate_error']})")
        quality = (f"BD-{r['quality']} {r['bd_quality']:+.3f}" if "bd_quality" in r
                   else f"BD-{r['quality']} n/a ({r['bd_quality_error']})")
        out.append(f"  {r['test']} vs {r['anchor']} on {r['quality']} vs {r['rate']}: "
                   f"{rate}, {quality}")
    return "\n".join(out) + "\n\n"
