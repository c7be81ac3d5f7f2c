"""``sensor-codec export backbone|camera``: release a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name, help_text in (("backbone", "segmentation backbone"),
                            ("camera", "learned camera codec (freezes its entropy tables)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--checkpoint", required=True, help="training checkpoint directory")
        p.add_argument("--out", default="sensor_codec/models", help="models folder to write into")
        p.add_argument("--val", default="", help="CamVid-style folder for metrics (split 'val')")
        p.add_argument("--no-default", action="store_true", help="do not make it the default model")
        p.add_argument("--threads", type=int, default=0, help="CPU threads for timing (0 = default)")
        if name == "camera":
            p.add_argument("--backbone", default="", help="backbone model id (default: the default one)")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "sensor-codec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    val = None
    if args.val:
        from .data import load_folder

        val = load_folder(args.val, "val", need_labels=args.model == "backbone")
    if args.model == "backbone":
        from .export import export_backbone

        release = export_backbone(args.checkpoint, args.out, val_data=val, command=command,
                                  make_default=not args.no_default, threads=args.threads)
    else:
        from .camera_export import export_camera

        release = export_camera(args.checkpoint, args.out, backbone=args.backbone or None, val_data=val,
                                command=command, make_default=not args.no_default,
                                threads=args.threads)
    print(json.dumps({"model_id": release.model_id, "folder": str(release.folder),
                      "metrics": release.manifest.get("metrics")}, default=str))
    return 0
