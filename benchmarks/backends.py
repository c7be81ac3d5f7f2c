"""Milliseconds per frame of the learned camera codec, each backend side by side, at several sizes.

    .venv/bin/python benchmarks/backends.py [--size 960x720 --size 1920x1080] [--repeats 7]
        [--threads 2] [--models DIR] [--backend NAME ...] [--json out.json]

    # on a GPU machine (issue 5's GPU bar: 1920x1080 encode >= 30 frames/s in fp16)
    python benchmarks/backends.py --size 1920x1080 --backend tensorrt:precision=fp16 \
        --backend torch-cuda:fp16,channels_last,cuda_graphs --backend onnxruntime-cuda

Every backend and every size is measured in one run, on the same frame (a CamVid
val frame scaled to the size, or the synthetic street scene without the data),
with the same thread count, so the columns compare like with like (issue 5's CPU
bar: ONNX Runtime encode, backbone plus camera branch, no slower than PyTorch eager;
and "CPU ms per frame for each CPU backend", encoder and decoder):

* ``backbone``: the segmentation graph alone (semantic map + tap);
* ``encoder networks (2 graphs)``: the networks of one encode as the two released
  graphs (backbone, then the camera encoder on the padded tap);
* ``encoder networks (fused)``: the same work as one graph (``sensor_codec.engines.fused``,
  the graph the TensorRT engine is built from);
* ``encode``: a whole ``compress`` (networks + quality map + entropy coding);
  ``encode (fused)`` the same through the fused graph;
* ``decoder network``: the synthesis graph alone, on the feeds ``decompress`` gives it;
* ``decode``: a whole ``decompress`` without the semantic map; ``decode + semantic``
  with it (the backbone on the decoded picture).

GPU backends (tensorrt, onnxruntime-cuda, torch-cuda, with their options) are
measured when usable here and named with ``--backend``. The median of
``--repeats`` runs after one warm-up is reported; backends alternate within each
repeat so that other jobs on a shared machine slow them alike.
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
    from sensor_codec.engines.calibration import RecordingBackend
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

    row["encoder networks (2 graphs)"] = separate_graphs
    fused = load_fused(fused_dir, None, args.models or None)
    fused_backend = make_backend(fused, backend, args.threads)
    feeds = fused_feeds(runtime, rgb, level)
    row["encoder networks (fused)"] = lambda: fused_backend.run("fused_encoder", feeds)
    row["encode"] = lambda: runtime.compress(rgb, level)
    fused_encoder = FusedEncoder(runtime, fused, backend, args.threads)
    row["encode (fused)"] = lambda: fused_encoder.compress(rgb, level)
    packed = runtime.compress(rgb, level)
    # The decoder graph's feeds exactly as decompress builds them (whatever the graph's inputs).
    inner = runtime.backend
    runtime.backend = recorder = RecordingBackend(inner, "decoder")
    runtime.decompress(packed.sections, packed.metadata, with_semantic=False)
    runtime.backend = inner
    decoder_feeds = recorder.recorded.pop()
    row["decoder network"] = lambda: inner.run("decoder", decoder_feeds)
    row["decode"] = lambda: runtime.decompress(packed.sections, packed.metadata, with_semantic=False)
    row["decode + semantic"] = lambda: runtime.decompress(packed.sections, packed.metadata)
    return row


def parse_size(text: str) -> tuple[int, int]:
    from sensor_codec.engines.shapes import Resolution

    resolution = Resolution.parse(text)
    return resolution.width, resolution.height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", dest="sizes", type=parse_size, metavar="WxH",
                        help="frame size (repeatable; default 960x720 and 1920x1080)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per backend (0 = library default)")
    parser.add_argument("--models", default="", help="models folder (default: the shipped one)")
    parser.add_argument("--backend", action="append", dest="backends",
                        help="backend to measure (repeatable; default onnxruntime and torch); GPU ones "
                             "take options, e.g. torch-cuda:fp16,channels_last,cuda_graphs")
    parser.add_argument("--json", default="", help="also write the numbers here")
    args = parser.parse_args(argv)
    sizes = args.sizes or [(960, 720), (1920, 1080)]

    from sensor_codec.engines import registry
    from sensor_codec.errors import UnknownModelError
    from sensor_codec.learned.release import resolve_release

    try:
        resolve_release("camera", None, args.models or None)
        camera_available = True
    except UnknownModelError as exc:
        print(f"note: {exc}; measuring the backbone only")
        camera_available = False
    results: dict = {"threads": args.threads, "repeats": args.repeats,
                     "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                     "load_average_before": os.getloadavg(), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                     "frame": "CamVid val (scaled)" if CAMVID_VAL.is_dir() else "synthetic street scene",
                     "sizes": {}, "skipped": {}}
    backends = []
    for backend in args.backends or ["onnxruntime", "torch"]:
        if registry.is_registered(backend):
            usable, why = registry.probe(backend)
            if not usable:
                print(f"{backend}: skipped ({why})")
                results["skipped"][backend] = why
                continue
        backends.append(backend)
    with tempfile.TemporaryDirectory() as fused_dir:
        if camera_available:
            from sensor_codec.engines.fused import export_fused

            fused = export_fused(fused_dir, None, args.models or None)
            results["models"] = {"camera": fused.manifest["camera"], "backbone": fused.manifest["backbone"]}
        for width, height in sizes:
            rgb = test_frame(width, height)
            work = {backend: tasks(backend, rgb, args, Path(fused_dir), camera_available) for backend in backends}
            results["sizes"][f"{width}x{height}"] = interleaved_medians(work, args.repeats)
            del work  # sessions and modules of this size
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def report(results: dict, args) -> None:
    sizes = list(results["sizes"])
    backends = list(next(iter(results["sizes"].values()), {}))
    columns = list(dict.fromkeys(c for size in sizes for row in results["sizes"][size].values() for c in row))
    models = results.get("models", {})
    print(f"\nms per frame, median of {args.repeats} after a warm-up, {args.threads} threads, "
          f"{results['cpu']}, {results['cores']} cores, load average before "
          f"{results['load_average_before'][0]:.1f}, after {os.getloadavg()[0]:.1f}; frame: {results['frame']}; "
          f"camera {models.get('camera', '-')}, backbone {models.get('backbone', '-')}")
    cell = 13
    print(f"{'':28s}" + "".join(f"{size:^{cell * len(backends)}s}" for size in sizes))
    print(f"{'':28s}" + "".join(f"{b:>{cell}s}" for _ in sizes for b in backends))
    for column in columns:
        cells = "".join(f"{results['sizes'][size][b].get(column, float('nan')):{cell}.1f}"
                        for size in sizes for b in backends)
        print(f"{column:28s}{cells}")
    for label, column in (("encode frames/s", "encode"), ("decode frames/s", "decode")):
        if column in columns:
            cells = "".join(f"{1000.0 / results['sizes'][size][b][column]:{cell}.2f}" for size in sizes for b in backends)
            print(f"{label:28s}{cells}")
    if "onnxruntime" in backends and "torch" in backends:
        for size in sizes:
            rows = results["sizes"][size]
            for column in ("encoder networks (2 graphs)", "encoder networks (fused)", "encode", "backbone"):
                if column in rows["onnxruntime"]:
                    ort, pt = rows["onnxruntime"][column], rows["torch"][column]
                    verdict = "meets" if ort <= pt else "MISSES"
                    print(f"CPU bar at {size} ({column}): ONNX Runtime {ort:.1f} ms vs PyTorch eager "
                          f"{pt:.1f} ms -> {verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
