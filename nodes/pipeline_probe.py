"""pipeline_probe: measures a running compress pipeline from the outside.

For each raw topic it subscribes to the raw frames, to the encoder's
``<topic>/sensor_codec`` and to the decoder's ``<topic>/decoded``; it pairs
them by header stamp and records sizes, latency (raw arrival to decoded
arrival, both on this process's clock) and, once the run is over, quality of
each decoded frame against its raw frame. It writes a JSON report when every
expected frame came through, on the deadline, or on SIGINT.

Not part of the vehicle graph: ``sensor-codec demo`` and the pipeline
benchmark start it beside the encoder and decoder nodes.

    pipeline_probe --topic camera:/camera/image_raw --topic lidar:/lidar/points
                   --expect 40 --out report.json [--ready-file F] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image, PointCloud2

from sensor_codec.bench.metrics import cloud_metrics, psnr
from sensor_codec.errors import SensorCodecError
from sensor_codec.frames import Modality
from sensor_codec.messages import header_stamp_ns, image_to_frame, pointcloud2_to_frame
from sensor_codec.nodes._ros_common import ros_process
from sensor_codec.pipeline_stats import percentile

COMPRESSED_SUFFIX = "/sensor_codec"
DECODED_SUFFIX = "/decoded"
SPIN_PERIOD_S = 0.05


@dataclass
class TopicRecord:
    topic: str
    modality: Modality
    raw: dict = field(default_factory=dict)          # stamp -> (arrival s, frame)
    compressed: dict = field(default_factory=dict)   # stamp -> payload bytes
    decoded: dict = field(default_factory=dict)      # stamp -> (arrival s, frame)
    tag: str = ""
    first_raw_s: float | None = None
    last_raw_s: float | None = None
    errors: int = 0


class PipelineProbe(Node):
    def __init__(self, topics: list[tuple[Modality, str]]) -> None:
        super().__init__("sensor_codec_probe")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.records: dict[str, TopicRecord] = {}
        self._subscriptions = []
        for modality, topic in topics:
            rec = TopicRecord(topic, modality)
            self.records[topic] = rec
            raw_type = Image if modality == Modality.CAMERA else PointCloud2
            self._subscriptions += [
                self.create_subscription(raw_type, topic, lambda m, r=rec: self._on_raw(r, m), qos),
                self.create_subscription(CompressedImage, topic + COMPRESSED_SUFFIX,
                                         lambda m, r=rec: self._on_compressed(r, m), qos),
                self.create_subscription(raw_type, topic + DECODED_SUFFIX,
                                         lambda m, r=rec: self._on_decoded(r, m), qos),
            ]

    def _to_frame(self, rec: TopicRecord, msg):
        if rec.modality == Modality.CAMERA:
            return image_to_frame(msg)
        return pointcloud2_to_frame(msg, rec.modality)

    def _on_raw(self, rec: TopicRecord, msg) -> None:
        now = time.monotonic()
        rec.first_raw_s = rec.first_raw_s if rec.first_raw_s is not None else now
        rec.last_raw_s = now
        try:
            rec.raw[header_stamp_ns(msg.header)] = (now, self._to_frame(rec, msg))
        except SensorCodecError:
            rec.errors += 1

    def _on_compressed(self, rec: TopicRecord, msg) -> None:
        rec.tag = msg.format
        rec.compressed[header_stamp_ns(msg.header)] = len(msg.data)

    def _on_decoded(self, rec: TopicRecord, msg) -> None:
        now = time.monotonic()
        try:
            rec.decoded[header_stamp_ns(msg.header)] = (now, self._to_frame(rec, msg))
        except SensorCodecError:
            rec.errors += 1

    def ready(self) -> bool:
        """Encoder and decoder are connected to every topic this probe watches."""
        for topic in self.records:
            if (self.count_subscribers(topic) < 2
                    or self.count_publishers(topic + COMPRESSED_SUFFIX) < 1
                    or self.count_subscribers(topic + COMPRESSED_SUFFIX) < 2
                    or self.count_publishers(topic + DECODED_SUFFIX) < 1):
                return False
        return True

    def complete(self, expected: int) -> bool:
        return expected > 0 and all(len(r.decoded) >= expected for r in self.records.values())


def topic_report(rec: TopicRecord) -> dict:
    """Sizes, rates, latency and quality of one topic, from what the probe saw."""
    pairs = [(s, rec.raw[s], rec.decoded[s]) for s in sorted(rec.raw) if s in rec.decoded]
    latencies = [1000.0 * (dec[0] - raw[0]) for _, raw, dec in pairs]
    raw_bytes = sum(frame.nbytes for _, frame in rec.raw.values())
    compressed = sum(rec.compressed.values())
    span = (rec.last_raw_s or 0) - (rec.first_raw_s or 0)
    out = {
        "topic": rec.topic, "modality": rec.modality.label, "format": rec.tag,
        "frames_raw": len(rec.raw), "frames_compressed": len(rec.compressed),
        "frames_decoded": len(rec.decoded), "frames_paired": len(pairs),
        "raw_bytes": raw_bytes, "compressed_bytes": compressed,
        "ratio": raw_bytes / compressed if compressed else None,
        "input_rate_hz": (len(rec.raw) - 1) / span if span > 0 else None,
        "latency_ms_p50": percentile(latencies, 50) if latencies else None,
        "latency_ms_p95": percentile(latencies, 95) if latencies else None,
        "latency_ms_max": max(latencies) if latencies else None,
        "conversion_errors": rec.errors,
    }
    quality = []
    for stamp, (_, raw), (_, dec) in pairs:
        size = rec.compressed.get(stamp, 0)
        if rec.modality == Modality.CAMERA:
            # PSNR only: MS-SSIM of full-HD frames would take longer than the drive.
            quality.append({"psnr": psnr(raw.pixels, dec.pixels),
                            "bpp": 8.0 * size / (raw.height * raw.width)})
        else:
            quality.append(cloud_metrics(raw, dec, size, geometry=False))
    if rec.modality == Modality.CAMERA and quality:
        psnrs = [q["psnr"] for q in quality]
        out["psnr_mean_db"] = float(np.mean([p for p in psnrs if math.isfinite(p)])) \
            if any(math.isfinite(p) for p in psnrs) else math.inf
        out["psnr_min_db"] = float(min(psnrs))
        out["bpp_mean"] = float(np.mean([q["bpp"] for q in quality]))
    elif quality:
        out["max_error_m"] = float(max(q.get("max_error", math.nan) for q in quality))
        out["mean_error_m"] = float(np.mean([q.get("mean_error", math.nan) for q in quality]))
        out["bits_per_point"] = float(np.mean([q["bits_per_point"] for q in quality]))
        fields: dict[str, float] = {}
        for q in quality:
            for name, err in q.get("field_max_error", {}).items():
                fields[name] = max(fields.get(name, 0.0), err)
        out["field_max_error"] = fields
    return out


def parse_topic(text: str) -> tuple[Modality, str]:
    modality, sep, topic = text.partition(":")
    if not sep or not topic:
        raise argparse.ArgumentTypeError(f"expected MODALITY:TOPIC, got {text!r}")
    try:
        return Modality.parse(modality), topic
    except SensorCodecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--topic", type=parse_topic, action="append", required=True,
                        help="MODALITY:TOPIC of a raw input of the encoder (repeatable)")
    parser.add_argument("--expect", type=int, default=0,
                        help="frames per topic after which the run is complete (0: until timeout)")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="file created once encoder and decoder are connected")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this long (s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else ["pipeline_probe", *argv])
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    with ros_process(argv) as stop:
        node = PipelineProbe(args.topic)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + args.timeout
        announced = False
        try:
            while not stop.is_set() and time.monotonic() < deadline and not node.complete(args.expect):
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
                if not announced and args.ready_file and node.ready():
                    args.ready_file.write_text("ready\n")
                    announced = True
            timed_out = not node.complete(args.expect)
            report = {"complete": not timed_out, "expected_per_topic": args.expect,
                      "topics": [topic_report(r) for r in node.records.values()]}
            args.out.write_text(json.dumps(report, indent=2, allow_nan=True))
        finally:
            executor.remove_node(node)
            node.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
