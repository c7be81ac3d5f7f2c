"""decoder_node: turns sensor_codec topics back into Image / PointCloud2.

Subscribes to every ``input_topics`` entry (sensor_msgs/CompressedImage
holding a sensor_codec container), decodes with ``sensor_codec.decode`` and
republishes the frame with the message's original header on the matching
``output_topics`` entry, by default the input topic without its
``/sensor_codec`` suffix plus ``/decoded``.

The output type follows the payload: camera payloads become
sensor_msgs/Image, lidar and radar payloads sensor_msgs/PointCloud2. The
publisher is created on the first payload of a topic; a later payload of the
other kind on the same topic is counted as an error. Malformed or foreign
payloads are logged (throttled), counted in /diagnostics and skipped.

Payloads of a codec that regenerates a semantic map (``camera_learned``) also
give that map, published as a ``mono8`` image of class ids on
``<output topic><semantic_topic_suffix>`` (default ``/semantic``) with the
same header; '' switches it off (and saves the backbone pass). Lidar payloads
coded in semantic mode decode with their ``semantic_class`` field, which is
republished like every other field.
"""

from __future__ import annotations

import sys
import threading
import time
from functools import partial

from sensor_msgs.msg import CompressedImage

from sensor_codec.codecs import codec_class
from sensor_codec.errors import ConfigError, ConversionError
from sensor_codec.frames import CameraFrame
from sensor_codec.graph import COMPRESSED_SUFFIX, DECODED_SUFFIX, DECODER_NAME, SEMANTIC_SUFFIX
from sensor_codec.messages import (compressed_to_payload, frame_to_image, frame_to_pointcloud2,
                                   rclpy_types)
from sensor_codec.wire import unpack
from sensor_codec.pipeline_stats import LogThrottle

from ._ros_common import (COMMON_PARAMS, LOG_THROTTLE_S, DiagnosticsReporter, ParamSpec,
                          StoppableNode, TopicWorker, check_topics, declare_parameters,
                          qos_mismatch_callbacks, qos_profile, run_node, undeclared_overrides)

# A publisher created on the first payload waits up to this long for the
# subscribers already known on its topic to match, so that first frame is
# delivered instead of published before anyone is connected.
MATCH_TIMEOUT_S = 2.0
MATCH_POLL_S = 0.005

PARAMS = (
    ParamSpec("input_topics", list, [],
              f"sensor_codec topics to decode (CompressedImage, usually "
              f"<topic>{COMPRESSED_SUFFIX})"),
    ParamSpec("output_topics", list, [],
              f"where each input's frames go, in the same order; empty: the input without "
              f"{COMPRESSED_SUFFIX} plus {DECODED_SUFFIX}"),
    ParamSpec("semantic_topic_suffix", str, SEMANTIC_SUFFIX,
              "payloads whose codec regenerates a semantic map (camera_learned) publish it as "
              "mono8 class ids on <output topic><suffix>; '' = do not decode or publish it"),
) + COMMON_PARAMS


def default_output_topic(input_topic: str) -> str:
    base = input_topic[:-len(COMPRESSED_SUFFIX)] if input_topic.endswith(COMPRESSED_SUFFIX) \
        else input_topic
    return base + DECODED_SUFFIX


class LazyPublisher:
    """A publisher whose message type is that of the first message published."""

    def __init__(self, node: StoppableNode, topic: str, qos, reliability: str,
                 stop: threading.Event) -> None:
        self.node = node
        self.topic = topic
        self.qos = qos
        self.reliability = reliability
        self.stop = stop
        self.publisher = None
        self.msg_type = None

    def publish(self, msg) -> None:
        if self.publisher is None:
            self.msg_type = type(msg)
            self.publisher = self.node.create_publisher(
                self.msg_type, self.topic, self.qos, event_callbacks=qos_mismatch_callbacks(
                    self.node, self.topic, self.reliability, subscription=False))
            self._wait_for_known_subscribers()
        elif not isinstance(msg, self.msg_type):
            raise ConversionError(
                f"{self.topic} already carries {self.msg_type.__name__}; a payload decoding to "
                f"{type(msg).__name__} cannot be published there (give it its own output topic)")
        self.publisher.publish(msg)

    def _wait_for_known_subscribers(self) -> None:
        deadline = time.monotonic() + MATCH_TIMEOUT_S
        while time.monotonic() < deadline and not self.stop.is_set():
            known = self.node.count_subscribers(self.topic)
            if self.publisher.get_subscription_count() >= known:
                return
            self.stop.wait(MATCH_POLL_S)


class DecoderNode(StoppableNode):
    def __init__(self, node_name: str = DECODER_NAME, **node_options) -> None:
        """``node_options`` go to rclpy's Node (context, parameter_overrides, ...)."""
        super().__init__(node_name, **node_options)
        params = declare_parameters(self, PARAMS)
        for name in undeclared_overrides(self):
            self.get_logger().warning(f"ignoring parameter {name!r}: this node does not "
                                      f"declare it")
        inputs = check_topics(self, params["input_topics"], "input_topics")
        if not inputs:
            raise ConfigError("no input_topics: list the sensor_codec topics to decode, "
                              f"e.g. [camera/image_raw{COMPRESSED_SUFFIX}]")
        outputs = params["output_topics"] or [default_output_topic(t) for t in inputs]
        if len(outputs) != len(inputs):
            raise ConfigError(f"output_topics has {len(outputs)} entries for {len(inputs)} "
                              f"input_topics; give one per input or none")
        check_topics(self, outputs, "output_topics")
        self.semantic_suffix = params["semantic_topic_suffix"]
        if self.semantic_suffix:
            check_topics(self, outputs + [o + self.semantic_suffix for o in outputs],
                         "output_topics and their semantic_topic_suffix topics")
        self.types = rclpy_types()
        self._stopping = threading.Event()
        qos = qos_profile(params["qos.reliability"], params["qos.depth"])
        throttle = LogThrottle(LOG_THROTTLE_S)
        self.workers: list[TopicWorker] = []
        self._output_of = {}
        for topic, output in zip(inputs, outputs):
            sink = LazyPublisher(self, output, qos, params["qos.reliability"], self._stopping)
            semantic_sink = (LazyPublisher(self, output + self.semantic_suffix, qos,
                                           params["qos.reliability"], self._stopping)
                             if self.semantic_suffix else None)
            worker = TopicWorker(self, topic, params["queue_depth"], self._decode,
                                 partial(self._publish, sink, semantic_sink), throttle)
            self.create_subscription(
                CompressedImage, topic, worker.offer, qos,
                event_callbacks=qos_mismatch_callbacks(self, topic, params["qos.reliability"],
                                                       subscription=True))
            self.workers.append(worker)
            self._output_of[topic] = output
        self.diagnostics = DiagnosticsReporter(
            self, self.workers, params["diagnostics_period"],
            lambda w: {"output_topic": self._output_of[w.topic],
                       "semantic_topic": (self._output_of[w.topic] + self.semantic_suffix
                                          if self.semantic_suffix else "off")})
        for worker in self.workers:
            worker.start()
        for topic, output in zip(inputs, outputs):
            self.get_logger().info(f"{topic} -> {output}")

    def _decode(self, msg):
        """((decoded message, semantic map message or None), raw bytes, coded bytes)."""
        payload = compressed_to_payload(msg)
        container = unpack(payload)
        codec = codec_class(container.codec)()
        semantic_msg = None
        if self.semantic_suffix and hasattr(codec, "decode_with_semantic"):
            frame, semantic = codec.decode_with_semantic(container)
            if semantic is not None:
                semantic_msg = frame_to_image(semantic, self.types)
                semantic_msg.header = msg.header
        else:
            frame = codec.decode(container)
        if isinstance(frame, CameraFrame):
            out = frame_to_image(frame, self.types)
        else:
            out = frame_to_pointcloud2(frame, self.types)
        out.header = msg.header  # the original header, as received
        return (out, semantic_msg), frame.nbytes, len(payload)

    @staticmethod
    def _publish(sink: LazyPublisher, semantic_sink: LazyPublisher | None, messages) -> None:
        out, semantic_msg = messages
        sink.publish(out)
        if semantic_msg is not None and semantic_sink is not None:
            semantic_sink.publish(semantic_msg)

    def shutdown(self) -> None:
        self._stopping.set()
        for worker in self.workers:
            worker.stop()


def main(argv: list[str] | None = None) -> int:
    return run_node(DECODER_NAME, DecoderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
