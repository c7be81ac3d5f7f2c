"""Milliseconds per 960x720 frame of the learned camera codec on each usable backend.

    .venv/bin/python benchmarks/backends.py [--repeats 10] [--threads 2]
        [--width 960 --height 720] [--models DIR] [--backend NAME ...] [--json out.json]

    # on a GPU machine (issue 5's GPU bar: 1920x1080 encode >= 30 frames/s in fp16)
    python benchmarks/backends.py --width 1920 --height 1080 --backend tensorrt:precision=fp16 \
        --backend torch-cuda:fp16,channels_last,cuda_graphs --backend onnxruntime-cuda

Measured side by side in one run, same frame, same thread count (issue 5's
CPU bar: ONNX Runtime encode, backbone plus camera branch, no slower than
PyTorch eager):

* ``backbone``: the segmentation graph alone (semantic map + tap);
* ``backbone+encoder graphs``: the networks of one encode, run as the two
  released graphs (backbone, then camera encoder on the padded tap);
* ``fused graph``: the same work as one graph (``sensor_codec.engines.fused``,
  the graph the TensorRT engine is built from);
* ``encode``: a whole ``compress`` (networks + quality map + entropy coding);
  ``encode (fused)`` the same through the fused graph;
* ``decode``: ``decompress`` without / with regenerating the semantic map.

GPU backends (tensorrt, onnxruntime-cuda, torch-cuda, with their options)
are measured when they are usable on this machine and named with
``--backend``; the median of
``--repeats`` runs after one warm-up is reported; backends alternate within
each repeat so that other jobs on a shared machine slow them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# PyTorch's OpenMP threads spin after each op by default and then starve the numpy
# (BLAS) and ONNX Runtime work that follows in the same process: measured here, a
# 960x720 PyTorch encode took 2.7 s spinning and 0.39 s passive. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
CAMVID_VAL = REPO.parent / "shared" / "data" / "camvid" / "val"


def interleaved_medians(work: dict[str, dict], repeats: int) -> dict[str, dict[str, float]]:
    """Median ms per backend and column; backends alternate within each repeat, so a
    load change on a shared machine hits all of them alike."""
    samples: dict[str, dict[str, list[float]]] = {b: {c: [] for c in cols} for b, cols in work.items()}
    columns = list(dict.fromkeys(c for cols in work.values() for c in cols))
    for column in columns:
        for cols in work.values():
            if column in cols:
                cols[column]()  # warm-up: sessions, allocations, cuDNN / engine selection
        for _ in range(repeats):
            for backend, cols in work.items():
                if column in cols:
                    started = time.perf_counter()
                    cols[column]()
                    samples[backend][column].append((time.perf_counter() - started) * 1000.0)
    return {b: {c: statistics.median(v) for c, v in cols.items()} for b, cols in samples.items()}


def test_frame(width: int, height: int) -> np.ndarray:
    """A CamVid val frame scaled to the size (nearest) when present, else a seeded synthetic one."""
    if CAMVID_VAL.is_dir():
        import imagecodecs

        from sensor_codec.engines.calibration import fit_to_resolution
        from sensor_codec.engines.shapes import Resolution

        image = imagecodecs.imread(str(min(CAMVID_VAL.glob("*.png"))))[..., :3]
        return fit_to_resolution(image, Resolution(width, height))
    sys.path.insert(0, str(REPO / "test"))
    from conftest import synthetic_rgb

    return synthetic_rgb(height, width, seed=0)


def tasks(backend: str, rgb: np.ndarray, args, fused_dir: Path, camera_available: bool) -> dict:
    """{column: callable} for one backend (sessions, engines and modules set up here)."""
    from sensor_codec.learned.runtime import BackboneRunner, image_to_input

    row: dict = {}
    if not camera_available:
        runner = BackboneRunner(backend=backend, threads=args.threads, models=args.models or None)
        image = image_to_input(rgb)
        row["backbone"] = lambda: runner.backend.run("backbone", {"image": image})
        return row
    from sensor_codec.engines.fused import FusedEncoder, fused_feeds, load_fused
    from sensor_codec.learned.camera_runtime import LearnedCameraRuntime, _pad_to
    from sensor_codec.learned.runtime import make_backend

    runtime = LearnedCameraRuntime(models=args.models or None, backend=backend, threads=args.threads)
    level = runtime.levels // 2
    image = image_to_input(rgb)
    row["backbone"] = lambda: runtime.backbone.backend.run("backbone", {"image": image})

    seg = runtime.backbone.segment(rgb)
    hp, wp = runtime.padded_shape(*rgb.shape[:2])
    qmap = _pad_to(runtime.importance.quality_levels(seg.semantic), hp // 32, wp // 32)
    gain = runtime._gain_maps(level, qmap, inverse=False)

    def separate_graphs():
        _, tap = runtime.backbone.backend.run("backbone", {"image": image})
        padded = _pad_to(rgb.transpose(2, 0, 1), hp, wp)[None].astype(np.float32) / np.float32(255.0)
        runtime.backend.run("encoder", {"image": padded, "tap": _pad_to(tap[0], hp // 8, wp // 8)[None],
                                        "gain": gain})

    row["backbone+encoder graphs"] = separate_graphs
    fused = load_fused(fused_dir, None, args.models or None)
    fused_backend = make_backend(fused, backend, args.threads)
    feeds = fused_feeds(runtime, rgb, level)
    row["fused graph"] = lambda: fused_backend.run("fused_encoder", feeds)
    row["encode"] = lambda: runtime.compress(rgb, level)
    fused_encoder = FusedEncoder(runtime, fused, backend, args.threads)
    row["encode (fused)"] = lambda: fused_encoder.compress(rgb, level)
    packed = runtime.compress(rgb, level)
    row["decode"] = lambda: runtime.decompress(packed.sections, packed.metadata, with_semantic=False)
    row["decode + semantic"] = lambda: runtime.decompress(packed.sections, packed.metadata)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per backend (0 = library default)")
    parser.add_argument("--models", default="", help="models folder (default: the shipped one)")
    parser.add_argument("--backend", action="append", dest="backends",
                        help="backend to measure (repeatable; default onnxruntime and torch); GPU ones "
                             "take options, e.g. torch-cuda:fp16,channels_last,cuda_graphs")
    parser.add_argument("--json", default="", help="also write the numbers here")
    args = parser.parse_args(argv)

    from sensor_codec.engines import registry
    from sensor_codec.errors import UnknownModelError
    from sensor_codec.learned.release import resolve_release

    try:
        resolve_release("camera", None, args.models or None)
        camera_available = True
    except UnknownModelError as exc:
        print(f"note: {exc}; measuring the backbone only")
        camera_available = False
    rgb = test_frame(args.width, args.height)
    results: dict = {"frame": f"{args.width}x{args.height}", "threads": args.threads, "repeats": args.repeats,
                     "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                     "load_average_before": os.getloadavg(), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                     "backends": {}}
    with tempfile.TemporaryDirectory() as fused_dir:
        if camera_available:
            from sensor_codec.engines.fused import export_fused

            fused = export_fused(fused_dir, None, args.models or None)
            results["models"] = {"camera": fused.manifest["camera"], "backbone": fused.manifest["backbone"]}
        work: dict[str, dict] = {}
        for backend in args.backends or ["onnxruntime", "torch"]:
            if registry.is_registered(backend):
                usable, why = registry.probe(backend)
                if not usable:
                    print(f"{backend}: skipped ({why})")
                    results["backends"][backend] = {"skipped": why}
                    continue
            work[backend] = tasks(backend, rgb, args, Path(fused_dir), camera_available)
        results["backends"].update(interleaved_medians(work, args.repeats))
    measured = {name: row for name, row in results["backends"].items() if "skipped" not in row}
    columns = list(next(iter(measured.values()), {}).keys())
    print(f"\nms per {results['frame']} frame (median of {args.repeats}, {args.threads} threads, "
          f"{results['cpu']}, {results['cores']} cores, load average before "
          f"{results['load_average_before'][0]:.1f}, after {os.getloadavg()[0]:.1f})")
    print(f"{'':26s}" + "".join(f"{name:>16s}" for name in measured))
    for column in columns:
        cells = "".join(f"{row[column]:16.1f}" for row in measured.values())
        print(f"{column:26s}{cells}")
    if measured and "encode" in columns:
        print(f"{'encode frames/s':26s}" + "".join(f"{1000.0 / row['encode']:16.1f}" for row in measured.values()))
    if "onnxruntime" in measured and "torch" in measured:
        for column in ("backbone+encoder graphs", "fused graph", "encode", "backbone"):
            if column in measured["onnxruntime"]:
                ort, pt = measured["onnxruntime"][column], measured["torch"][column]
                verdict = "meets" if ort <= pt else "MISSES"
                print(f"CPU bar ({column}): ONNX Runtime {ort:.1f} ms vs PyTorch eager {pt:.1f} ms -> {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
