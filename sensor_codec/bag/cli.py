"""``sensor-codec bag info|replay|compress|decompress|repair``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from ..errors import ConfigError
from ..frames import Modality
from .io import STORAGES

BAG_COMMANDS = {
    "info": "topics, types, counts, duration, rates, bytes and codec of each topic",
    "replay": "publish a bag's messages on ROS 2 topics (needs rclpy)",
    "compress": "compress a bag's camera/lidar/radar topics into <topic>/sensor_codec topics "
                "(exit status 1 when bad messages were skipped)",
    "decompress": "decode <topic>/sensor_codec topics back to Image/PointCloud2 on <topic>",
    "repair": "rebuild metadata.yaml of an sqlite3 bag whose writer was killed",
}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="BAG_COMMAND", required=True)
    parsers = {name: sub.add_parser(name, help=text, description=text)
               for name, text in BAG_COMMANDS.items()}
    for p in parsers.values():
        p.add_argument("bag", metavar="BAG", help="bag directory (or .db3 / .mcap file)")

    parsers["info"].add_argument("--json", action="store_true",
                                 help="print JSON instead of a table")

    p = parsers["replay"]
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="start again at the end")
    p.add_argument("--topics", nargs="+", metavar="TOPIC", help="only these topics")

    p = parsers["compress"]
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output bag directory")
    p.add_argument("--camera-codec", help="codec for Image topics (default webp)")
    p.add_argument("--camera-quality", type=int, help="camera codec 'quality' setting")
    p.add_argument("--lidar-codec", help="codec for lidar PointCloud2 topics (default grid)")
    p.add_argument("--lidar-max-error", type=float,
                   help="the lidar codec's per-point error bound in metres (grid: 'max_error', "
                        "rangecode: 'bound')")
    p.add_argument("--radar-codec", help="codec for radar PointCloud2 topics (default radar_quant)")
    p.add_argument("--set", action="append", default=[], metavar="MODALITY.KEY=VALUE",
                   help="any codec setting, e.g. --set lidar.max_error=0.005 (repeatable)")
    p.add_argument("--topics", nargs="+", metavar="TOPIC[=MODALITY]",
                   help="compress only these topics; '=camera|lidar|radar' forces the modality")
    p.add_argument("--keep-raw", action="store_true", help="also keep the uncompressed topics")
    p.add_argument("--semantic-source", metavar="TOPIC",
                   help="lidar codec in semantic mode: the label-map (mono8 class ids) or camera "
                        "topic whose semantic maps steer it (default: the bag's first "
                        ".../semantic topic, else its first Image topic, run through the "
                        "default backbone)")
    p.add_argument("--calibration", metavar="FILE",
                   help="camera-lidar calibration for semantic steering (YAML as "
                        "config/calibration.yaml, or a KITTI calib.txt; default: that file)")
    p.add_argument("--semantic-max-age", type=float, default=None, metavar="S",
                   help="largest stamp difference between a cloud and its semantic map "
                        "(default 0.15 s)")

    for name in ("compress", "decompress"):
        p = parsers[name]
        if name == "decompress":
            p.add_argument("-o", "--output", required=True, metavar="OUT",
                           help="output bag directory")
        p.add_argument("--storage", choices=sorted(STORAGES),
                       help="output storage (default: same as the input)")
        p.add_argument("--strict", action="store_true",
                       help="stop at the first bad message instead of skipping it")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--json", action="store_true", help="print the report as JSON")


def codecs_from_args(args: argparse.Namespace) -> dict[Modality, tuple[str, dict]]:
    """The ``codecs`` argument of ``compress_bag`` from the compress options."""
    from .convert import resolve_codecs

    chosen = resolve_codecs(None)
    names = {Modality.CAMERA: args.camera_codec, Modality.LIDAR: args.lidar_codec,
             Modality.RADAR: args.radar_codec}
    for modality, name in names.items():
        if name:
            chosen[modality] = (name, {})
    if args.camera_quality is not None:
        chosen[Modality.CAMERA][1]["quality"] = args.camera_quality
    if args.lidar_max_error is not None:
        from ..io.files_cli import error_bound_setting
        key = error_bound_setting(chosen[Modality.LIDAR][0], "--lidar-max-error")
        chosen[Modality.LIDAR][1][key] = args.lidar_max_error
    for item in args.set:
        modality, key, raw = parse_setting(item)
        chosen[modality][1][key] = coerce_setting(chosen[modality][0], key, raw)
    return chosen


def coerce_setting(codec_name: str, key: str, raw: str) -> object:
    """Turn ``raw`` into the type the codec declares for ``key`` (str stays str).

    Unknown codecs or keys keep the text; the codec then refuses it by name.
    """
    from ..codecs import codec_class
    from ..errors import UnknownCodecError

    try:
        params = {p.name: p for p in codec_class(codec_name).params}
    except UnknownCodecError:
        return raw
    param = params.get(key)
    if param is None or param.type is str:
        return raw
    if param.type is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--set {key}={raw!r}: codec {codec_name!r} wants true or false")
    try:
        return param.type(raw)
    except ValueError:
        raise ConfigError(f"--set {key}={raw!r}: codec {codec_name!r} wants a value of type "
                          f"{param.type.__name__}") from None


def parse_setting(item: str) -> tuple[Modality, str, str]:
    """``'lidar.max_error=0.01'`` -> ``(Modality.LIDAR, 'max_error', '0.01')``."""
    target, sep, raw = item.partition("=")
    modality_name, dot, key = target.partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"--set {item!r} must look like MODALITY.KEY=VALUE, "
                          "e.g. lidar.max_error=0.01")
    try:
        modality = Modality.parse(modality_name)
    except ValueError:
        raise ConfigError(f"--set {item!r}: unknown modality {modality_name!r}; use camera, "
                          "lidar or radar") from None
    return modality, key, raw


def topics_from_args(values: list[str] | None):
    if not values:
        return None
    if not any("=" in v for v in values):
        return list(values)
    out = {}
    for v in values:
        topic, _, modality = v.partition("=")
        out[topic] = modality or None
    return out


def run(args: argparse.Namespace) -> int:
    return {"info": _info, "replay": _replay, "compress": _compress, "decompress": _decompress,
            "repair": _repair}[args.bag_command](args)


def _info(args) -> int:
    from .info import bag_info, format_info

    info = bag_info(args.bag)
    print(json.dumps(info.to_dict(), indent=2) if args.json else format_info(info))
    return 0


def _replay(args) -> int:
    argv = [args.bag, "--rate", str(args.rate)]
    if args.loop:
        argv.append("--loop")
    if args.topics:
        argv += ["--topics", *args.topics]
    # The player is a ROS node (rclpy); imported only here so the library stays ROS-free.
    player = importlib.import_module("sensor_codec.nodes.bag_player")
    return int(player.main(argv) or 0)


def _progress(args) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _print_report(report, args, action: str) -> int:
    from .convert import format_report

    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report, action))
    return 1 if report.failed else 0


def _compress(args) -> int:
    from .convert import compress_bag

    from .convert import DEFAULT_SEMANTIC_MAX_AGE_S

    max_age = args.semantic_max_age
    report = compress_bag(args.bag, args.output, codecs=codecs_from_args(args),
                          topics=topics_from_args(args.topics), keep_raw=args.keep_raw,
                          storage=args.storage, progress=_progress(args), strict=args.strict,
                          overwrite=args.overwrite, semantic_source=args.semantic_source,
                          calibration=args.calibration,
                          semantic_max_age_s=DEFAULT_SEMANTIC_MAX_AGE_S if max_age is None
                          else max_age)
    return _print_report(report, args, "compressed")


def _decompress(args) -> int:
    from .convert import decompress_bag

    report = decompress_bag(args.bag, args.output, storage=args.storage,
                            progress=_progress(args),
                            strict=args.strict, overwrite=args.overwrite)
    return _print_report(report, args, "decompressed")


def _repair(args) -> int:
    from .io import repair_bag

    counts = repair_bag(args.bag)
    print(f"rebuilt {args.bag}/metadata.yaml: {sum(counts.values())} messages")
    for topic, n in counts.items():
        print(f"  {topic}: {n}")
    return 0
