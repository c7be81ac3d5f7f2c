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
``diagnostics_period``.
"""

from __future__ import annotations

import sys
from functools import partial

from sensor_msgs.msg import CompressedImage, Image, PointCloud2

from sensor_codec.codecs import Codec, codec_class, codec_names, get_codec
from sensor_codec.errors import ConfigError
from sensor_codec.frames import Modality
from sensor_codec.graph import COMPRESSED_SUFFIX, ENCODER_NAME
from sensor_codec.messages import (image_to_frame, payload_to_compressed, pointcloud2_to_frame,
                                   rclpy_types)
from sensor_codec.pipeline_stats import LogThrottle

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


def codec_param(modality: Modality) -> ParamSpec:
    return ParamSpec(f"{modality.label}.codec", str, DEFAULT_CODECS[modality],
                     f"codec for every {modality.label} topic; its settings are "
                     f"{modality.label}.<setting>",
                     choices=tuple(codec_names(modality)))


class EncoderNode(StoppableNode):
    def __init__(self, node_name: str = ENCODER_NAME, **node_options) -> None:
        """``node_options`` go to rclpy's Node (context, parameter_overrides, ...)."""
        super().__init__(node_name, **node_options)
        params = declare_parameters(self, TOPIC_PARAMS + COMMON_PARAMS)
        self.codec_settings = {m: self._declare_codec(m) for m in Modality}
        self._refuse_unknown_parameters()

        topics = [(m, t) for m in Modality for t in params[f"{m.label}_topics"]]
        check_topics(self, [t for _, t in topics], "camera/lidar/radar_topics")
        if not topics:
            raise ConfigError("no input topics: set camera_topics, lidar_topics and/or "
                              "radar_topics to the topics to compress")
        self.types = rclpy_types()
        qos = qos_profile(params["qos.reliability"], params["qos.depth"])
        throttle = LogThrottle(LOG_THROTTLE_S)
        self.workers: list[TopicWorker] = []
        self._modality_of = {}
        for modality, topic in topics:
            name, settings = self.codec_settings[modality]
            codec = get_codec(name, **settings)  # one instance per worker thread
            output = topic + COMPRESSED_SUFFIX
            publisher = self.create_publisher(
                CompressedImage, output, qos, event_callbacks=qos_mismatch_callbacks(
                    self, output, params["qos.reliability"], subscription=False))
            worker = TopicWorker(self, topic, params["queue_depth"],
                                 partial(self._encode, codec, modality), publisher.publish,
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

    def _encode(self, codec: Codec, modality: Modality, msg):
        if modality == Modality.CAMERA:
            frame = image_to_frame(msg)
        else:
            frame = pointcloud2_to_frame(msg, modality)
        payload = codec.encode(frame)
        out = payload_to_compressed(payload, self.types, frame.stamp_ns, frame.frame_id)
        return out, frame.nbytes, len(payload)

    def _diagnostic_extra(self, worker: TopicWorker) -> dict[str, str]:
        modality = self._modality_of[worker.topic]
        name, settings = self.codec_settings[modality]
        return {"modality": modality.label, "codec": name,
                "settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
                "output_topic": worker.topic + COMPRESSED_SUFFIX}

    def shutdown(self) -> None:
        for worker in self.workers:
            worker.stop()


def main(argv: list[str] | None = None) -> int:
    return run_node(ENCODER_NAME, EncoderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
