"""encoder_node: compresses camera, lidar and radar topics.

Subscribes to every configured ``camera_topics`` (sensor_msgs/Image),
``lidar_topics`` and ``radar_topics`` (sensor_msgs/PointCloud2) and
publishes each frame on ``<topic>/sensor_codec`` as a
sensor_msgs/CompressedImage: the original header, ``format`` the container's
readable tag, ``data`` the sensor_codec container.

The subscription callback only queues the message (a bounded queue per
topic that drops the oldest frame); one worker thread per topic converts,
encodes and publishes, so a slow codec never blocks the executor. Per-topic
statistics go to /diagnostics.

Parameters (all read-only, declared with ranges; ``ros2 param describe``):
topic lists, ``<modality>.codec`` and that codec's settings as
``<modality>.<setting>`` (for example ``camera.quality``, ``lidar.max_error``,
``radar.resolutions``), ``queue_depth``, ``qos.reliability``, ``qos.depth``,
``diagnostics_period``, and:

* ``camera.bandwidth_kbps`` (0 = off): a bit-rate target per camera topic; the
  node picks the codec's ``quality`` per frame (``sensor_codec.rate_control``),
  measured in the frames' stamps so a bag replayed faster keeps the same kbit
  per recorded second. Codecs without an integer quality setting refuse it at
  start-up. ``camera.bandwidth_burst_s`` sizes the leaky bucket.
* ``semantic_topic_suffix``: when the camera codec computes a semantic map
  (``camera_learned``), it is published as ``mono8`` class ids on
  ``<camera topic><suffix>`` with the image's header ('' = not published).
* ``lidar.semantic_calibration``, ``lidar.semantic_max_age``, ``lidar.semantic_wait``,
  ``lidar.semantic_camera``: with ``lidar.codec: rangecode`` and
  ``lidar.semantic: true`` and a camera codec that computes a semantic map,
  each lidar point is labelled with the class of the pixel it projects to in
  the latest map no further than the max age from the cloud's stamp, waiting
  up to ``lidar.semantic_wait`` for the camera to get there
  (``sensor_codec.semantic_steering``); the class sets its error bound.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import partial

from sensor_msgs.msg import CompressedImage, Image, PointCloud2

from sensor_codec.codecs import Codec, codec_class, codec_names, get_codec
from sensor_codec.errors import ConfigError
from sensor_codec.frames import Modality
from sensor_codec.graph import COMPRESSED_SUFFIX, ENCODER_NAME, SEMANTIC_SUFFIX
from sensor_codec.messages import (frame_to_image, image_to_frame, payload_to_compressed,
                                   pointcloud2_to_frame, rclpy_types)
from sensor_codec.pipeline_stats import LogThrottle
from sensor_codec.rate_control import RateController, quality_ladder
from sensor_codec.semantic_steering import (SemanticMapCache, label_cloud, load_calibration)

from ._ros_common import (COMMON_PARAMS, LOG_THROTTLE_S, DiagnosticsReporter, ParamSpec,
                          StoppableNode, TopicWorker, check_topics, declare_parameters,
                          qos_mismatch_callbacks, qos_profile, run_node, undeclared_overrides)

# The codec each modality uses unless configured otherwise.
DEFAULT_CODECS = {Modality.CAMERA: "jpeg", Modality.LIDAR: "grid", Modality.RADAR: "radar_quant"}
INPUT_TYPES = {Modality.CAMERA: Image, Modality.LIDAR: PointCloud2, Modality.RADAR: PointCloud2}

TOPIC_PARAMS = tuple(
    ParamSpec(f"{m.label}_topics", list, [],
              f"{m.label} topics to compress ({INPUT_TYPES[m].__name__}); each is published "
              f"compressed on <topic>{COMPRESSED_SUFFIX}")
    for m in Modality)


SEMANTIC_PARAMS = (
    ParamSpec("semantic_topic_suffix", str, SEMANTIC_SUFFIX,
              "when the camera codec computes a semantic map (camera_learned), publish it as "
              "mono8 class ids on <camera topic><suffix>; '' = do not publish"),
)
BANDWIDTH_PARAMS = (
    ParamSpec("camera.bandwidth_kbps", float, 0.0,
              "bit-rate target per camera topic, kbit/s of stamp time; the node picks the "
              "codec's quality per frame (0 = off: the fixed camera.quality)",
              min=0.0, max=1e7),
    ParamSpec("camera.bandwidth_burst_s", float, 1.0,
              "leaky-bucket size of the bandwidth target: seconds of the target rate a burst "
              "may borrow or save", min=0.05, max=60.0),
)
STEERING_PARAMS = (
    ParamSpec("lidar.semantic_calibration", str, "",
              "camera-lidar calibration for semantic steering (YAML with camera.K, width, "
              "height and T_lidar_to_camera, or KITTI calib.txt; '' = config/calibration.yaml)"),
    ParamSpec("lidar.semantic_max_age", float, 0.15,
              "seconds between a lidar cloud's stamp and the camera's semantic map it may use; "
              "older: every point gets the default bound", min=0.0, max=10.0),
    ParamSpec("lidar.semantic_wait", float, 0.5,
              "longest a lidar cloud waits for the camera's semantic map of its time (the "
              "camera codec is slower than the lidar codec); 0 = use the map already there",
              min=0.0, max=10.0),
    ParamSpec("lidar.semantic_camera", str, "",
              "camera topic whose semantic map steers the lidar ('' = the first camera topic)"),
)
EXTRA_PARAMS = SEMANTIC_PARAMS + BANDWIDTH_PARAMS + STEERING_PARAMS


@dataclass
class CameraCoding:
    """How one camera topic is coded: a fixed codec or one per quality level
    chosen by a rate controller; where its semantic map goes."""

    codec: Codec | None = None                          # fixed quality
    ladder_setting: str = ""
    ladder_values: list[int] = field(default_factory=list)
    ladder_codecs: list[Codec] = field(default_factory=list)
    rate: RateController | None = None
    semantic_publisher: object | None = None
    semantic_cache: SemanticMapCache | None = None


def codec_param(modality: Modality) -> ParamSpec:
    return ParamSpec(f"{modality.label}.codec", str, DEFAULT_CODECS[modality],
                     f"codec for every {modality.label} topic; its settings are "
                     f"{modality.label}.<setting>",
                     choices=tuple(codec_names(modality)))


class EncoderNode(StoppableNode):
    def __init__(self, node_name: str = ENCODER_NAME, **node_options) -> None:
        """``node_options`` go to rclpy's Node (context, parameter_overrides, ...)."""
        super().__init__(node_name, **node_options)
        params = declare_parameters(self, TOPIC_PARAMS + COMMON_PARAMS + EXTRA_PARAMS)
        self.codec_settings = {m: self._declare_codec(m) for m in Modality}
        self._refuse_unknown_parameters()

        topics = [(m, t) for m in Modality for t in params[f"{m.label}_topics"]]
        check_topics(self, [t for _, t in topics], "camera/lidar/radar_topics")
        if not topics:
            raise ConfigError("no input topics: set camera_topics, lidar_topics and/or "
                              "radar_topics to the topics to compress")
        camera_topics = [t for m, t in topics if m == Modality.CAMERA]
        self.bandwidth_kbps = params["camera.bandwidth_kbps"]
        self.semantic_suffix = params["semantic_topic_suffix"]
        if self.semantic_suffix:
            check_topics(self, [t + self.semantic_suffix for t in camera_topics],
                         "semantic_topic_suffix")
        self.types = rclpy_types()
        qos = qos_profile(params["qos.reliability"], params["qos.depth"])
        self._steering = self._setup_steering(params, camera_topics)
        throttle = LogThrottle(LOG_THROTTLE_S)
        self.workers: list[TopicWorker] = []
        self._modality_of = {}
        self._camera_coding: dict[str, CameraCoding] = {}
        for modality, topic in topics:
            name, settings = self.codec_settings[modality]
            output = topic + COMPRESSED_SUFFIX
            publisher = self.create_publisher(
                CompressedImage, output, qos, event_callbacks=qos_mismatch_callbacks(
                    self, output, params["qos.reliability"], subscription=False))
            if modality == Modality.CAMERA:
                coding = self._camera_setup(topic, params, qos)
                self._camera_coding[topic] = coding
                process = partial(self._encode_camera, coding)
            else:
                codec = get_codec(name, **settings)  # one instance per worker thread
                process = partial(self._encode_cloud, codec, modality)
            worker = TopicWorker(self, topic, params["queue_depth"], process, publisher.publish,
                                 throttle)
            self.create_subscription(
                INPUT_TYPES[modality], topic, worker.offer, qos,
                event_callbacks=qos_mismatch_callbacks(self, topic, params["qos.reliability"],
                                                       subscription=True))
            self.workers.append(worker)
            self._modality_of[topic] = modality
        self.diagnostics = DiagnosticsReporter(self, self.workers, params["diagnostics_period"],
                                               self._diagnostic_extra)
        for worker in self.workers:
            worker.start()
        for modality, topic in topics:
            name, settings = self.codec_settings[modality]
            self.get_logger().info(f"{topic} -> {topic}{COMPRESSED_SUFFIX}: {name} {settings}")
        for topic, coding in self._camera_coding.items():
            if coding.rate is not None:
                self.get_logger().info(
                    f"{topic}: bandwidth target {self.bandwidth_kbps:g} kbit/s, "
                    f"{coding.ladder_setting} chosen per frame from {coding.ladder_values}")
            if coding.semantic_publisher is not None:
                self.get_logger().info(f"{topic}: semantic map -> {topic}{self.semantic_suffix}")
        if self._steering is not None:
            self.get_logger().info(
                f"lidar semantic steering from {self._steering['camera']} "
                f"(calibration {self._steering['calibration'].source}, max age "
                f"{self._steering['cache'].max_age_ns / 1e9:g} s)")

    # --- set-up -----------------------------------------------------------------------

    def _camera_yields_semantic(self) -> bool:
        name, _ = self.codec_settings[Modality.CAMERA]
        return hasattr(codec_class(name), "encode_with_semantic")

    def _setup_steering(self, params, camera_topics: list[str]) -> dict | None:
        """The calibration and map cache when the lidar codec is steered, else None."""
        name, settings = self.codec_settings[Modality.LIDAR]
        if not params["lidar_topics"] or not settings.get("semantic"):
            return None
        if not camera_topics or not self._camera_yields_semantic():
            camera_codec = self.codec_settings[Modality.CAMERA][0]
            self.get_logger().warning(
                f"lidar codec {name!r} is in semantic mode but no camera here computes a "
                f"semantic map (camera codec {camera_codec!r}, camera_topics {camera_topics}); "
                f"lidar clouds must bring their own 'semantic_class' field (use "
                f"camera.codec: camera_learned for steering)")
            return None
        camera = params["lidar.semantic_camera"] or camera_topics[0]
        if camera not in camera_topics:
            raise ConfigError(f"lidar.semantic_camera {camera!r} is not one of camera_topics "
                              f"{camera_topics}")
        calibration = load_calibration(params["lidar.semantic_calibration"] or None)
        return {"camera": camera, "calibration": calibration,
                "cache": SemanticMapCache(params["lidar.semantic_max_age"]),
                "wait_s": params["lidar.semantic_wait"]}

    def _camera_setup(self, topic: str, params, qos) -> CameraCoding:
        """Codec instances (one per quality level under a bandwidth target) and the
        semantic map's publisher and cache of one camera topic."""
        name, settings = self.codec_settings[Modality.CAMERA]
        coding = CameraCoding()
        if self.bandwidth_kbps > 0:
            setting, values = quality_ladder(name, codec_class(name).params)
            coding.ladder_setting, coding.ladder_values = setting, values
            # Instances are cheap (the learned runtime is shared); one per level.
            coding.ladder_codecs = [get_codec(name, **{**settings, setting: v}) for v in values]
            coding.rate = RateController(self.bandwidth_kbps, len(values),
                                         burst_s=params["camera.bandwidth_burst_s"])
        else:
            coding.codec = get_codec(name, **settings)
        if self._camera_yields_semantic():
            if self.semantic_suffix:
                coding.semantic_publisher = self.create_publisher(
                    Image, topic + self.semantic_suffix, qos)
            if self._steering is not None and self._steering["camera"] == topic:
                coding.semantic_cache = self._steering["cache"]
        return coding

    def _declare_codec(self, modality: Modality) -> tuple[str, dict]:
        """Declare ``<modality>.codec`` and the chosen codec's settings; check them."""
        spec = codec_param(modality)
        name = declare_parameters(self, [spec])[spec.name]
        cls = codec_class(name)
        specs = [ParamSpec.from_codec_param(modality.label, p, name) for p in cls.params]
        values = declare_parameters(self, specs)
        settings = {p.name: values[f"{modality.label}.{p.name}"] for p in cls.params}
        get_codec(name, **settings)  # the codec's own checks, at start-up
        return name, settings

    def _refuse_unknown_parameters(self) -> None:
        for name in undeclared_overrides(self):
            prefix = name.split(".", 1)[0]
            if prefix in {m.label for m in Modality}:
                codec = self.codec_settings[Modality.parse(prefix)][0]
                takes = [p.name for p in codec_class(codec).params]
                raise ConfigError(
                    f"parameter {name!r} is not a setting of {prefix} codec {codec!r}, which "
                    f"takes {takes or 'no settings'}")
            self.get_logger().warning(f"ignoring parameter {name!r}: this node does not "
                                      f"declare it")

    # --- per message (worker threads) ----------------------------------------------------

    def _encode_camera(self, coding: CameraCoding, msg):
        frame = image_to_frame(msg)
        if coding.rate is not None:
            # Stamp time, so a bag replayed faster keeps its kbit per recorded second;
            # a driver that leaves stamps at zero gets the arrival clock instead.
            clock_s = frame.stamp_ns / 1e9 if frame.stamp_ns else time.monotonic()
            decision = coding.rate.decide(clock_s)
            codec = coding.ladder_codecs[decision.level]
        else:
            codec = coding.codec
        if coding.semantic_publisher is not None or coding.semantic_cache is not None:
            payload, semantic = codec.encode_with_semantic(frame)
            if coding.semantic_cache is not None:
                coding.semantic_cache.put(semantic.pixels, frame.stamp_ns)
            if coding.semantic_publisher is not None:
                semantic_msg = frame_to_image(semantic, self.types)
                semantic_msg.header = msg.header
                coding.semantic_publisher.publish(semantic_msg)
        else:
            payload = codec.encode(frame)
        if coding.rate is not None:
            coding.rate.record(decision.level, len(payload))
        out = payload_to_compressed(payload, self.types, frame.stamp_ns, frame.frame_id)
        return out, frame.nbytes, len(payload)

    def _encode_cloud(self, codec: Codec, modality: Modality, msg):
        frame = pointcloud2_to_frame(msg, modality)
        raw_bytes = frame.nbytes
        if modality == Modality.LIDAR and self._steering is not None:
            labels = self._steering["cache"].get(frame.stamp_ns, self._steering["wait_s"])
            frame = label_cloud(frame, labels, self._steering["calibration"])
        payload = codec.encode(frame)
        out = payload_to_compressed(payload, self.types, frame.stamp_ns, frame.frame_id)
        return out, raw_bytes, len(payload)

    def _diagnostic_extra(self, worker: TopicWorker) -> dict[str, str]:
        modality = self._modality_of[worker.topic]
        name, settings = self.codec_settings[modality]
        extra = {"modality": modality.label, "codec": name,
                 "settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
                 "output_topic": worker.topic + COMPRESSED_SUFFIX}
        coding = self._camera_coding.get(worker.topic)
        if coding is not None and coding.rate is not None:
            extra["settings"] = ", ".join(
                f"{k}={'per frame' if k == coding.ladder_setting else v}"
                for k, v in settings.items())
            rate = coding.rate.snapshot()
            level = rate["level"]
            extra.update({
                "bandwidth.target_kbps": f"{rate['target_kbps']:.6g}",
                "bandwidth.achieved_kbps": f"{rate['achieved_kbps']:.6g}",
                "bandwidth.level": "none yet" if level is None else
                f"{coding.ladder_setting}={coding.ladder_values[level]}",
                "bandwidth.level_index": "none yet" if level is None else str(level),
                "bandwidth.fallbacks": str(rate["fallbacks"]),
                "bandwidth.frame_rate_hz": f"{rate['frame_rate_hz']:.4g}"})
        if coding is not None and coding.semantic_publisher is not None:
            extra["semantic_topic"] = worker.topic + self.semantic_suffix
        if modality == Modality.LIDAR and self._steering is not None:
            cache = self._steering["cache"]
            extra.update({"semantic.camera": self._steering["camera"],
                          "semantic.steered_frames": str(cache.hits),
                          "semantic.no_recent_map": str(cache.misses),
                          "semantic.waited_frames": str(cache.waits)})
        return extra

    def shutdown(self) -> None:
        if self._steering is not None:
            self._steering["cache"].close()  # a lidar worker may be waiting for a map
        for worker in self.workers:
            worker.stop()


def main(argv: list[str] | None = None) -> int:
    return run_node(ENCODER_NAME, EncoderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
