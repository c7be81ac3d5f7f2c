"""``sensor-codec compress | decompress | codecs``: single files in and out.

    sensor-codec compress velodyne.bin -o scan.scdc --codec grid --max-error 0.01
    sensor-codec compress image.png -o image.scdc --codec jpeg --quality 85
    sensor-codec decompress scan.scdc -o scan.pcd
    sensor-codec codecs --modality lidar
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..codecs import codec_class, codec_names
from ..errors import ConfigError, OversizedPayloadError
from ..frames import CameraFrame, Frame, Modality
from ..wire import MAX_PAYLOAD_BYTES, unpack
from . import files

# Codec used when --codec is not given.
DEFAULT_CODECS = {Modality.CAMERA: "jpeg", Modality.LIDAR: "grid", Modality.RADAR: "radar_quant"}
PAYLOAD_SUFFIX = ".scdc"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "compress":
        parser.add_argument("input", type=Path, help="image (.png, .jpg, ...) or point cloud "
                            "(.bin, .pcd, .npy)")
        parser.add_argument("-o", "--output", type=Path,
                            help=f"payload file to write (default: INPUT{PAYLOAD_SUFFIX})")
        parser.add_argument("--modality", choices=[m.label for m in Modality],
                            help="what the file holds (default: camera for images, lidar for "
                                 "clouds)")
        parser.add_argument("--codec", help="codec name (default: "
                            + ", ".join(f"{c} for {m.label}" for m, c in DEFAULT_CODECS.items())
                            + "); see 'sensor-codec codecs'")
        parser.add_argument("--quality", type=int, help="the codec's 'quality' setting")
        parser.add_argument("--max-error", type=float,
                            help="the codec's per-point error bound in metres (grid: "
                                 "'max_error', rangecode: 'bound')")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="any codec setting (repeatable)")
        parser.add_argument("--fields", help="column names of a .bin or N x K .npy cloud, "
                            "comma-separated (default x,y,z,intensity; "
                            "x,y,z,intensity,ring for nuScenes *.pcd.bin)")
        parser.add_argument("--frame-id", default="", help="frame id stored in the payload")
        parser.add_argument("--stamp-ns", type=int, default=0,
                            help="timestamp stored in the payload, ns since the epoch")
        parser.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT")
    elif command == "decompress":
        parser.add_argument("input", type=Path, help=f"payload file ({PAYLOAD_SUFFIX})")
        parser.add_argument("-o", "--output", type=Path, required=True,
                            help="file to write, by suffix: .png or .npy for images; .bin, "
                                 ".pcd or .npy for clouds")
        parser.add_argument("--pcd-ascii", action="store_true", help="write an ascii PCD")
        parser.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT")
    elif command == "codecs":
        parser.add_argument("--modality", choices=[m.label for m in Modality],
                            help="only the codecs for this modality")


def run(args: argparse.Namespace) -> int:
    return {"compress": _compress, "decompress": _decompress, "codecs": _list}[args.command](args)


def _compress(args) -> int:
    output = args.output or args.input.with_name(args.input.name + PAYLOAD_SUFFIX)
    _check_writable(output, args.force)
    fields = tuple(f.strip() for f in args.fields.split(",")) if args.fields else None
    try:
        frame = files.read_frame(args.input, args.modality, fields=fields,
                                 stamp_ns=args.stamp_ns, frame_id=args.frame_id)
    except OSError as exc:
        raise ConfigError(f"cannot read {args.input}: {exc.strerror or exc}") from None
    name = args.codec or DEFAULT_CODECS[frame.modality]
    codec = codec_class(name)(**codec_settings(name, args.quality, args.max_error, args.set))
    start = time.perf_counter()
    payload = codec.encode(frame)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    _write(output, payload)
    print(f"{args.input} -> {output}: {_describe(frame)}, codec {name}, "
          f"{frame.nbytes} -> {len(payload)} bytes ({frame.nbytes / len(payload):.2f}x), "
          f"encode {elapsed_ms:.1f} ms")
    return 0


def _decompress(args) -> int:
    _check_writable(args.output, args.force)
    try:
        size = args.input.stat().st_size
        if size > MAX_PAYLOAD_BYTES:
            raise OversizedPayloadError(f"{args.input} is {size} bytes, more than a payload may "
                                        f"be ({MAX_PAYLOAD_BYTES})")
        payload = args.input.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.input}: {exc.strerror or exc}") from None
    container = unpack(payload)
    codec = codec_class(container.codec)()
    start = time.perf_counter()
    frame = codec.decode(container)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    try:
        files.write_frame(frame, args.output, pcd_data="ascii" if args.pcd_ascii else "binary")
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"{args.input} -> {args.output}: {_describe(frame)}, {container.tag}, "
          f"{len(payload)} -> {frame.nbytes} bytes, decode {elapsed_ms:.1f} ms")
    return 0


def _list(args) -> int:
    for name in codec_names(args.modality):
        cls = codec_class(name)
        kinds = ",".join(sorted(m.label for m in cls.modalities))
        print(f"{name:14s} [{kinds}] {'lossless' if cls.lossless else 'lossy'}: "
              f"{cls.description}")
        for p in cls.params:
            limits = (f" choices {list(p.choices)}" if p.choices else
                      f" range {p.min}..{p.max}" if p.min is not None or p.max is not None
                      else "")
            print(f"    {p.name} ({p.type.__name__}, default {p.default!r}{limits}): "
                  f"{p.description}")
    return 0


def codec_settings(name: str, quality: int | None, max_error: float | None,
                   assignments: list[str]) -> dict:
    """Settings for codec ``name`` from --quality, --max-error and --set
    KEY=VALUE (typed by the codec's declared settings)."""
    params = {p.name: p for p in codec_class(name).params}
    settings: dict = {}

    def put(key: str, value, flag: str) -> None:
        if key not in params:
            raise ConfigError(f"codec {name!r} has no {key!r} setting for {flag}; its settings: "
                              f"{sorted(params) or 'none'}")
        if key in settings:
            raise ConfigError(f"setting {key!r} is given twice")
        settings[key] = value

    if quality is not None:
        put("quality", quality, "--quality")
    if max_error is not None:
        put(error_bound_setting(name, "--max-error"), max_error, "--max-error")
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE")
        put(key, _parse_value(key, text.strip(), params.get(key)), "--set")
    return settings


def error_bound_setting(name: str, flag: str) -> str:
    """The setting of codec ``name`` that ``flag`` (a max-error option) sets."""
    key = codec_class(name).error_bound_setting
    if key is None:
        bounded = sorted(n for n in codec_names()
                         if codec_class(n).error_bound_setting)
        raise ConfigError(f"codec {name!r} has no per-point error bound for {flag}; codecs "
                          f"with one: {bounded}")
    return key


def _parse_value(key: str, text: str, param):
    kind = param.type if param is not None else str
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"setting {key!r} takes true or false, got {text!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"setting {key!r} takes a {kind.__name__}, got {text!r}") \
                from None
    return text


def _describe(frame: Frame) -> str:
    if isinstance(frame, CameraFrame):
        return f"camera {frame.width}x{frame.height} {frame.encoding}"
    grid = f" ({frame.height}x{frame.width})" if frame.height > 1 else ""
    return (f"{frame.modality.label} {frame.num_points} points{grid} "
            f"[{','.join(frame.field_names)}]")


def _check_writable(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
