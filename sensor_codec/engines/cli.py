"""``sensor-codec engines``: backends, the fused encoder graph, TensorRT engines.

    sensor-codec engines backends                 which backends are usable here, what auto picks
    sensor-codec engines fuse [--verify DIR]      backbone + camera encoder -> one ONNX graph
    sensor-codec engines build --precision fp16 --resolution 1920x1080 --resolution 960x720
    sensor-codec engines build --precision int8 --dynamic 640x480:960x720:1920x1080 \\
        --calib-images ../shared/data/camvid/val --calib-count 100
    sensor-codec engines build --precision int8 --resolution 1920x1080 \
        --calib-bag drive.mcap --calib-topic /camera/front/image_raw
    sensor-codec engines build --dla-core 0 --workspace-mib 2048 ...     (Jetson; fp16 or int8)
    sensor-codec engines list                     engines and their sidecars
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import ConfigError
from .artefacts import ENGINE_SUFFIX, PRECISIONS, Sidecar, default_engines_dir

log = logging.getLogger(__name__)

GRAPHS = ("fused_encoder", "backbone", "encoder", "decoder")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    backends = sub.add_parser("backends", help="list backends, whether each is usable here, and auto's choice")
    backends.set_defaults(action="backends")

    fuse = sub.add_parser("fuse", help="export the backbone + camera encoder as one ONNX graph")
    _model_args(fuse)
    fuse.add_argument("--verify", metavar="DIR", default="",
                      help="image folder: compare the fused graph with the separate graphs (ONNX Runtime)")
    fuse.add_argument("--count", type=int, default=10, help="frames for --verify (default 10)")

    build = sub.add_parser("build", help="build TensorRT engines from the exported ONNX graphs")
    _model_args(build)
    build.add_argument("--graph", action="append", choices=GRAPHS,
                       help="graph to build (repeatable; default fused_encoder and decoder)")
    build.add_argument("--precision", choices=PRECISIONS, default="fp16")
    shapes = build.add_mutually_exclusive_group(required=True)
    shapes.add_argument("--resolution", action="append", metavar="WxH",
                        help="fixed-shape profile for this camera resolution (repeatable)")
    shapes.add_argument("--dynamic", metavar="MIN:OPT:MAX",
                        help="one dynamic profile, e.g. 640x480:960x720:1920x1080")
    build.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace (MiB)")
    build.add_argument("--dla-core", type=int, default=None, help="Jetson: build for this DLA core")
    build.add_argument("--no-gpu-fallback", action="store_true",
                       help="with --dla-core: fail instead of running unsupported layers on the GPU")
    build.add_argument("--device", type=int, default=0, help="CUDA device index")
    build.add_argument("--calib-images", metavar="DIR", default="", help="int8: folder of calibration images")
    build.add_argument("--calib-bag", metavar="BAG", default="", help="int8: rosbag with calibration frames")
    build.add_argument("--calib-topic", default="", help="int8: image topic in --calib-bag")
    build.add_argument("--calib-count", type=int, default=64, help="int8: calibration frames (default 64)")
    build.add_argument("--calib-seed", type=int, default=0, help="int8: which images of the folder")
    build.add_argument("--rebuild", action="store_true", help="rebuild even when a matching engine exists")

    listing = sub.add_parser("list", help="engines in the engines folder and what they were built for")
    listing.add_argument("--out", default="", help="engines folder (default: see engines/README.md)")


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="camera model id (default: the shipped one)")
    parser.add_argument("--models", default="", help="models folder (default: the shipped sensor_codec/models)")
    parser.add_argument("--out", default="", help="engines folder (default: see engines/README.md)")


def run(args: argparse.Namespace) -> int:
    return {"backends": _backends, "fuse": _fuse, "build": _build, "list": _list}[args.action](args)


def _backends(args) -> int:
    from ..learned.runtime import BACKENDS, choose_backend
    from . import registry

    for name in registry.AUTO_ORDER:
        usable, why = registry.probe(name) if registry.gpu_reason()[0] else (False, registry.gpu_reason()[1])
        print(f"{name:18s} {'usable' if usable else 'not usable'}: {why}")
    for name in BACKENDS[1:]:
        print(f"{name:18s} built in (CPU)")
    chosen, why = choose_backend("auto")
    print(f"auto -> {chosen}: {why}")
    return 0


def _fuse(args) -> int:
    from .fused import compare_with_separate, export_fused

    out = default_engines_dir(args.out or None)
    release = export_fused(out, args.model, args.models or None)
    print(f"wrote {release.graph_path('fused_encoder')} ({release.model_id}: "
          f"{release.manifest['backbone']} + {release.manifest['camera']})")
    if args.verify:
        from .calibration import folder_frames

        frames = list(folder_frames(args.verify, args.count))
        report = compare_with_separate(release, frames)
        print(json.dumps(report, indent=2))
        if report["y_max_abs_diff"] > 1e-3 or report["semantic_mismatch_fraction"] > 1e-4:
            print("fused graph disagrees with the separate graphs")
            return 1
    return 0


def _release_for(graph: str, args, out: Path):
    from ..learned.release import find_release
    from .fused import export_fused, load_fused, source_releases

    if graph == "fused_encoder":
        try:
            return load_fused(out, args.model, args.models or None)
        except ConfigError:
            log.info("no fused graph in %s yet: exporting it", out)
            return export_fused(out, args.model, args.models or None)
    camera, backbone = source_releases(args.model, args.models or None)
    return backbone if graph == "backbone" else find_release(camera.model_id, camera.folder)


def build_settings(args: argparse.Namespace):
    """``BuildSettings`` from the ``engines build`` arguments; contradictions are
    ConfigErrors naming the option to change."""
    from .builder import BuildSettings
    from .calibration import CalibrationSource
    from .shapes import Resolution, ShapePlan

    plan = (ShapePlan.parse_dynamic(args.dynamic) if args.dynamic
            else ShapePlan.fixed(Resolution.parse(r) for r in args.resolution))
    if args.calib_images and args.calib_bag:
        raise ConfigError("give --calib-images or --calib-bag, not both")
    if args.calib_bag and not args.calib_topic:
        raise ConfigError(f"--calib-bag {args.calib_bag} needs --calib-topic (the camera image topic)")
    if args.calib_topic and not args.calib_bag:
        raise ConfigError("--calib-topic applies to --calib-bag only")
    calibration = None
    if args.calib_images or args.calib_bag:
        if args.precision != "int8":
            raise ConfigError(f"calibration frames apply to --precision int8 only, not {args.precision}")
        calibration = CalibrationSource(path=args.calib_images or args.calib_bag, topic=args.calib_topic,
                                        count=args.calib_count, seed=args.calib_seed)
    if args.no_gpu_fallback and args.dla_core is None:
        raise ConfigError("--no-gpu-fallback applies to --dla-core builds only")
    return BuildSettings(precision=args.precision, plan=plan, workspace_mib=args.workspace_mib,
                         dla_core=args.dla_core, gpu_fallback=not args.no_gpu_fallback,
                         calibration=calibration, device=args.device)


def _build(args) -> int:
    from .builder import EngineCache

    out = default_engines_dir(args.out or None)
    settings = build_settings(args)
    cache = EngineCache(out, device=args.device)
    for graph in args.graph or ["fused_encoder", "decoder"]:
        release = _release_for(graph, args, out)
        _, decision = cache.load_or_build(release, graph, settings, force=args.rebuild,
                                          models=args.models or None)
        verb = {"load": "up to date", "build": "built", "rebuild": "rebuilt"}[decision.action]
        print(f"{verb}: {decision.path}")
    return 0


def _list(args) -> int:
    out = default_engines_dir(args.out or None)
    engines = sorted(out.glob(f"*{ENGINE_SUFFIX}")) if out.is_dir() else []
    if not engines:
        print(f"no engines in {out}")
        return 0
    for path in engines:
        sidecar = Sidecar.read(path)
        if sidecar is None:
            print(f"{path.name}: no readable sidecar (will be rebuilt)")
            continue
        key = sidecar.key
        print(f"{path.name}: {key.model_id} {key.graph} {key.precision} {key.shape_tag}, TensorRT "
              f"{key.tensorrt_version} on {key.gpu_name} (sm {key.compute_capability}), built "
              f"{sidecar.build.get('built_at', '?')} in {sidecar.build.get('seconds', '?')} s")
    return 0
