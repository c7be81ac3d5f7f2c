"""``sensor-codec``: one command-line entry point, subcommands in their modules.

Each subcommand module exposes ``add_arguments(parser, command)`` and ``run(args) -> int``;
modules are imported only when their subcommand runs, so ``sensor-codec
compress`` does not pay for torch or rclpy.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import SensorCodecError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "compress": ("sensor_codec.io.files_cli", "compress an image or point-cloud file"),
    "decompress": ("sensor_codec.io.files_cli", "decompress a .scdc file"),
    "codecs": ("sensor_codec.io.files_cli", "list the registered codecs and their settings"),
    "bag": ("sensor_codec.bag.cli", "rosbag tools: info, replay, compress, decompress"),
    "import": ("sensor_codec.datasets.cli", "turn KITTI / nuScenes / View-of-Delft / comma2k19 files into a rosbag"),
    "synth": ("sensor_codec.synthetic.cli", "write the built-in synthetic drive as a rosbag"),
    "bench": ("sensor_codec.bench.cli", "rate-distortion benchmark of codecs"),
    "launch": ("sensor_codec.graph_cli", "run the compress pipeline node graph (no ros2 launch needed)"),
    "demo": ("sensor_codec.demo", "the main job: synthetic drive through encoder and decoder nodes"),
    "train": ("sensor_codec.learned.train_cli", "train the learned backbone or camera codec"),
    "export": ("sensor_codec.learned.export_cli", "release a trained model: safetensors, ONNX, model card"),
    "engines": ("sensor_codec.engines.cli", "inference backends, fused encoder graph, TensorRT engines"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only ``command``'s module is imported to add its options."""
    parser = argparse.ArgumentParser(prog="sensor-codec", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except SensorCodecError as exc:
        sys.stderr.write(f"sensor-codec {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"sensor-codec {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
