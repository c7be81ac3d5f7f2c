"""Learned camera codec against the classical codecs on CamVid val (issue 3's bars).

    nice -n 5 .venv/bin/python benchmarks/camera_learned.py --limit 101 --out benchmarks/results

The first ``--limit`` CamVid ``val`` frames (sorted by name; 480x360 RGB, with
their label maps) go through the shipped ``camera_learned`` codec at every
quality level (ONNX Runtime on the CPU; the default model is read from
``sensor_codec/models/defaults.json`` when the run starts and pinned for the
whole run) and through jpeg, webp, avif (speed 8), jpegxl (effort 3) and x265
(all-intra 4:4:4) at the settings of ``benchmarks/reference_codecs.py`` plus
lower-rate settings (``LOW_RATE_SPECS``) that reach the learned codec's range.

Per codec setting (``sensor_codec.bench``: runner, metrics, bdrate, plots):
bpp of the whole payload, PSNR, MS-SSIM, and the backbone's mIoU on the
decoded frames against the CamVid labels (void ignored; the backbone the
learned codec taps, run with ONNX Runtime). The backbone's mIoU on the
original frames is the reference. Then:

* BD-rate (PSNR) and BD-rate (MS-SSIM dB) of the learned codec against each
  classical codec, with the quality range both curves share (a BD-rate is an
  average over that range only; it is flagged when it covers less than half
  of either curve);
* semantic preservation at the lowest level: mIoU(decoded) / mIoU(original);
* charts: mIoU vs bpp (learned, AVIF, JPEG), PSNR vs bpp and MS-SSIM vs bpp
  (all codecs);
* encode / decode ms per 960x720 frame (CamVid frames upscaled 2x,
  bilinear) for the learned codec with ONNX Runtime at ``--threads``.

Writes ``OUT/camera_learned.txt`` (what it prints, the command on top),
``OUT/camera_learned.json`` and ``OUT/camera_learned_*.png``. Needs the
shared data; it is not part of the product or the tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sensor_codec.bench import bdrate, metrics, plots, runner
from sensor_codec.bench.cli import format_table
from sensor_codec.errors import ConfigError, SensorCodecError
from sensor_codec.frames import CameraFrame

LEARNED = "camera_learned"
# The classical sweeps of benchmarks/reference_codecs.py (png left out: lossless)...
REFERENCE_SPECS = (
    "jpeg:quality=30,50,70,85,95",
    "webp:quality=30,50,70,85,95",
    "avif:quality=30,50,65,80:speed=8",
    "jpegxl:quality=30,50,70,85,95:effort=3",
    "x265:qp=22,27,32,37,42:preset=medium",
)
# ... extended down to the learned codec's rates (0.06-1 bpp): the reference
# sweeps start near 0.5 bpp and 29 dB, above the learned codec's PSNR range,
# so BD-rates against JPEG, WebP and JPEG XL had no shared quality range to
# average over. Lowest settings: the smallest each codec makes on CamVid
# (JPEG XL quality 1 and 5, AVIF 1 and 5 gave nearly the same rate).
LOW_RATE_SPECS = (
    "jpeg:quality=2,5,10,15,20",
    "webp:quality=0,5,10,20",
    "avif:quality=5,12,20:speed=8",
    "jpegxl:quality=1,10,20:effort=3",
    "x265:qp=45,48,51:preset=medium",
)
CLASSICAL_SPECS = LOW_RATE_SPECS + REFERENCE_SPECS
ANCHORS = ("jpeg", "webp", "avif", "jpegxl", "x265")
# Issue 3's bars: BD-rate (PSNR) of the learned codec at most these percentages.
BD_RATE_BARS = {"jpeg": -40.0, "webp": -10.0}
PRESERVATION_BAR = 0.90
# Classical settings up to this multiple of the lowest level's bpp are listed
# beside the preservation figure.
NEARBY_RATE_FACTOR = 2.0
MIOU_CHART_CODECS = (LEARNED, "avif", "jpeg")
# A BD-rate whose shared quality range covers less than this share of either
# curve's own range is flagged as resting on a limited overlap.
OVERLAP_WARNING = 0.5
TABLE_EXTRA = (("miou", 4),)

Segmenter = Callable[[np.ndarray], np.ndarray]  # HxWx3 uint8 RGB -> HxW class ids


def learned_spec(model_id: str, levels: Sequence[int], threads: int) -> str:
    return (f"{LEARNED}:quality={','.join(map(str, levels))}:backend=onnxruntime"
            f":model={model_id}:threads={threads}")


class SegmentationScorer:
    """The runner's ``extra_metrics`` hook: a segmenter's map of the decoded frame
    against the frame's labels (``metrics.segmentation_metrics``)."""

    def __init__(self, segment: Segmenter, num_classes: int) -> None:
        self.segment = segment
        self.num_classes = num_classes

    def __call__(self, item: runner.BenchFrame, decoded: CameraFrame) -> dict:
        if item.labels is None:
            raise ConfigError(f"frame {item.frame_key} has no label map; mIoU needs CamVid "
                              "labels (runner.camvid_frames(..., labels=True))")
        return metrics.segmentation_metrics(self.segment(decoded.to_rgb8()), item.labels,
                                            self.num_classes)

    def original(self, frames: Sequence[runner.BenchFrame]) -> dict:
        """mIoU of the segmenter on the uncompressed frames (summed confusion)."""
        conf = np.sum([np.asarray(self(item, item.frame)["confusion"], np.int64)
                       for item in frames], axis=0)
        miou, class_iou = metrics.iou_from_confusion(conf)
        return {"miou": miou, "class_iou": [None if np.isnan(v) else float(v)
                                            for v in class_iou], "frames": len(frames)}


def _comparisons(summary: list[dict], learned: str) -> list[dict]:
    """compare_codecs of the learned codec against each anchor, with the shared
    quality range of every BD-rate and a flag when it is small."""
    out = []
    for anchor in ANCHORS:
        for row in bdrate.compare_codecs(summary, anchor, learned):
            quality = row["quality"]
            _, anchor_q = bdrate.summary_curve(summary, anchor, row["rate"], quality)
            _, test_q = bdrate.summary_curve(summary, learned, row["rate"], quality)
            try:
                row["overlap"] = bdrate.quality_overlap(anchor_q, test_q)
            except ConfigError as exc:
                row["overlap_error"] = str(exc)
            else:
                row["limited_overlap"] = min(row["overlap"]["anchor_fraction"],
                                             row["overlap"]["test_fraction"]) < OVERLAP_WARNING
            bar = BD_RATE_BARS.get(anchor) if quality == "psnr" else None
            if bar is not None:
                row["bar_percent"] = bar
                row["bar_met"] = (row["bd_rate_percent"] <= bar if "bd_rate_percent" in row
                                  else None)
            out.append(row)
    return out


def evaluate(frames: Sequence[runner.BenchFrame], settings: Sequence[runner.CodecSetting],
             segment: Segmenter, num_classes: int, *, progress=None) -> dict:
    """The benchmark's core: RD + mIoU per setting, BD-rates, semantic preservation."""
    scorer = SegmentationScorer(segment, num_classes)
    original = scorer.original(frames)
    result = runner.run_benchmark(frames, settings, extra_metrics=scorer, progress=progress)
    if not result.records:
        raise ConfigError(f"nothing was measured over {result.frames} frame(s); skipped: "
                          f"{result.skipped}")
    summary = result.summary()
    learned_rows = [r for r in summary if r["codec"] == LEARNED]
    preservation = None
    if learned_rows:
        lowest = min(learned_rows, key=lambda r: r["settings"].get("quality", 0))
        ratio = (lowest["miou"] / original["miou"]
                 if original["miou"] and np.isfinite(original["miou"]) else float("nan"))
        # What the classical codecs keep at comparable rates: the bar's context.
        nearby = sorted((r for r in summary if r["codec"] != LEARNED
                         and r["bpp"] <= NEARBY_RATE_FACTOR * lowest["bpp"]),
                        key=lambda r: r["bpp"])
        preservation = {"level": lowest["settings"].get("quality"), "bpp": lowest["bpp"],
                        "miou_decoded": lowest["miou"], "miou_original": original["miou"],
                        "ratio": ratio, "bar": PRESERVATION_BAR,
                        "bar_met": bool(ratio >= PRESERVATION_BAR),
                        "classical_nearby": [
                            {"codec": r["codec"], "setting": r["setting"], "bpp": r["bpp"],
                             "miou": r["miou"], "ratio": r["miou"] / original["miou"]}
                            for r in nearby]}
    return {"frames": result.frames, "summary": summary, "original": original,
            "bd_rates": _comparisons(summary, LEARNED) if learned_rows else [],
            "preservation": preservation, "skipped": result.skipped}


def _upsample_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """2x linear upsampling with pixel centres aligned (as image resizers do): output
    2k and 2k+1 sit at k - 1/4 and k + 1/4 of the input; borders repeat."""
    prev = np.concatenate([np.take(x, [0], axis), np.take(x, range(x.shape[axis] - 1), axis)], axis)
    nxt = np.concatenate([np.take(x, range(1, x.shape[axis]), axis), np.take(x, [-1], axis)], axis)
    even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
    return np.stack([even, odd], axis=axis + 1).reshape(
        x.shape[:axis] + (2 * x.shape[axis],) + x.shape[axis + 1:])


def upscale_2x(rgb: np.ndarray) -> np.ndarray:
    """Bilinear 2x upscale (480x360 -> 960x720), a stand-in for a 960x720 camera."""
    up = _upsample_axis(_upsample_axis(rgb.astype(np.float64), 0), 1)
    return np.ascontiguousarray(np.clip(np.rint(up), 0, 255).astype(np.uint8))


def time_learned(frames: Sequence[CameraFrame], model_id: str, levels: Sequence[int],
                 threads: int, repeats: int) -> dict:
    """Median encode, decode, and decode + semantic map ms per frame and level
    (the codec's whole path: container, entropy coding, ONNX Runtime graphs)."""
    from sensor_codec.codecs import get_codec

    per_level = {}
    for level in levels:
        codec = get_codec(LEARNED, quality=level, backend="onnxruntime", model=model_id,
                          threads=threads)
        codec.decode(codec.encode(frames[0]))  # warm-up: sessions, first-run allocations
        enc, dec, dec_sem = [], [], []
        for _ in range(repeats):
            for frame in frames:
                t0 = time.perf_counter()
                payload = codec.encode(frame)
                t1 = time.perf_counter()
                codec.decode(payload)
                t2 = time.perf_counter()
                codec.decode_with_semantic(payload)
                t3 = time.perf_counter()
                enc.append(1e3 * (t1 - t0))
                dec.append(1e3 * (t2 - t1))
                dec_sem.append(1e3 * (t3 - t2))
        per_level[level] = {"encode_ms": statistics.median(enc), "decode_ms": statistics.median(dec),
                            "decode_semantic_ms": statistics.median(dec_sem), "samples": len(enc)}
    return {"width": frames[0].width, "height": frames[0].height, "threads": threads,
            "repeats": repeats, "frames": len(frames), "per_level": per_level,
            "median_encode_ms": statistics.median(v["encode_ms"] for v in per_level.values()),
            "median_decode_ms": statistics.median(v["decode_ms"] for v in per_level.values()),
            "median_decode_semantic_ms": statistics.median(
                v["decode_semantic_ms"] for v in per_level.values())}


def write_charts(report: dict, out: Path) -> list[Path]:
    summary = report["summary"]
    original = report["original"]["miou"]
    n = report["frames"]
    written = []
    chart_rows = [r for codec in MIOU_CHART_CODECS for r in summary if r["codec"] == codec]
    for path in (
            plots.rd_plot(chart_rows, "bpp", "miou", out / "camera_learned_miou_vs_bpp.png",
                          title=f"Backbone mIoU on decoded CamVid val ({n} frames)",
                          xlabel="bits per pixel", ylabel="mIoU (void ignored)",
                          modality="camera",
                          references={f"original frames ({original:.3f})": original}),
            plots.rd_plot(summary, "bpp", "psnr", out / "camera_learned_psnr_vs_bpp.png",
                          title=f"CamVid val ({n} frames): PSNR", xlabel="bits per pixel",
                          ylabel="PSNR RGB (dB)", modality="camera"),
            plots.rd_plot(summary, "bpp", "ms_ssim_db", out / "camera_learned_ms_ssim_vs_bpp.png",
                          title=f"CamVid val ({n} frames): MS-SSIM", xlabel="bits per pixel",
                          ylabel="MS-SSIM (dB) = -10 log10(1 - MS-SSIM)", modality="camera")):
        if path is not None:
            written.append(path)
    return written


def _pct(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f} %"


def format_report(report: dict) -> str:
    # The learned rows' settings name backend, model and threads too; shown once in the header.
    shown = [dict(r, setting=f"quality={r['settings']['quality']}") if r["codec"] == LEARNED else r
             for r in report["summary"]]
    lines = [format_table(shown, TABLE_EXTRA).rstrip("\n"), ""]
    from sensor_codec.learned.backbone_meta import CLASS_NAMES

    original = report["original"]
    lines.append(f"Backbone {report['backbone_id']} on the original frames: mIoU "
                 f"{_pct(original['miou'])} ({original['frames']} frames)")
    lines.append("")
    lines.append("BD-rates of camera_learned (pchip over the shared quality range; negative = "
                 "fewer bits for the same quality):")
    for row in report["bd_rates"]:
        name = "PSNR" if row["quality"] == "psnr" else "MS-SSIM dB"
        rate = (f"{row['bd_rate_percent']:+7.1f} %" if "bd_rate_percent" in row else "    n/a  ")
        text = f"  vs {row['anchor']:7s} BD-rate ({name:10s}) {rate}"
        ov = row.get("overlap")
        if ov is not None and ov["high"] > ov["low"]:
            text += (f"  shared {ov['low']:.2f}..{ov['high']:.2f}: "
                     f"{100 * ov['test_fraction']:.0f} % of learned range, "
                     f"{100 * ov['anchor_fraction']:.0f} % of {row['anchor']}'s"
                     + (" [LIMITED OVERLAP]" if row.get("limited_overlap") else ""))
        elif "bd_rate_percent" not in row:
            text += f"  ({row.get('bd_rate_error') or row.get('overlap_error')})"
        if "bar_percent" in row:
            verdict = {True: "met", False: "NOT met", None: "not measurable"}[row["bar_met"]]
            text += f"  bar <= {row['bar_percent']:.0f} %: {verdict}"
        lines.append(text)
    sp = report["preservation"]
    if sp is not None:
        lines += ["", f"Semantic preservation at the lowest level ({sp['level']}, "
                      f"{sp['bpp']:.3f} bpp): mIoU decoded {_pct(sp['miou_decoded'])} / original "
                      f"{_pct(sp['miou_original'])} = {_pct(sp['ratio'])} "
                      f"(bar >= {100 * sp['bar']:.0f} %: {'met' if sp['bar_met'] else 'NOT met'})"]
        lowest = next(r for r in report["summary"] if r["codec"] == LEARNED
                      and r["settings"].get("quality") == sp["level"])
        lines.append("  per-class IoU original / decoded: " + ", ".join(
            f"{name} {_pct(a)}/{_pct(b)}" for name, a, b
            in zip(CLASS_NAMES, original["class_iou"], lowest["class_iou"])))
        nearby = sp.get("classical_nearby") or []
        lines.append(f"  classical codecs at up to {NEARBY_RATE_FACTOR:g}x that rate (mIoU decoded "
                     "/ original): " + (", ".join(
                         f"{r['codec']} {r['setting']} {r['bpp']:.3f} bpp {_pct(r['ratio'])}"
                         for r in nearby) or "none in the sweeps"))
    timing = report.get("timing")
    if timing:
        lines += ["", f"camera_learned per {timing['width']}x{timing['height']} frame, ONNX Runtime "
                      f"CPU, {timing['threads']} thread(s), median of {timing['frames']} frame(s) x "
                      f"{timing['repeats']} repeat(s) (load average before: "
                      f"{timing['load_average']}):",
                  "  level  encode ms  decode ms  decode+semantic map ms"]
        for level, t in timing["per_level"].items():
            lines.append(f"  {level:>5}  {t['encode_ms']:9.1f}  {t['decode_ms']:9.1f}  "
                         f"{t['decode_semantic_ms']:22.1f}")
        lines.append(f"  median over levels: encode {timing['median_encode_ms']:.1f} ms, decode "
                     f"{timing['median_decode_ms']:.1f} ms, decode + semantic map "
                     f"{timing['median_decode_semantic_ms']:.1f} ms")
    return "\n".join(lines) + "\n"


def _levels(text: str | None, count: int) -> list[int]:
    if text is None:
        return list(range(count))
    try:
        levels = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ConfigError(f"--levels takes comma-separated integers, got {text!r}") from None
    bad = [v for v in levels if not 0 <= v < count]
    if not levels or bad:
        raise ConfigError(f"--levels {text!r}: the model has levels 0..{count - 1}")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"),
                        help="the shared data folder (default ../shared/data)")
    parser.add_argument("--limit", type=int, default=20, help="CamVid val frames (default 20 of 101)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/camera_learned"),
                        help="output folder (default bench-results/camera_learned)")
    parser.add_argument("--levels", default=None,
                        help="learned codec quality levels, e.g. 0,2,4 (default: all the model has)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="ONNX Runtime intra-op threads (default: this machine's CPUs, "
                             f"{os.cpu_count()})")
    parser.add_argument("--model", default="default",
                        help="camera model id (default: the one defaults.json names at start)")
    parser.add_argument("--timing-frames", type=int, default=3,
                        help="frames for the 960x720 timing (default 3; 0 skips it)")
    parser.add_argument("--timing-repeats", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    log = logging.getLogger("camera_learned")
    if not (args.data / "camvid").is_dir():
        sys.stderr.write(f"no shared data at {args.data} (pass --data)\n")
        return 2
    if args.limit < 1 or args.threads < 1:
        sys.stderr.write("--limit and --threads must be at least 1\n")
        return 2
    started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = shlex.join([os.path.relpath(sys.executable), sys.argv[0],
                          *(sys.argv[1:] if argv is None else argv)])
    try:
        from sensor_codec.learned.backbone_meta import NUM_CLASSES
        from sensor_codec.learned.release import default_release, resolve_release
        from sensor_codec.learned.runtime import BackboneRunner

        camera = resolve_release("camera", args.model)  # pinned: defaults.json may change later
        backbone = BackboneRunner(camera.manifest["backbone"], "onnxruntime", threads=args.threads)
        default_backbone = default_release("backbone").model_id
        levels = _levels(args.levels, int(camera.manifest["levels"]))
        settings = runner.parse_codec_specs(
            (learned_spec(camera.model_id, levels, args.threads),) + CLASSICAL_SPECS)
        frames = list(runner.camvid_frames(args.data / "camvid", "val", args.limit, labels=True))
        log.info("camera model %s, backbone %s, levels %s, %d frames, %d threads",
                 camera.model_id, backbone.model_id, levels, len(frames), args.threads)
        started = time.perf_counter()
        report = evaluate(frames, settings, lambda rgb: backbone.segment(rgb).semantic, NUM_CLASSES,
                          progress=lambda i, key: log.info("camvid %d/%d %s", i + 1,
                                                           len(frames), key))
        rd_seconds = time.perf_counter() - started
        if args.timing_frames > 0:
            big = [CameraFrame(upscale_2x(item.frame.to_rgb8()), "rgb8", 0, item.frame_key)
                   for item in frames[:args.timing_frames]]
            load = os.getloadavg()
            log.info("timing %d frame(s) at %dx%d", len(big), big[0].width, big[0].height)
            report["timing"] = time_learned(big, camera.model_id, levels, args.threads,
                                            args.timing_repeats)
            report["timing"]["load_average"] = " ".join(f"{v:.2f}" for v in load)
    except SensorCodecError as exc:
        sys.stderr.write(f"camera_learned: error: {exc}\n")
        return 2
    total_seconds = time.perf_counter() - started
    report.update(camera_id=camera.model_id, backbone_id=backbone.model_id,
                  default_backbone_id=default_backbone, levels=levels, threads=args.threads,
                  codecs=[learned_spec(camera.model_id, levels, args.threads), *CLASSICAL_SPECS],
                  command=command, machine=platform.platform(), cpus=os.cpu_count(),
                  started_utc=started_utc,
                  rd_seconds=rd_seconds, total_seconds=total_seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    charts = write_charts(report, args.out)
    report["charts"] = [p.name for p in charts]
    header = [f"$ {command}",
              f"camera model {camera.model_id} (backbone {backbone.model_id}"
              + ("" if backbone.model_id == default_backbone
                 else f"; NOTE: defaults.json's backbone is {default_backbone}") + ")",
              f"CamVid val, first {report['frames']} frames (sorted by name), 480x360 RGB; "
              f"{platform.machine()} with {os.cpu_count()} CPUs shared with other jobs "
              "(times are indicative)",
              f"RD + mIoU part {rd_seconds:.0f} s, total {total_seconds:.0f} s; enc_ms / dec_ms in "
              "the table are per 480x360 frame", ""]
    text = "\n".join(header) + "\n" + format_report(report) + "\nwrote " + ", ".join(
        str(p) for p in [args.out / "camera_learned.json", *charts]) + "\n"
    sys.stdout.write(text)
    (args.out / "camera_learned.txt").write_text(text)
    (args.out / "camera_learned.json").write_text(
        json.dumps(runner.json_ready(report), indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
