"""``sensor-codec train backbone|camera``: train the learned models from folders or rosbags."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="CamVid-style folder (<split>/ + <split>annot/) or a rosbag")
    p.add_argument("--split", default="train", help="sub-folder of --data holding the images")
    p.add_argument("--image-topic", default="", help="bag image topic (rosbag input)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--resume", default=None, help="checkpoint directory to continue from")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--val", default="", help="validation data (folder or bag); default: none")
    p.add_argument("--limit", type=int, default=None, help="use only the first N frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    bb = sub.add_parser("backbone", help="segmentation backbone (needs label maps)")
    _common(bb)
    bb.add_argument("--label-topic", default="", help="bag mono8 label topic")
    bb.add_argument("--crop", default="288x384", help="training crop HxW")
    bb.add_argument("--lr", type=float, default=4e-3)
    bb.add_argument("--eval-every", type=int, default=5)
    cam = sub.add_parser("camera", help="learned camera codec on top of a trained backbone")
    _common(cam)
    cam.add_argument("--backbone", default="",
                     help="backbone weights (.safetensors); default: the shipped ones")
    cam.add_argument("--crop", default="192x192", help="training crop HxW (multiples of 64)")
    cam.add_argument("--lr", type=float, default=3e-4)
    cam.add_argument("--steps", type=int, default=0, help="stop after N optimiser steps (0: epochs)")
    cam.add_argument("--init-from", default="", help="start from a released camera model (id or folder)")
    cam.add_argument("--decoder-only", action="store_true",
                     help="train only the synthesis and inverse gains: the bitstream stays the same")
    cam.add_argument("--add-low-levels", default="",
                     help="with --init-from a release of fewer levels: gain factors (ascending, <1) of "
                          "new levels below its lowest, e.g. 0.4,0.6")
    cam.add_argument("--semantic-loss", type=float, default=0.0,
                     help="weight of the backbone's cross-entropy on the reconstruction (0 = off)")
    cam.add_argument("--integer-from-step", type=int, default=None,
                     help="step at which the synthesis moves to its integer grids "
                          "(default: 0 with --init-from, else after 80%% of the steps)")


def _crop(text: str) -> tuple[int, int]:
    from ..errors import ConfigError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--crop {text!r} must look like 288x384 (height x width)") from None
    if h < 32 or w < 32:
        raise ConfigError(f"--crop {text!r} is too small; use at least 32x32")
    return h, w


def _factors(text: str) -> tuple[float, ...]:
    from ..errors import ConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--add-low-levels {text!r} must be comma-separated numbers, e.g. 0.4,0.6") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from .data import load_training_data

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "sensor-codec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.model == "backbone":
        from .train import BackboneTrainConfig, train_backbone

        train_set = load_training_data(args.data, args.split, image_topic=args.image_topic,
                                       label_topic=args.label_topic, limit=args.limit)
        val_set = (load_training_data(args.val, "val", image_topic=args.image_topic,
                                      label_topic=args.label_topic) if args.val else None)
        config = BackboneTrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                     crop=_crop(args.crop), lr=args.lr, seed=args.seed,
                                     device=args.device, eval_every=args.eval_every,
                                     data=str(args.data), command=command)
        log.info("training backbone on %d frames (%s)", len(train_set), args.data)
        state = train_backbone(train_set, args.out, config, val_set=val_set, resume=args.resume,
                               progress=not args.no_progress)
        print(json.dumps({"epoch": state["epoch"], "best_miou": state.get("best_miou"),
                          "last": state["history"][-1] if state["history"] else None}))
        return 0
    from .camera_train import CameraTrainConfig, train_camera

    train_set = load_training_data(args.data, args.split, image_topic=args.image_topic,
                                   need_labels=False, limit=args.limit)
    config = CameraTrainConfig(epochs=args.epochs, batch_size=args.batch_size, crop=_crop(args.crop),
                               lr=args.lr, seed=args.seed, device=args.device,
                               max_steps=args.steps or None, data=str(args.data), command=command,
                               init_from=args.init_from, decoder_only=args.decoder_only,
                               integer_from_step=args.integer_from_step,
                               low_level_factors=_factors(args.add_low_levels),
                               semantic_loss_weight=args.semantic_loss)
    state = train_camera(train_set, args.out, config, backbone_weights=args.backbone or None,
                         resume=args.resume, progress=not args.no_progress)
    print(json.dumps({"epoch": state["epoch"], "step": state["step"],
                      "last": state["history"][-1] if state["history"] else None}))
    return 0
