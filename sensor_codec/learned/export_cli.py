"""``sensor-codec export backbone|camera``: release a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="what", metavar="MODEL", required=True)
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
            p.add_argument("--rd-frames", type=int, default=10, help="val frames for the RD table")
            p.add_argument("--semantic-frames", type=int, default=0,
                           help="val frames for the semantic-preservation check at level 0 (0 = skip)")
    check = sub.add_parser("crosscheck", help="verify a released camera model: encode with each "
                           "backend, decode with every backend, count failures")
    check.add_argument("--frames", required=True, help="folder of images (png/jpg), all one size")
    check.add_argument("--count", type=int, default=100, help="number of frames")
    check.add_argument("--model", default="", help="camera model id (default: the default one)")
    check.add_argument("--models", default="", help="models folder (default: the shipped one)")
    check.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "sensor-codec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.what == "crosscheck":
        from .camera_export import cross_backend_check
        from .data import load_folder

        frames = load_folder(args.frames, "", need_labels=False, limit=args.count)
        report = cross_backend_check((img.permute(1, 2, 0).numpy() for img in frames.images),
                                     model=args.model or None, models=args.models or None,
                                     threads=args.threads)
        report["command"] = command
        print(json.dumps(report, indent=2))
        return 1 if any(p["failures"] for p in report["pairs"].values()) else 0
    val = None
    if args.val:
        from .data import load_folder

        val = load_folder(args.val, "val", need_labels=args.what == "backbone"
                          or bool(getattr(args, "semantic_frames", 0)))
    if args.what == "backbone":
        from .export import export_backbone

        release = export_backbone(args.checkpoint, args.out, val_data=val, command=command,
                                  make_default=not args.no_default, threads=args.threads)
    else:
        from .camera_export import export_camera

        release = export_camera(args.checkpoint, args.out, backbone=args.backbone or None, val_data=val,
                                command=command, make_default=not args.no_default,
                                threads=args.threads, rd_frames=args.rd_frames,
                                semantic_frames=args.semantic_frames)
    print(json.dumps({"model_id": release.model_id, "folder": str(release.folder),
                      "metrics": release.manifest.get("metrics")}, default=str))
    return 0
