"""Train the lidar context model of the ``rangecode`` codec.

    .venv/bin/python benchmarks/train_lidar_context.py --frames kitti nuscenes

Counts residual symbols per context over the named sample frames of
../shared/data/samples and the seeded synthetic sweeps of
``sensor_codec.pointcloud.train.SYNTHETIC_SWEEPS`` (``--no-synthetic`` leaves
them out) at every error bound in BOUND_SCALES (geometry only: the model
codes x, y, z) and writes sensor_codec/models/lidar_context.safetensors.
Frames not named are the held-out test set (see sensor_codec/models/lidar_context.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sensor_codec.pointcloud.context_model import DEFAULT_MODEL_PATH
from sensor_codec.pointcloud.train import (
    SAMPLE_DIRS,
    sample_lidar,
    synthetic_lidar,
    train_context_model,
)

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train the rangecode lidar context model")
    ap.add_argument("--frames", nargs="+", default=["kitti", "nuscenes"],
                    choices=sorted(SAMPLE_DIRS))
    ap.add_argument("--samples", type=Path, default=REPO.parent / "shared" / "data" / "samples")
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    ap.add_argument("--no-synthetic", action="store_true",
                    help="train on the named real frames only")
    args = ap.parse_args(argv)
    frames = [sample_lidar(f, args.samples, geometry_only=True) for f in args.frames]
    if not args.no_synthetic:
        frames += synthetic_lidar()
    model = train_context_model(frames)
    model.save(args.out)
    print(f"trained on {args.frames}{'' if args.no_synthetic else ' + synthetic sweeps'}: "
          f"{model.model_id} -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
