"""rclpy plumbing shared by the sensor_codec nodes.

Parameters declared once from a table (with descriptors), QoS from
parameters, per-topic worker threads behind drop-oldest queues, diagnostics,
throttled logging and a ``run_node`` entry point that fails fast on bad
configuration and stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import InvalidTopicNameException, ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.expand_topic_name import expand_topic_name
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_policy_name_from_kind)
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_topic_name import validate_topic_name

from sensor_codec.codecs import Param
from sensor_codec.errors import ConfigError, SensorCodecError
from sensor_codec.pipeline_stats import DropOldestQueue, LogThrottle, QueueClosed, TopicStats

INT64_MAX = 2**63 - 1
FLOAT_MAX = sys.float_info.max
# How often the main loop looks at the stop flag set by a signal handler.
SPIN_PERIOD_S = 0.1
LOG_THROTTLE_S = 5.0

_PARAMETER_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    list: ParameterType.PARAMETER_STRING_ARRAY,  # the only arrays the nodes take
}
_RCLPY_TYPES = {
    bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
    str: Parameter.Type.STRING, list: Parameter.Type.STRING_ARRAY,
}


# --- parameters -----------------------------------------------------------------

@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: declared once, with its description and range.

    ``type`` is bool, int, float, str or list (a list of strings).
    """

    name: str
    type: type
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    @classmethod
    def from_codec_param(cls, prefix: str, param: Param, codec: str) -> "ParamSpec":
        """A node parameter ``<prefix>.<setting>`` for one setting of a codec."""
        return cls(f"{prefix}.{param.name}", param.type, param.default,
                   f"{param.description} (codec {codec})", param.min, param.max, param.choices)

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, type=_PARAMETER_TYPES[self.type],
                                description=self.description, read_only=True)
        if self.choices is not None:
            d.additional_constraints = "one of: " + ", ".join(str(c) for c in self.choices)
        if self.type is int and (self.min is not None or self.max is not None):
            d.integer_range = [IntegerRange(
                from_value=int(self.min) if self.min is not None else -INT64_MAX,
                to_value=int(self.max) if self.max is not None else INT64_MAX, step=0)]
        if self.type is float and (self.min is not None or self.max is not None):
            d.floating_point_range = [FloatingPointRange(
                from_value=float(self.min) if self.min is not None else -FLOAT_MAX,
                to_value=float(self.max) if self.max is not None else FLOAT_MAX, step=0.0)]
        return d


def declare_parameters(node: Node, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every parameter of the table and return their values.

    Out-of-range values, wrong types and values outside ``choices`` raise
    ConfigError naming the parameter and what it accepts.
    """
    values = {}
    for spec in specs:
        empty_list = spec.type is list and not spec.default
        try:
            declared = node.declare_parameter(
                spec.name, _RCLPY_TYPES[list] if empty_list else spec.default, spec.descriptor())
        except ParameterException as exc:
            raise ConfigError(f"parameter {spec.name!r}: {exc} ({_accepts(spec)})") from None
        value = declared.value
        if value is None and spec.type is list:
            value = []  # an empty array override (`[]`) arrives untyped
        if spec.type is list:
            value = list(value)
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"parameter {spec.name!r} = {value!r} is not allowed; "
                              f"{_accepts(spec)}")
        values[spec.name] = value
    return values


def _accepts(spec: ParamSpec) -> str:
    kind = {list: "a list of strings"}.get(spec.type, spec.type.__name__)
    parts = [f"it takes {kind}"]
    if spec.choices is not None:
        parts.append(f"one of {list(spec.choices)}")
    if spec.min is not None:
        parts.append(f">= {spec.min}")
    if spec.max is not None:
        parts.append(f"<= {spec.max}")
    return ", ".join(parts)


def undeclared_overrides(node: Node) -> list[str]:
    """Parameters given on the command line or in a params file that the
    node did not declare (typically a typo, or a setting of another codec)."""
    # rclpy keeps the overrides in a private attribute; without it there is
    # nothing to check against, which only loses this diagnostic.
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    return sorted(name for name in overrides if not node.has_parameter(name))


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    policy = {"reliable": ReliabilityPolicy.RELIABLE,
              "best_effort": ReliabilityPolicy.BEST_EFFORT}.get(reliability)
    if policy is None:
        raise ConfigError(f"qos.reliability {reliability!r} must be 'reliable' or 'best_effort'")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


def qos_mismatch_callbacks(node: Node, topic: str, reliability: str, subscription: bool):
    """Event callbacks that say which parameter to change when a peer on
    ``topic`` cannot connect because of its QoS (a best-effort camera driver
    and a reliable subscription, typically)."""
    peer = "publisher" if subscription else "subscriber"

    def warn(info) -> None:
        policy = qos_policy_name_from_kind(info.last_policy_kind)
        node.get_logger().warning(
            f"{topic}: a {peer} with incompatible QoS ({policy}) cannot connect; this node uses "
            f"qos.reliability={reliability}"
            + ("; set qos.reliability:=best_effort to accept best-effort publishers"
               if subscription and reliability == "reliable" else ""))

    if subscription:
        return SubscriptionEventCallbacks(incompatible_qos=warn)
    return PublisherEventCallbacks(incompatible_qos=warn)


COMMON_PARAMS = (
    # Four frames (0.4 s at 10 Hz) ride out a hiccup such as a node's first
    # frame; sustained overload still drops the oldest, keeping latency bounded.
    ParamSpec("queue_depth", int, 4,
              "frames waiting per topic; when full the oldest is dropped and counted",
              min=1, max=1000),
    ParamSpec("qos.reliability", str, "reliable",
              "reliability of the data subscriptions and publications",
              choices=("reliable", "best_effort")),
    ParamSpec("qos.depth", int, 5, "history depth of the data subscriptions and publications",
              min=1, max=1000),
    ParamSpec("diagnostics_period", float, 1.0,
              "seconds between /diagnostics messages", min=0.05, max=3600.0),
)


# --- per-topic workers ------------------------------------------------------------

class TopicWorker:
    """One input topic: a drop-oldest queue filled by the subscription
    callback and a thread that converts, codes and publishes.

    ``process(msg)`` returns ``(out_msg, raw_bytes, coded_bytes)``; a
    ``SensorCodecError`` from it means a bad message: it is logged
    (throttled), counted and skipped.
    """

    def __init__(self, node: Node, topic: str, queue_depth: int,
                 process: Callable[[Any], tuple[Any, int, int]],
                 publish: Callable[[Any], None], throttle: LogThrottle) -> None:
        self.node = node
        self.topic = topic
        self.queue: DropOldestQueue = DropOldestQueue(queue_depth)
        self.stats = TopicStats()
        self._process = process
        self._publish = publish
        self._throttle = throttle
        self._thread = threading.Thread(target=self._run, name=f"worker {topic}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, msg: Any) -> None:
        """Subscription callback: never blocks, never codes."""
        self.stats.on_received()
        try:
            self.queue.put(msg)
        except QueueClosed:
            pass  # shutting down: the message is not wanted any more

    def stop(self, timeout: float = 5.0) -> None:
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                msg = self.queue.get()
            except QueueClosed:
                return
            started = time.perf_counter()
            try:
                out, raw_bytes, coded_bytes = self._process(msg)
                self._publish(out)
            except SensorCodecError as exc:
                self._count_error("bad message", f"skipped a message: {exc}", warn=True)
                continue
            except Exception as exc:  # a bug, not bad data: keep serving the other frames
                self._count_error("internal", f"failed on a message ({type(exc).__name__}: "
                                              f"{exc})", warn=False)
                continue
            self.stats.on_processed(raw_bytes, coded_bytes, time.perf_counter() - started)

    def _count_error(self, kind: str, message: str, warn: bool) -> None:
        """Count it; log it unless one of the same kind was logged recently."""
        self.stats.on_error(message)
        suppressed = self._throttle.allow((self.topic, kind))
        if suppressed is None:
            return
        more = f" ({suppressed} similar suppressed)" if suppressed else ""
        log = self.node.get_logger()
        (log.warning if warn else log.error)(f"{self.topic}: {message}{more}")


# --- diagnostics ------------------------------------------------------------------

def diagnostic_status(node_name: str, topic: str, snapshot: dict[str, Any],
                      new_problems: bool, extra: dict[str, str] | None = None) -> DiagnosticStatus:
    """One DiagnosticStatus for a topic; WARN while frames are dropped or bad."""
    values = [KeyValue(key="topic", value=topic)]
    values += [KeyValue(key=k, value=v) for k, v in (extra or {}).items()]
    values += [KeyValue(key=k, value=_format_value(v)) for k, v in snapshot.items()]
    if new_problems:
        level = DiagnosticStatus.WARN
        message = f"dropping or skipping frames (drops {snapshot['drops']}, errors " \
                  f"{snapshot['errors']})"
    elif snapshot["received"] == 0:
        level, message = DiagnosticStatus.OK, "waiting for messages"
    else:
        level, message = DiagnosticStatus.OK, "ok"
    return DiagnosticStatus(level=level, name=f"{node_name}: {topic}", message=message,
                            hardware_id=topic, values=values)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class DiagnosticsReporter:
    """Publishes /diagnostics every ``period`` seconds for a set of workers."""

    def __init__(self, node: Node, workers: Sequence[TopicWorker], period: float,
                 extra: Callable[[TopicWorker], dict[str, str]] | None = None) -> None:
        self.node = node
        self.workers = workers
        self.extra = extra
        self._last_problems: dict[str, tuple[int, int]] = {}
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        statuses = []
        for worker in self.workers:
            snapshot = worker.stats.snapshot(drops=worker.queue.drops)
            problems = (snapshot["drops"], snapshot["errors"])
            new = problems != self._last_problems.get(worker.topic, (0, 0))
            self._last_problems[worker.topic] = problems
            statuses.append(diagnostic_status(
                self.node.get_name(), worker.topic, snapshot, new,
                self.extra(worker) if self.extra else None))
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.publisher.publish(msg)


# --- topics -----------------------------------------------------------------------

def check_topics(node: Node, topics: Iterable[str], what: str) -> list[str]:
    """Check and expand each topic name, so a bad or repeated one fails at
    start-up with its name (rclpy would fail later, less clearly)."""
    seen = {}
    for topic in topics:
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"{what}: empty topic name")
        try:
            validate_topic_name(topic)
            resolved = expand_topic_name(topic, node.get_name(), node.get_namespace())
            validate_full_topic_name(resolved)
        except (InvalidTopicNameException, ValueError) as exc:  # ValueError: bad {substitution}
            reason = " ".join(str(exc).split())
            raise ConfigError(f"{what}: invalid topic name {topic!r}: {reason}") from None
        if resolved in seen:
            raise ConfigError(f"{what}: topic {topic!r} is listed twice (as {seen[resolved]!r})")
        seen[resolved] = topic
    return list(seen.values())


# --- process entry point ------------------------------------------------------------

class StoppableNode(Node):
    """A node with worker threads to stop before it is destroyed."""

    def shutdown(self) -> None:
        """Stop background work; called once, before ``destroy_node``."""


@contextlib.contextmanager
def ros_process(argv: list[str] | None = None) -> Iterator[threading.Event]:
    """rclpy initialised for this process; yields an event set by SIGINT or SIGTERM.

    rclpy's own signal handlers are off: they would raise KeyboardInterrupt
    at an arbitrary point or shut the context down under the worker threads.
    Here a signal only sets the event and the main loop winds down in order.
    """
    rclpy.init(args=sys.argv if argv is None else argv,
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def request_stop(_signum, _frame):
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_node(name: str, factory: Callable[[], StoppableNode],
             argv: list[str] | None = None) -> int:
    """Run a node until SIGINT or SIGTERM; return the process exit code.

    A ConfigError (or any library error) while building the node is logged
    as fatal and gives exit code 1. A signal stops the node cleanly (workers joined, node destroyed,
    context shut down) with exit code 0.
    """
    with ros_process(argv) as stop:
        try:
            node = factory()
        except SensorCodecError as exc:  # ConfigError above all: fail fast
            get_logger(name).fatal(f"invalid configuration: {exc}")
            return 1
        try:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
            node.get_logger().info("stopping")
            executor.remove_node(node)
        finally:
            node.shutdown()
            node.destroy_node()
        return 0
