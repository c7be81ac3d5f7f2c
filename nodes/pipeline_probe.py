"""pipeline_probe: measures a running compress pipeline from the outside.

For each raw topic it subscribes to the raw frames, to the encoder's
``<topic>/sensor_codec`` and to the decoder's ``<topic>/decoded``; it pairs
them by header stamp and records sizes, latency (raw arrival to decoded
arrival, both on this process's clock) and, once the run is over, quality of
each decoded frame against its raw frame. It writes a JSON report when every
expected frame came through, on the deadline, or on SIGINT.

Not part of the vehicle graph: ``sensor-codec demo`` and the pipeline
benchmark start it beside the encoder and decoder nodes.

    pipeline_probe --topic camera:/camera/image_raw=40 --topic lidar:/lidar/points=40
                   --out report.json [--ready-file F] [--timeout S] [--idle-timeout S]
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
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args
from diagnostic_msgs.msg import DiagnosticArray
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
    expected: int = 0                                 # frames that complete the topic
    raw: dict = field(default_factory=dict)          # stamp -> (arrival s, bytes, pixels/points)
    compressed: dict = field(default_factory=dict)   # stamp -> payload bytes
    decoded: dict = field(default_factory=dict)      # stamp -> arrival s
    # Frames wait here only until their counterpart arrives; the pair is then
    # measured and dropped, so memory does not grow with the length of the run.
    waiting_raw: dict = field(default_factory=dict)      # stamp -> frame
    waiting_decoded: dict = field(default_factory=dict)  # stamp -> frame
    quality: dict = field(default_factory=dict)          # stamp -> metrics of the pair
    tag: str = ""
    first_raw_s: float | None = None
    last_raw_s: float | None = None
    errors: int = 0


class PipelineProbe(Node):
    def __init__(self, topics: list[tuple[Modality, str, int]]) -> None:
        super().__init__("sensor_codec_probe")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.records: dict[str, TopicRecord] = {}
        self.last_message_s: float | None = None
        # Latest /diagnostics values per reported topic (no leading slash), by node.
        self.diagnostics: dict[str, dict[str, dict[str, str]]] = {}
        self._diag_sub = self.create_subscription(DiagnosticArray, "/diagnostics",
                                                  self._on_diagnostics, 10)
        self._subs = []
        for modality, topic, expected in topics:
            rec = TopicRecord(topic, modality, expected)
            self.records[topic] = rec
            raw_type = Image if modality == Modality.CAMERA else PointCloud2
            self._subs += [
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

    def _frame_or_count(self, rec: TopicRecord, msg):
        """The message as a frame, or None (counted as an error) when it does not convert."""
        try:
            return self._to_frame(rec, msg)
        except SensorCodecError:
            rec.errors += 1
            return None

    def _on_raw(self, rec: TopicRecord, msg) -> None:
        now = self.last_message_s = time.monotonic()
        rec.first_raw_s = rec.first_raw_s if rec.first_raw_s is not None else now
        rec.last_raw_s = now
        frame = self._frame_or_count(rec, msg)
        if frame is None:
            return
        stamp = header_stamp_ns(msg.header)
        units = frame.height * frame.width if rec.modality == Modality.CAMERA else frame.num_points
        rec.raw[stamp] = (now, frame.nbytes, units)
        self._pair(rec, stamp, raw=frame)

    def _on_compressed(self, rec: TopicRecord, msg) -> None:
        self.last_message_s = time.monotonic()
        rec.tag = msg.format
        rec.compressed[header_stamp_ns(msg.header)] = len(msg.data)

    def _on_decoded(self, rec: TopicRecord, msg) -> None:
        now = self.last_message_s = time.monotonic()
        frame = self._frame_or_count(rec, msg)
        if frame is None:
            return
        stamp = header_stamp_ns(msg.header)
        rec.decoded[stamp] = now
        self._pair(rec, stamp, decoded=frame)

    @staticmethod
    def _pair(rec: TopicRecord, stamp: int, raw=None, decoded=None) -> None:
        """Measure a raw/decoded pair as soon as both halves are here."""
        raw = raw if raw is not None else rec.waiting_raw.pop(stamp, None)
        decoded = decoded if decoded is not None else rec.waiting_decoded.pop(stamp, None)
        if raw is None:
            rec.waiting_decoded[stamp] = decoded
        elif decoded is None:
            rec.waiting_raw[stamp] = raw
        elif rec.modality == Modality.CAMERA:
            # PSNR only: MS-SSIM of full-HD frames would take longer than the drive.
            rec.quality[stamp] = {"psnr": psnr(raw.pixels, decoded.pixels)}
        else:
            rec.quality[stamp] = cloud_metrics(raw, decoded, 0, geometry=False)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            node = status.name.split(":", 1)[0]
            values = {kv.key: kv.value for kv in status.values}
            topic = values.get("topic", status.hardware_id).lstrip("/")
            self.diagnostics.setdefault(topic, {})[node] = values

    def node_counters(self, topic: str) -> dict[str, int]:
        """Drops and errors the encoder and decoder reported for a raw topic."""
        out = {}
        for reported, role in ((topic, "encoder"), (topic + COMPRESSED_SUFFIX, "decoder")):
            for values in self.diagnostics.get(reported.lstrip("/"), {}).values():
                for key in ("drops", "errors"):
                    if key in values:
                        out[f"{role}_{key}"] = int(float(values[key]))
        return out

    def ready(self) -> bool:
        """Encoder and decoder are connected to every topic this probe watches.

        The decoder creates its output publisher on the first payload (the
        payload says whether it is an Image or a PointCloud2) and waits for
        existing subscribers then, so only its input side is checked here.
        """
        for topic in self.records:
            if (self.count_subscribers(topic) < 2
                    or self.count_publishers(topic + COMPRESSED_SUFFIX) < 1
                    or self.count_subscribers(topic + COMPRESSED_SUFFIX) < 2):
                return False
        return True

    def idle_for(self, seconds: float) -> bool:
        return (self.last_message_s is not None
                and time.monotonic() - self.last_message_s > seconds)

    def complete(self) -> bool:
        return all(0 < r.expected <= len(r.decoded) for r in self.records.values())


def topic_report(rec: TopicRecord, counters: dict[str, int]) -> dict:
    """Sizes, rates, latency and quality of one topic, from what the probe saw."""
    pairs = sorted(rec.quality)
    latencies = [1000.0 * (rec.decoded[s] - rec.raw[s][0]) for s in pairs]
    # Ratio over the frames seen both raw and compressed.
    both = [s for s in rec.raw if s in rec.compressed]
    raw_bytes = sum(rec.raw[s][1] for s in both)
    compressed = sum(rec.compressed[s] for s in both)
    span = (rec.last_raw_s or 0) - (rec.first_raw_s or 0)
    out = {
        "topic": rec.topic, "modality": rec.modality.label, "format": rec.tag,
        "frames_expected": rec.expected,
        "frames_raw": len(rec.raw), "frames_compressed": len(rec.compressed),
        "frames_decoded": len(rec.decoded), "frames_paired": len(pairs),
        "frames_lost": len(rec.raw) - len(pairs),
        "raw_bytes": raw_bytes, "compressed_bytes": compressed,
        "ratio": raw_bytes / compressed if compressed else None,
        "input_rate_hz": (len(rec.raw) - 1) / span if span > 0 else None,
        "latency_ms_p50": percentile(latencies, 50) if latencies else None,
        "latency_ms_p95": percentile(latencies, 95) if latencies else None,
        "latency_ms_max": max(latencies) if latencies else None,
        "conversion_errors": rec.errors,
        **counters,  # encoder_drops, encoder_errors, decoder_drops, decoder_errors
    }
    quality = [rec.quality[s] for s in pairs]
    # Rate per pair: payload bits over the frame's pixels or points.
    rates = [8.0 * rec.compressed.get(s, 0) / rec.raw[s][2] for s in pairs if rec.raw[s][2]]
    if rec.modality == Modality.CAMERA and quality:
        psnrs = [q["psnr"] for q in quality]
        out["psnr_mean_db"] = float(np.mean([p for p in psnrs if math.isfinite(p)])) \
            if any(math.isfinite(p) for p in psnrs) else math.inf
        out["psnr_min_db"] = float(min(psnrs))
        out["bpp_mean"] = float(np.mean(rates)) if rates else None
    elif quality:
        out["max_error_m"] = float(max(q.get("max_error", math.nan) for q in quality))
        out["mean_error_m"] = float(np.mean([q.get("mean_error", math.nan) for q in quality]))
        out["bits_per_point"] = float(np.mean(rates)) if rates else None
        fields: dict[str, float] = {}
        for q in quality:
            for name, err in q.get("field_max_error", {}).items():
                fields[name] = max(fields.get(name, 0.0), err)
        out["field_max_error"] = fields
    return out


def parse_topic(text: str) -> tuple[Modality, str, int]:
    """``MODALITY:TOPIC[=FRAMES]``: FRAMES is how many frames make the topic complete."""
    modality, sep, rest = text.partition(":")
    topic, _, count = rest.partition("=")
    try:
        expected = int(count) if count else 0
        if not sep or not topic or expected < 0:
            raise ValueError
        return Modality.parse(modality), topic, expected
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODALITY:TOPIC[=FRAMES], got {text!r}") from None
    except SensorCodecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--topic", type=parse_topic, action="append", required=True,
                        help="MODALITY:TOPIC[=FRAMES] of a raw input of the encoder, with the "
                             "number of frames that completes it (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="file created once encoder and decoder are connected")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this long (s)")
    parser.add_argument("--idle-timeout", type=float, default=5.0,
                        help="once frames have flowed, stop after this long without any (s): "
                             "frames the encoder dropped never arrive")
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
            while (not stop.is_set() and time.monotonic() < deadline
                   and not node.complete() and not node.idle_for(args.idle_timeout)):
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
                if not announced and args.ready_file and node.ready():
                    args.ready_file.write_text("ready\n")
                    announced = True
            report = {"complete": node.complete(),
                      "topics": [topic_report(r, node.node_counters(t))
                                 for t, r in node.records.items()]}
            args.out.write_text(json.dumps(report, indent=2, allow_nan=True))
        finally:
            executor.remove_node(node)
            node.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
