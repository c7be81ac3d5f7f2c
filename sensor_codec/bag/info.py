"""What a bag holds: topics, types, counts, duration, rates, bytes, codec tags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BagError
from .io import deserialize, detect_storage, open_reader

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
SENSOR_CODEC_PREFIX = "sensor_codec/"


@dataclass
class TopicInfo:
    topic: str
    msgtype: str
    count: int = 0
    bytes: int = 0  # sum of serialized (CDR) message sizes
    first_ns: int | None = None
    last_ns: int | None = None
    # CompressedImage topics: the first message's format string and, for
    # sensor_codec payloads, the codec name parsed from it.
    format: str | None = None
    codec: str | None = None

    @property
    def duration_s(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return (self.last_ns - self.first_ns) / 1e9

    @property
    def rate_hz(self) -> float | None:
        """Mean message rate, ``None`` with fewer than two messages or no time span."""
        span = self.duration_s
        return (self.count - 1) / span if self.count > 1 and span > 0 else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["duration_s"] = self.duration_s
        out["rate_hz"] = self.rate_hz
        return out


@dataclass
class BagInfo:
    path: str
    storage: str
    topics: list[TopicInfo] = field(default_factory=list)

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.topics)

    @property
    def start_ns(self) -> int | None:
        starts = [t.first_ns for t in self.topics if t.first_ns is not None]
        return min(starts) if starts else None

    @property
    def end_ns(self) -> int | None:
        ends = [t.last_ns for t in self.topics if t.last_ns is not None]
        return max(ends) if ends else None

    @property
    def duration_s(self) -> float:
        if self.start_ns is None:
            return 0.0
        return (self.end_ns - self.start_ns) / 1e9

    def topic(self, name: str) -> TopicInfo:
        for t in self.topics:
            if t.topic == name:
                return t
        raise BagError(f"bag {self.path!r} has no topic {name!r}; it has "
                       f"{[t.topic for t in self.topics]}")

    def to_dict(self) -> dict:
        return {"path": self.path, "storage": self.storage, "message_count": self.message_count,
                "bytes": self.bytes, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "duration_s": self.duration_s, "topics": [t.to_dict() for t in self.topics]}


def parse_codec_tag(fmt: str) -> str | None:
    """``'sensor_codec/lidar/grid; v1; model=classical'`` -> ``'grid'``."""
    if not fmt.startswith(SENSOR_CODEC_PREFIX):
        return None
    head = fmt.split(";", 1)[0].split("/")
    return head[2] if len(head) >= 3 and head[2] else None


def bag_info(path: str | Path) -> BagInfo:
    """Scan every message of the bag (sizes and times are not all in its metadata)."""
    path = Path(path)
    storage = detect_storage(path)
    with open_reader(path) as reader:
        topics: dict[str, TopicInfo] = {}
        by_id = {}
        for conn in reader.connections:
            info = topics.setdefault(conn.topic, TopicInfo(conn.topic, conn.msgtype))
            by_id[conn.id] = info
        for conn, timestamp, data in reader.messages():
            t = by_id[conn.id]
            t.count += 1
            t.bytes += len(data)
            t.first_ns = timestamp if t.first_ns is None else min(t.first_ns, timestamp)
            t.last_ns = timestamp if t.last_ns is None else max(t.last_ns, timestamp)
            if t.format is None and t.msgtype == COMPRESSED_IMAGE:
                t.format = str(deserialize(bytes(data), COMPRESSED_IMAGE).format)
                t.codec = parse_codec_tag(t.format)
    return BagInfo(str(path), storage, list(topics.values()))


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def format_info(info: BagInfo) -> str:
    """A human-readable table of ``info``."""
    lines = [f"bag:      {info.path} ({info.storage})",
             f"duration: {info.duration_s:.3f} s",
             f"messages: {info.message_count}",
             f"size:     {_human_bytes(info.bytes)} of serialized messages", ""]
    header = ("topic", "type", "count", "rate Hz", "bytes", "codec")
    rows = [(t.topic, t.msgtype, str(t.count),
             f"{t.rate_hz:.2f}" if t.rate_hz is not None else "-",
             _human_bytes(t.bytes), t.codec or (t.format or "-")) for t in info.topics]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) if i in (0, 1, 5) else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)
