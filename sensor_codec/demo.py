"""``sensor-codec demo``: the main job, on built-in data.

Generates the synthetic drive as a rosbag, runs the encoder and decoder
nodes on it through real ROS 2 publish/subscribe (bag player -> encoder ->
decoder, each its own process, FastDDS configured for large messages), lets
``pipeline_probe`` measure what went through, and prints a per-topic table:
raw MB, compressed MB, ratio, quality, latency. A short rate-distortion
benchmark of the same drive writes its plots beside the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import time
from pathlib import Path

from .errors import ConfigError, SensorCodecError
from .frames import Modality
from .graph import (NodeSpec, default_config, fastdds_profile,
                    load_config, pipeline_graph)
from .graph_cli import launch_environment, node_command, stop_all
from .synthetic.cli import parse_size

log = logging.getLogger(__name__)

DEFAULT_DOMAIN_ID = 73
READY_TIMEOUT_S = 60.0
POLL_S = 0.1


class PipelineRunError(SensorCodecError):
    """A node of the demo pipeline failed or never came up."""


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_output"),
                        help="folder for the bag, the report and the plots (default %(default)s)")
    parser.add_argument("--duration", type=float, default=4.0,
                        help="seconds of synthetic drive (default %(default)s)")
    parser.add_argument("--camera-size", default="1920x1080",
                        help="camera resolution WxH (default %(default)s)")
    parser.add_argument("--config", type=Path, default=None,
                        help="pipeline parameters file (default: the installed config/pipeline.yaml)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help=f"ROS_DOMAIN_ID for the run (default: $ROS_DOMAIN_ID or {DEFAULT_DOMAIN_ID})")
    parser.add_argument("--rate", type=float, default=1.0, help="bag replay rate factor")
    parser.add_argument("--no-bench", action="store_true",
                        help="skip the rate-distortion benchmark and its plots")


def run(args: argparse.Namespace) -> int:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    width, height = parse_size(args.camera_size)
    config = args.config or default_config()
    bag = out / "synthetic_drive"
    log.info("writing %.1f s of synthetic drive (%dx%d camera) to %s", args.duration, width,
             height, bag)
    counts = write_synthetic_bag(bag, args.duration, (width, height))
    topics = _probe_topics(config)
    missing = [t for _, t in topics if t not in counts]
    if missing:
        raise ConfigError(f"the pipeline config subscribes to {missing}, which the synthetic "
                          f"drive does not publish (it has {sorted(counts)})")
    report_path = out / "pipeline_report.json"
    expected = {t: counts[t] for _, t in topics}
    report = run_pipeline(bag, config, topics, report_path, expected,
                          domain_id=args.domain_id, rate=args.rate)
    table = format_table(report)
    (out / "pipeline_table.txt").write_text(table + "\n")
    print(table)
    for t in report["topics"]:
        if t["frames_lost"]:
            counters = {k: t[k] for k in ("encoder_drops", "encoder_errors", "decoder_drops",
                                          "decoder_errors") if t.get(k)}
            log.warning("%s: %d of %d frames did not come through; the nodes' /diagnostics "
                        "report %s (a drop is a node's input queue overflowing: it could not "
                        "keep up with the input rate)", t["topic"], t["frames_lost"], t["frames_raw"],
                        counters or "no drops or errors")
    if not args.no_bench:
        plots = bench_drive(bag, out / "rd", [t for _, t in topics])
        for path in plots:
            print(f"plot: {path}")
    print(f"report: {report_path}")
    starved = [t["topic"] for t in report["topics"] if t["frames_decoded"] == 0]
    if starved:
        log.error("no decoded frames on %s", starved)
        return 1
    return 0


def write_synthetic_bag(bag: Path, duration_s: float, camera_size: tuple[int, int]) -> dict[str, int]:
    """Write the drive; returns the message count per topic."""
    from .synthetic.cli import write_drive_bag
    return write_drive_bag(bag, duration_s=duration_s, camera_size=camera_size,
                           overwrite=True)["counts"]


def _probe_topics(config: Path) -> list[tuple[Modality, str]]:
    encoder = load_config(config).get("sensor_codec_encoder", {})
    topics = []
    for modality in (Modality.CAMERA, Modality.LIDAR, Modality.RADAR):
        for topic in encoder.get(f"{modality.label}_topics", []) or []:
            topics.append((modality, "/" + topic.lstrip("/")))
    if not topics:
        raise ConfigError(f"pipeline config {str(config)!r} names no encoder input topics")
    return topics


def run_pipeline(bag: Path, config: Path, topics: list[tuple[Modality, str]], report_path: Path,
                 expected: dict[str, int], *, domain_id: int | None = None, rate: float = 1.0,
                 timeout_s: float = 300.0) -> dict:
    """Probe, encoder and decoder first; the bag player once they are connected."""
    env = launch_environment(fastdds_profile())
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None
                               else os.environ.get("ROS_DOMAIN_ID", DEFAULT_DOMAIN_ID))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ready_file = report_path.with_suffix(".ready")
    ready_file.unlink(missing_ok=True)
    report_path.unlink(missing_ok=True)
    probe = NodeSpec("sensor_codec", "pipeline_probe", "sensor_codec_probe", arguments=[
        *(a for m, t in topics for a in ("--topic", f"{m.label}:{t}={expected[t]}")),
        "--out", str(report_path), "--ready-file", str(ready_file),
        "--timeout", str(timeout_s)])
    specs = pipeline_graph(config, encoder=True, decoder=True, bag=None)
    player = pipeline_graph(config, encoder=True, decoder=False, bag=bag, rate=rate,
                            wait_for_subscribers=30.0)[0]
    # The probe listens to the raw topics too: replay only once both it and
    # the encoder are matched, or the probe would miss the first frames.
    player = dataclasses.replace(player, arguments=[*player.arguments, "--min-subscribers", "2"])
    procs: dict[str, subprocess.Popen] = {}
    try:
        for spec in [probe, *specs]:
            procs[spec.name] = subprocess.Popen(node_command(spec), env=env)
        _wait_for(lambda: ready_file.exists(), procs, READY_TIMEOUT_S,
                  "encoder and decoder to connect to the probe")
        log.info("pipeline connected; replaying %s", bag)
        started = time.monotonic()
        procs[player.name] = subprocess.Popen(node_command(player), env=env)
        _wait_for(lambda: procs[player.name].poll() is not None, procs, timeout_s,
                  "the bag player to finish")
        if procs[player.name].returncode != 0:
            raise PipelineRunError(f"bag player exited with code {procs[player.name].returncode}")
        _wait_for(lambda: procs[probe.name].poll() is not None, procs, timeout_s,
                  "the probe to collect every decoded frame")
        log.info("replay and decoding took %.1f s", time.monotonic() - started)
    finally:
        specs_by_name = {spec.name: spec for spec in [probe, *specs, player]}
        codes = stop_all([(specs_by_name[name], proc) for name, proc in procs.items()],
                         signal.SIGINT)
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        raise PipelineRunError(f"nodes did not exit cleanly: {bad}")
    return json.loads(report_path.read_text())


def _wait_for(condition, procs: dict[str, subprocess.Popen], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for name, proc in procs.items():
            code = proc.poll()
            if code is not None and code != 0:
                raise PipelineRunError(f"{name} exited with code {code} while waiting for {what}")
        if time.monotonic() > deadline:
            raise PipelineRunError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def _fmt(value, spec: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "lossless"
    return f"{value:{spec}}{unit}"


def format_table(report: dict) -> str:
    """The per-topic table the demo prints."""
    header = (f"{'topic':<22} {'codec':<12} {'frames':>9} {'raw MB':>9} {'comp MB':>9} "
              f"{'ratio':>7} {'quality':>22} {'lat p50':>8} {'lat p95':>8}")
    lines = [header, "-" * len(header)]
    for t in report["topics"]:
        codec = t["format"].split(";")[0].rsplit("/", 1)[-1] if t["format"] else "-"
        if t["modality"] == "camera":
            quality = f"PSNR {_fmt(t.get('psnr_mean_db'), '.2f', ' dB')}"
        else:
            quality = f"max err {_fmt(t.get('max_error_m'), '.4f', ' m')}"
        lines.append(
            f"{t['topic']:<22} {codec:<12} {t['frames_decoded']:>4}/{t['frames_raw']:<4} "
            f"{t['raw_bytes'] / 1e6:>9.2f} {t['compressed_bytes'] / 1e6:>9.3f} "
            f"{_fmt(t['ratio'], '.1f'):>7} {quality:>22} "
            f"{_fmt(t['latency_ms_p50'], '.0f', ' ms'):>8} {_fmt(t['latency_ms_p95'], '.0f', ' ms'):>8}")
    return "\n".join(lines)


# A sweep small enough for two CPU cores in about a minute.
DEMO_BENCH_CODECS = ("jpeg:quality=50,75,90", "webp:quality=50,75,90", "avif:quality=40,60,80",
                     "draco:quantization_bits=11,14", "grid:max_error=0.005,0.01,0.02",
                     "radar_quant", "zstd")
DEMO_BENCH_FRAMES = 2


def bench_drive(bag: Path, out: Path, topics: list[str]) -> list[Path]:
    """Rate-distortion sweep over the first frames of the drive; RD plots as PNG."""
    from .bench import plots, runner
    result = runner.run_benchmark(runner.bag_frames(bag, topics, limit=DEMO_BENCH_FRAMES),
                                  runner.parse_codec_specs(DEMO_BENCH_CODECS), geometry=False)
    summary = result.summary()
    out.mkdir(parents=True, exist_ok=True)
    (out / "rd_results.json").write_text(json.dumps(runner.json_ready(
        {"codecs": list(DEMO_BENCH_CODECS), "frames_per_topic": DEMO_BENCH_FRAMES,
         "summary": summary, "skipped": result.skipped}), indent=2))
    return plots.write_rd_plots(summary, out, title="synthetic drive")
