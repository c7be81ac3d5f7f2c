"""``sensor-codec import kitti|nuscenes|vod|comma2k19 DIR -o BAG``."""

from __future__ import annotations

import argparse
import importlib
import json

from ..bag.io import STORAGES
from .common import DEFAULT_STAMP_NS

# name -> (module, function, help)
DATASETS = {
    "kitti": ("kitti", "import_kitti",
              "KITTI frame: velodyne.bin, image_2.png, calib.txt"),
    "nuscenes": ("nuscenes", "import_nuscenes",
                 "nuScenes sample: LIDAR_TOP.pcd.bin, CAM_FRONT.jpg"),
    "vod": ("vod", "import_vod",
            "View-of-Delft frame: lidar.bin, radar.bin, image_2.jpg, calib_*.txt, pose.json"),
    "comma2k19": ("comma2k19", "import_comma2k19",
                  "comma2k19 radar tracks: t.npy, value.npy"),
}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, (_, _, help_text) in DATASETS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("directory", metavar="DIR", help="sample directory")
        p.add_argument("-o", "--output", required=True, metavar="BAG", help="bag to write")
        p.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3",
                       help="bag storage (default sqlite3)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        if name == "comma2k19":
            p.add_argument("--group", choices=("cycle", "timestamp", "window", "stream"), default="cycle",
                           help="one cloud per radar cycle (default), per distinct t, per --window "
                                "seconds, or the whole log as one cloud (window and stream add a "
                                "time field)")
            p.add_argument("--window", type=float, default=1.0, metavar="SECONDS",
                           help="cloud length for --group window (default 1.0)")
            p.add_argument("--gap", type=float, default=0.02, metavar="SECONDS",
                           help="a gap longer than this starts a new cycle (default 0.02)")
        else:
            p.add_argument("--stamp", type=float, default=DEFAULT_STAMP_NS / 1e9,
                           metavar="SECONDS",
                           help="timestamp of the frame in seconds (default 1.0)")


def run(args: argparse.Namespace) -> int:
    module_name, function_name, _ = DATASETS[args.dataset]
    importer = getattr(importlib.import_module(f"{__package__}.{module_name}"), function_name)
    options = {"storage": args.storage, "overwrite": args.overwrite}
    if args.dataset == "comma2k19":
        options.update(group=args.group, gap_s=args.gap, window_s=args.window)
    else:
        options["stamp_ns"] = int(round(args.stamp * 1e9))
    report = importer(args.directory, args.output, **options)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{report.dataset} {report.source} -> {report.bag} ({report.storage})")
        for topic, count in report.messages.items():
            points = report.points.get(topic)
            print(f"  {topic}: {count} message(s)" + (f", {points} points" if points else ""))
    return 0
