"""Compress a bag's sensor topics with sensor_codec codecs, and back.

``compress_bag`` turns every camera ``Image`` and lidar/radar ``PointCloud2``
topic into a ``<topic>/sensor_codec`` ``CompressedImage`` topic whose messages
carry a container payload (``format`` is the readable tag); every other topic
is copied byte for byte. Semantic label-map topics (``.../semantic``) are
coded losslessly (``LABEL_MAP_CODEC``) whatever the camera codec.

A lidar codec in ``semantic`` mode (``rangecode``) is steered as the encoder
node steers it (``sensor_codec.semantic_steering``): each cloud gets the class
of the pixel each point projects to in the latest semantic map read before it
(bag order), if at most ``semantic_max_age_s`` apart, taken from a label-map
topic of the bag (what the car's encoder node published) or, without one,
computed by the default backbone from a camera topic (``BagSteering``). A
cloud with no such map (the first one, before any camera frame) keeps the
default bound; the report counts the steered clouds. ``decompress_bag`` does the reverse onto the
original topic names.

A message that cannot be converted is counted in the report and skipped
(``strict=True`` raises instead). An interrupted conversion (Ctrl-C, an error)
still closes the output bag, which then holds every message written before the
interruption; see ``sensor_codec.bag.io`` for what a hard kill leaves.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs import codec_names, decode, get_codec
from ..errors import BagError, ConfigError, SensorCodecError
from ..frames import CameraFrame, Modality
from ..graph import SEMANTIC_SUFFIX
from ..messages import (compressed_to_payload, frame_to_image, frame_to_pointcloud2,
                        image_to_frame, is_radar_cloud, payload_to_compressed,
                        pointcloud2_dtype, pointcloud2_to_frame, rosbags_types)
from ..wire import peek_header
from .io import (BagMessage, BagWriter, deserialize, detect_storage, open_reader, read_messages,
                 serialize, typestore)

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
TRANSPORT_SUFFIX = "/sensor_codec"

# Codec used per modality when the caller names none; settings are the codec's own defaults.
DEFAULT_CODECS: dict[Modality, tuple[str, dict]] = {
    Modality.CAMERA: ("webp", {}),
    Modality.LIDAR: ("grid", {}),
    Modality.RADAR: ("radar_quant", {}),
}
# Semantic label maps (the encoder node's and the decoder's ``<camera>/semantic``
# mono8 topics) hold class ids, not intensities: a lossy camera codec would
# invent classes, so such topics get LABEL_MAP_CODEC, lossless, whatever the
# camera codec is.
LABEL_MAP_SUFFIXES = (SEMANTIC_SUFFIX,)
LABEL_MAP_CODEC = "png"
# Errors kept per topic in the report (the count is always complete).
MAX_ERRORS_KEPT = 5
# As the encoder node's lidar.semantic_max_age.
DEFAULT_SEMANTIC_MAX_AGE_S = 0.15

@dataclass
class TopicReport:
    """One converted topic."""

    topic: str
    output_topic: str
    modality: str
    codec: str
    messages: int = 0
    failed: int = 0
    raw_bytes: int = 0         # serialized Image/PointCloud2 messages
    compressed_bytes: int = 0  # serialized CompressedImage messages
    codec_ms: float = 0.0      # total time inside the codec (encode or decode)
    errors: list[str] = field(default_factory=list)
    steered_by: str = ""       # semantic map source of a steered lidar topic
    steered: int = 0           # clouds that had a map within the max age

    def count(self, raw_bytes: int, compressed_bytes: int, ms: float) -> None:
        """One message converted (either direction)."""
        self.messages += 1
        self.raw_bytes += raw_bytes
        self.compressed_bytes += compressed_bytes
        self.codec_ms += ms

    @property
    def ratio(self) -> float | None:
        return self.raw_bytes / self.compressed_bytes if self.compressed_bytes else None

    @property
    def ms_per_message(self) -> float | None:
        return self.codec_ms / self.messages if self.messages else None

    def to_dict(self) -> dict:
        return {"topic": self.topic, "output_topic": self.output_topic,
                "modality": self.modality, "codec": self.codec, "messages": self.messages,
                "failed": self.failed, "raw_bytes": self.raw_bytes,
                "compressed_bytes": self.compressed_bytes, "ratio": self.ratio,
                "codec_ms": self.codec_ms, "ms_per_message": self.ms_per_message,
                "errors": list(self.errors),
                **({"steered_by": self.steered_by, "steered": self.steered}
                   if self.steered_by else {})}


@dataclass
class ConversionReport:
    src: str
    dst: str
    storage: str
    topics: dict[str, TopicReport] = field(default_factory=dict)
    copied: dict[str, int] = field(default_factory=dict)  # topic -> messages copied unchanged
    messages_read: int = 0
    completed: bool = False

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.topics.values())

    def to_dict(self) -> dict:
        return {"src": self.src, "dst": self.dst, "storage": self.storage,
                "messages_read": self.messages_read, "completed": self.completed,
                "failed": self.failed, "copied": dict(self.copied),
                "topics": {k: v.to_dict() for k, v in self.topics.items()}}


def format_report(report: ConversionReport, action: str = "compressed") -> str:
    verb = "encode" if action == "compressed" else "decode"
    header = ("topic", "codec", "msgs", "failed", "raw bytes", "compressed", "ratio",
              f"{verb} ms/msg")
    rows = []
    for t in report.topics.values():
        rows.append((t.topic, t.codec, str(t.messages), str(t.failed), str(t.raw_bytes),
                     str(t.compressed_bytes), f"{t.ratio:.2f}" if t.ratio else "-",
                     f"{t.ms_per_message:.1f}" if t.ms_per_message is not None else "-"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{action} {report.src} -> {report.dst} ({report.storage})"]
    for row in [header, *rows]:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    for t in report.topics.values():
        if t.steered_by:
            lines.append(f"{t.topic}: {t.steered} of {t.messages} clouds labelled from "
                         f"{t.steered_by}'s semantic maps (the rest: default bound)")
    if report.copied:
        lines.append(f"copied unchanged: {sum(report.copied.values())} messages on "
                     f"{len(report.copied)} topic(s)")
    for t in report.topics.values():
        for err in t.errors:
            lines.append(f"error on {t.topic}: {err}")
    return "\n".join(lines)


# --- planning -------------------------------------------------------------------

def resolve_codecs(codecs: Mapping[Any, Any] | None) -> dict[Modality, tuple[str, dict]]:
    """Merge caller codec choices over the defaults: modality -> (name, settings)."""
    out = {m: (name, dict(settings)) for m, (name, settings) in DEFAULT_CODECS.items()}
    for key, spec in (codecs or {}).items():
        modality = _parse_modality(key)
        if isinstance(spec, str):
            name, settings = spec, {}
        elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) \
                and isinstance(spec[1], Mapping):
            name, settings = spec[0], dict(spec[1])
        else:
            raise ConfigError(f"codec for {modality.label} must be a name or (name, settings), "
                              f"got {spec!r}")
        out[modality] = (name, settings)
    return out


def _parse_modality(value: Any) -> Modality:
    try:
        return Modality.parse(value)
    except SensorCodecError as exc:
        raise ConfigError(str(exc)) from None


def _first_message(reader, conn) -> bytes | None:
    for _, _, data in reader.messages(connections=[conn]):
        return bytes(data)
    return None


def plan_topics(src: str | Path, topics: Iterable[str] | Mapping[str, Any] | None = None
                ) -> dict[str, Modality]:
    """Which topics of ``src`` to compress, as what modality.

    ``None``: every Image (camera) and PointCloud2 (radar when its fields look
    like radar detections: rcs, v_r, doppler..., lidar otherwise). A list of
    names: those topics, modality detected. A mapping: topic -> modality.
    """
    explicit = dict(topics) if isinstance(topics, Mapping) else None
    selected = None if topics is None else set(topics)
    plan: dict[str, Modality] = {}
    with open_reader(src) as reader:
        types = {c.topic: c for c in reader.connections}
        if selected is not None:
            missing = selected - set(types)
            if missing:
                raise BagError(f"bag {str(src)!r} has no topic(s) {sorted(missing)}; it has "
                               f"{sorted(types)}")
        for topic, conn in types.items():
            if selected is not None and topic not in selected:
                continue
            if conn.msgtype not in (IMAGE, POINTCLOUD2):
                if selected is not None:
                    raise ConfigError(f"topic {topic!r} is a {conn.msgtype}; only {IMAGE} and "
                                      f"{POINTCLOUD2} topics can be compressed")
                continue
            if explicit is not None and explicit[topic] is not None:
                modality = _parse_modality(explicit[topic])
                wanted = IMAGE if modality == Modality.CAMERA else POINTCLOUD2
                if conn.msgtype != wanted:
                    raise ConfigError(f"topic {topic!r} is a {conn.msgtype}, which cannot be "
                                      f"compressed as {modality.label} (needs {wanted})")
            elif conn.msgtype == IMAGE:
                modality = Modality.CAMERA
            else:
                modality = Modality.LIDAR
                first = _first_message(reader, conn)
                if first is not None:
                    msg = deserialize(first, POINTCLOUD2)
                    try:
                        names = pointcloud2_dtype(msg.fields, int(msg.point_step),
                                                  bool(msg.is_bigendian)).names
                    except SensorCodecError:
                        names = [str(f.name) for f in msg.fields]
                    if is_radar_cloud(names):
                        modality = Modality.RADAR
            plan[topic] = modality
    return plan


# --- the conversion loop ----------------------------------------------------------

Handler = Callable[[BagMessage, BagWriter], None]


def _run(src: Path, dst: Path, storage: str, handlers: dict[str, Handler],
         report: ConversionReport, *, skip: set[str] = frozenset(),
         outputs: Mapping[str, list[tuple[str, str]]] | None = None,
         custom_data: Mapping[str, str] | None = None, progress: bool,
         overwrite: bool, callback: Callable[[int], None] | None, desc: str,
         observers: Mapping[str, Callable[[BagMessage], None]] | None = None) -> None:
    """Copy ``src`` to ``dst`` message by message, handing ``handlers``' topics to them.
    ``observers`` see their topic's messages first (whether handled or copied).

    ``outputs`` names the (topic, msgtype) each handled topic writes, so they are
    declared in the source's topic order before the first message.
    """
    from tqdm import tqdm

    with open_reader(src) as reader:
        total = reader.message_count
        source_topics = [(c.topic, c.msgtype) for c in reader.connections]
    with BagWriter(dst, storage, overwrite=overwrite, custom_data=custom_data) as writer, \
            tqdm(total=total, disable=not progress, unit="msg", desc=desc) as bar:
        try:
            # Declare topics up front, in source order, so they exist even with no messages.
            for topic, msgtype in source_topics:
                if topic in skip:
                    continue
                if topic in handlers:
                    for out_topic, out_type in (outputs or {}).get(topic, ()):
                        writer.add_topic(out_topic, out_type)
                else:
                    writer.add_topic(topic, msgtype)
                    report.copied.setdefault(topic, 0)
            for message in read_messages(src):
                observer = (observers or {}).get(message.topic)
                if observer is not None:
                    observer(message)
                handler = handlers.get(message.topic)
                if handler is not None:
                    handler(message, writer)
                elif message.topic not in skip:
                    writer.write(message.topic, message.timestamp_ns, message.data)
                    report.copied[message.topic] += 1
                report.messages_read += 1
                bar.update(1)
                if callback is not None:
                    callback(report.messages_read)
            report.completed = True
        except BaseException:
            log.warning("conversion of %s stopped after %d of %d messages; %s is closed and "
                        "holds what was written so far", src, report.messages_read, total, dst)
            raise


def _record_failure(report: TopicReport, message: BagMessage, exc: Exception,
                    strict: bool) -> None:
    text = f"t={message.timestamp_ns}: {type(exc).__name__}: {exc}"
    if strict:
        raise BagError(f"cannot convert message on {message.topic!r} at {text} "
                       "(strict mode; drop --strict to skip bad messages)") from exc
    report.failed += 1
    if len(report.errors) < MAX_ERRORS_KEPT:
        report.errors.append(text)
        log.warning("skipping bad message on %s at %s", message.topic, text)


# Errors a bad message can cause. Other exceptions are bugs and stop the run.
_BAD_MESSAGE_ERRORS = (SensorCodecError, ValueError)


def compress_bag(src: str | Path, dst: str | Path, *,
                 codecs: Mapping[Any, Any] | None = None,
                 topics: Iterable[str] | Mapping[str, Any] | None = None,
                 keep_raw: bool = False, storage: str | None = None, progress: bool = True,
                 strict: bool = False, overwrite: bool = False,
                 callback: Callable[[int], None] | None = None,
                 semantic_source: str | None = None, calibration: str | Path | None = None,
                 semantic_max_age_s: float = DEFAULT_SEMANTIC_MAX_AGE_S) -> ConversionReport:
    """Compress the sensor topics of ``src`` into a new bag ``dst``.

    ``codecs`` maps a modality (``'camera'``, ``'lidar'``, ``'radar'``) to a
    codec name or ``(name, settings)``; unnamed modalities use
    ``DEFAULT_CODECS``. ``topics``: see ``plan_topics``. ``keep_raw`` also
    copies the uncompressed topics. ``storage`` defaults to the source's.
    ``callback(n)`` is called after each of the n input messages.
    With the lidar codec in ``semantic`` mode: ``semantic_source`` is the
    label-map or camera topic whose maps steer it (default: the bag's first
    label-map topic, else its first Image topic), ``calibration`` the
    camera-lidar calibration file (default ``config/calibration.yaml``).
    """
    src, dst = Path(src), Path(dst)
    storage = storage or detect_storage(src)
    plan = plan_topics(src, topics)
    chosen = resolve_codecs(codecs)
    encoders = {}
    for modality in set(plan.values()):
        name, settings = chosen[modality]
        codec = get_codec(name, **settings)  # bad names/settings fail before any writing
        if modality not in codec.modalities:
            raise ConfigError(f"codec {name!r} cannot compress {modality.label}; it handles "
                              f"{sorted(m.label for m in codec.modalities)}")
        encoders[modality] = codec
    types = rosbags_types(typestore())
    steering = None
    if Modality.LIDAR in plan.values() and encoders[Modality.LIDAR].settings.get("semantic"):
        steering = BagSteering.for_bag(src, semantic_source, calibration, semantic_max_age_s)
    report = ConversionReport(str(src), str(dst), storage)
    handlers: dict[str, Handler] = {}
    outputs: dict[str, list[tuple[str, str]]] = {}
    topic_codecs = {}
    for topic, modality in plan.items():
        out_topic = topic + TRANSPORT_SUFFIX
        codec = encoders[modality]
        if is_label_map_topic(topic, modality) and not codec.lossless:
            codec = get_codec(LABEL_MAP_CODEC)
        topic_codecs[topic] = codec
        topic_report = TopicReport(topic, out_topic, modality.label, codec.name)
        report.topics[topic] = topic_report
        label = None
        if steering is not None and modality == Modality.LIDAR:
            topic_report.steered_by = steering.source
            label = steering.labeller(topic_report)
        handlers[topic] = _compress_handler(topic_report, modality, codec, types, keep_raw,
                                            strict, label)
        outputs[topic] = [(out_topic, COMPRESSED_IMAGE)]
        if keep_raw:
            outputs[topic].insert(0, (topic, IMAGE if modality == Modality.CAMERA else POINTCLOUD2))
    # Recorded in metadata.yaml so a reader of the bag knows how it was made.
    settings = {topic: {"modality": r.modality, "codec": r.codec,
                        "settings": topic_codecs[topic].settings}
                for topic, r in report.topics.items()}
    _run(src, dst, storage, handlers, report, outputs=outputs, progress=progress,
         custom_data={"sensor_codec.compress": json.dumps(settings, sort_keys=True)},
         overwrite=overwrite, callback=callback, desc="compress",
         observers={steering.source: steering.observe} if steering is not None else None)
    return report


class BagSteering:
    """Semantic maps of one bag topic for labelling lidar clouds in time order:
    a label-map topic's images as they are, or a camera topic's frames
    segmented by the default backbone. Keeps the latest map seen; a cloud
    uses it when their stamps are at most ``max_age_s`` apart."""

    def __init__(self, source: str, from_label_maps: bool, calibration, max_age_s: float) -> None:
        from ..semantic_steering import SemanticMapCache

        self.source = source
        self.from_label_maps = from_label_maps
        self.calibration = calibration
        self.cache = SemanticMapCache(max_age_s)
        self._backbone = None

    @classmethod
    def for_bag(cls, src: Path, source: str | None, calibration, max_age_s: float
                ) -> BagSteering:
        from ..semantic_steering import load_calibration

        with open_reader(src) as reader:
            images = [c.topic for c in reader.connections if c.msgtype == IMAGE]
        if source is None:
            labels = [t for t in images if is_label_map_topic(t, Modality.CAMERA)]
            if not (labels or images):
                raise ConfigError(f"the lidar codec is in semantic mode but bag {str(src)!r} has "
                                  "no Image topic to take semantic maps from; record the "
                                  "camera (or its .../semantic topic), or drop semantic")
            source = (labels or images)[0]
        elif source not in images:
            raise ConfigError(f"semantic source {source!r} is not an Image topic of bag "
                              f"{str(src)!r}; its Image topics: {images}")
        return cls(source, is_label_map_topic(source, Modality.CAMERA),
                   load_calibration(calibration), max_age_s)

    def observe(self, message: BagMessage) -> None:
        """Keep the map of one message of the source topic (a bad one is skipped:
        the clouds near it get the default bound)."""
        try:
            frame = image_to_frame(deserialize(message.data, IMAGE))
            if self.from_label_maps:
                if frame.pixels.ndim != 2 or frame.pixels.dtype != np.uint8:
                    raise ConfigError(f"label-map topic {self.source!r} carries "
                                      f"{frame.encoding} images, not class ids (mono8)")
                labels = frame.pixels
            else:
                labels = self._segmenter().segment(frame.to_rgb8()).semantic
        except _BAD_MESSAGE_ERRORS as exc:
            log.warning("semantic map at t=%d on %s skipped: %s", message.timestamp_ns,
                        self.source, exc)
            return
        self.cache.put(labels, frame.stamp_ns)

    def _segmenter(self):
        if self._backbone is None:
            from ..learned.runtime import BackboneRunner

            self._backbone = BackboneRunner()
        return self._backbone

    def labeller(self, report: TopicReport) -> Callable:
        """frame -> frame with its ``semantic_class`` field; counts the steered clouds."""
        from ..semantic_steering import label_cloud

        def label(frame):
            labels = self.cache.get(frame.stamp_ns)
            report.steered += labels is not None
            return label_cloud(frame, labels, self.calibration)

        return label


def is_label_map_topic(topic: str, modality: Modality) -> bool:
    """A camera topic that carries class ids (``LABEL_MAP_SUFFIXES``)."""
    return modality == Modality.CAMERA and topic.endswith(LABEL_MAP_SUFFIXES)


def _compress_handler(report: TopicReport, modality: Modality, codec, types, keep_raw: bool,
                      strict: bool, label: Callable | None = None) -> Handler:
    msgtype = IMAGE if modality == Modality.CAMERA else POINTCLOUD2

    def handle(message: BagMessage, writer: BagWriter) -> None:
        if keep_raw:
            writer.write(report.topic, message.timestamp_ns, message.data)
        try:
            msg = deserialize(message.data, msgtype)
            frame = (image_to_frame(msg) if modality == Modality.CAMERA
                     else pointcloud2_to_frame(msg, modality))
            if label is not None:
                frame = label(frame)
            start = time.perf_counter()
            payload = codec.encode(frame)
            elapsed_ms = (time.perf_counter() - start) * 1e3
            out = serialize(payload_to_compressed(payload, types, frame.stamp_ns,
                                                  frame.frame_id))
        except _BAD_MESSAGE_ERRORS as exc:
            _record_failure(report, message, exc, strict)
            return
        writer.write(report.output_topic, message.timestamp_ns, out)
        report.count(raw_bytes=len(message.data), compressed_bytes=len(out), ms=elapsed_ms)

    return handle


def decompress_bag(src: str | Path, dst: str | Path, *, storage: str | None = None,
                   progress: bool = True, strict: bool = False, overwrite: bool = False,
                   callback: Callable[[int], None] | None = None) -> ConversionReport:
    """Decode every ``<topic>/sensor_codec`` topic of ``src`` back onto ``<topic>``.

    Other topics are copied unchanged. When ``src`` also holds ``<topic>``
    itself (compressed with ``keep_raw``), the raw messages are kept and the
    compressed topic is dropped, since they are exact.
    """
    src, dst = Path(src), Path(dst)
    storage = storage or detect_storage(src)
    with open_reader(src) as reader:
        source = {c.topic: c.msgtype for c in reader.connections}
    types = rosbags_types(typestore())
    report = ConversionReport(str(src), str(dst), storage)
    handlers: dict[str, Handler] = {}
    skip: set[str] = set()
    for topic, msgtype in source.items():
        if not topic.endswith(TRANSPORT_SUFFIX) or msgtype != COMPRESSED_IMAGE:
            continue
        original = topic[:-len(TRANSPORT_SUFFIX)]
        if original in source:
            log.info("%s also holds %s uncompressed; keeping that and dropping %s",
                     src, original, topic)
            skip.add(topic)
            continue
        topic_report = TopicReport(topic, original, "", "")
        report.topics[topic] = topic_report
        handlers[topic] = _decompress_handler(topic_report, types, strict)
    _run(src, dst, storage, handlers, report, skip=skip, progress=progress, overwrite=overwrite,
         callback=callback, desc="decompress")
    return report


def _decompress_handler(report: TopicReport, types, strict: bool) -> Handler:
    def handle(message: BagMessage, writer: BagWriter) -> None:
        try:
            payload = compressed_to_payload(deserialize(message.data, COMPRESSED_IMAGE))
            start = time.perf_counter()
            frame = decode(payload)
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if isinstance(frame, CameraFrame):
                out_msg, out_type = frame_to_image(frame, types), IMAGE
            else:
                out_msg, out_type = frame_to_pointcloud2(frame, types), POINTCLOUD2
            existing = writer.topics.get(report.output_topic)
            if existing is not None and existing != out_type:
                raise BagError(f"payload decodes to {out_type} but {report.output_topic!r} "
                               f"already holds {existing}")
            out = serialize(out_msg)
        except _BAD_MESSAGE_ERRORS as exc:
            _record_failure(report, message, exc, strict)
            return
        if not report.codec:
            report.modality, report.codec = frame.modality.label, _codec_of(payload)
        writer.add_topic(report.output_topic, out_type)
        writer.write(report.output_topic, message.timestamp_ns, out)
        report.count(raw_bytes=len(out), compressed_bytes=len(message.data), ms=elapsed_ms)

    return handle


def _codec_of(payload: bytes) -> str:
    return peek_header(payload).codec


def codec_choices(modality: Modality | str) -> list[str]:
    """Registered codec names that handle ``modality`` (for CLI help)."""
    return codec_names(modality)
