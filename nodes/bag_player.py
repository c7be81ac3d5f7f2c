"""bag_player: replay a rosbag (sqlite3 or mcap) onto ROS topics.

    bag_player BAG [--rate R] [--loop] [--topics T ...]
               [--wait-for-subscribers SECONDS [--wait-topics T ...]]
               [--ros-args ...]

Publishes each stored message's raw CDR bytes (no deserialisation) with the
recorded type on the recorded topic, keeping the recorded timing scaled by
``--rate``. Reads bags through ``sensor_codec.bag.io``, so no rosbag2
install is needed. Stops on SIGINT/SIGTERM with exit code 0; exits 0 when the
bag is done (unless ``--loop``), 1 when the bag cannot be read.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from pathlib import Path

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args

from sensor_codec.bag.io import bag_topics, read_messages
from sensor_codec.errors import BagError, ConfigError, SensorCodecError
from sensor_codec.graph import BAG_PLAYER_NAME

from ._ros_common import ros_process

PUBLISH_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# How long, after the last message, to wait for reliable subscribers to acknowledge it.
ACK_TIMEOUT_S = 10.0
# Granularity of the wait for subscribers (a poll of the match count).
MATCH_POLL_S = 0.01


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path, help="bag directory or storage file")
    parser.add_argument("--rate", type=positive_float, default=1.0, help="replay rate factor")
    parser.add_argument("--loop", action="store_true", help="start again at the end")
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC",
                        help="replay only these topics")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                        help="before replaying, wait up to this long until the wait topics "
                             "have a subscriber")
    parser.add_argument("--min-subscribers", type=positive_int, default=1, metavar="N",
                        help="with --wait-for-subscribers: how many subscribers each wait "
                             "topic needs (default %(default)s)")
    parser.add_argument("--wait-topics", nargs="+", default=None, metavar="TOPIC",
                        help="topics whose subscribers to wait for (default: every replayed "
                             "topic); topics not in the bag are ignored")
    return parser


def message_class(msgtype: str):
    """The rclpy class of ``pkg/msg/Name`` (raises BagError if not installed)."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        raise BagError(f"message type {msgtype!r} is not installed for rclpy") from None


class BagPlayer:
    """Publishers for a bag's topics and the timed replay loop."""

    def __init__(self, node: Node, bag: Path, topics: list[str] | None) -> None:
        self.node = node
        self.bag = bag
        available = bag_topics(bag)
        if topics is not None:
            missing = sorted(set(topics) - set(available))
            if missing:
                raise ConfigError(f"bag {str(bag)!r} has no topic(s) {missing}; it has "
                                  f"{sorted(available)}")
            available = {t: available[t] for t in topics}
        self.publishers = {}
        for topic, msgtype in available.items():
            try:
                cls = message_class(msgtype)
            except BagError as exc:
                node.get_logger().warning(f"not replaying {topic}: {exc}")
                continue
            self.publishers[topic] = node.create_publisher(cls, topic, PUBLISH_QOS)
        if not self.publishers:
            raise ConfigError(f"bag {str(bag)!r} has no topic this player can publish")
        self.published = dict.fromkeys(self.publishers, 0)

    def wait_for_subscribers(self, topics: list[str] | None, timeout: float,
                             stop: threading.Event, minimum: int = 1) -> list[str]:
        """Wait until each topic has ``minimum`` subscribers; returns those still short."""
        wanted = [t for t in (topics or self.publishers) if t in self.publishers]
        deadline = time.monotonic() + timeout
        while True:
            missing = [t for t in wanted
                       if self.publishers[t].get_subscription_count() < minimum]
            if not missing or stop.is_set() or time.monotonic() >= deadline:
                return missing
            stop.wait(MATCH_POLL_S)

    def wait_until_delivered(self, timeout_s: float) -> list[str]:
        """Topics whose reliable subscribers have not acknowledged everything yet.

        Exiting right after the last publish would destroy the writers while
        the last frames are still in flight, and the subscribers would lose them.
        """
        deadline = time.monotonic() + timeout_s
        return [topic for topic, pub in self.publishers.items()
                if not pub.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))]

    def play(self, rate: float, loop: bool, stop: threading.Event) -> None:
        """Publish every message at its recorded time divided by ``rate``."""
        while not stop.is_set():
            start_wall = time.monotonic()
            start_bag = None
            for topic, _msgtype, stamp_ns, data in read_messages(self.bag,
                                                                  list(self.publishers)):
                if start_bag is None:
                    start_bag = stamp_ns
                due = start_wall + (stamp_ns - start_bag) / 1e9 / rate
                delay = due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                if stop.is_set():
                    return
                self.publishers[topic].publish(data)
                self.published[topic] += 1
            if not loop or start_bag is None:
                return


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` without the program name (``sensor-codec bag replay``
    passes plain arguments; a launch adds ``--ros-args``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(["bag_player", *argv])[1:])
    with ros_process(["bag_player", *argv]) as stop:
        node = Node(BAG_PLAYER_NAME)
        log = node.get_logger()
        try:
            try:
                player = BagPlayer(node, args.bag, args.topics)
            except SensorCodecError as exc:
                log.fatal(f"cannot replay: {exc}")
                return 1
            if args.wait_for_subscribers > 0:
                missing = player.wait_for_subscribers(args.wait_topics,
                                                      args.wait_for_subscribers, stop,
                                                      args.min_subscribers)
                if missing:
                    log.warning(f"replaying although {missing} have no subscriber after "
                                f"{args.wait_for_subscribers} s")
            log.info(f"replaying {args.bag} at x{args.rate}{' in a loop' if args.loop else ''}: "
                     f"{sorted(player.publishers)}")
            try:
                player.play(args.rate, args.loop, stop)
            except SensorCodecError as exc:
                log.error(f"replay stopped: {exc}")
                return 1
            if not stop.is_set():
                unacked = player.wait_until_delivered(ACK_TIMEOUT_S)
                if unacked:
                    log.warning(f"{unacked} not acknowledged by every subscriber within "
                                f"{ACK_TIMEOUT_S} s")
            log.info(f"{'stopped' if stop.is_set() else 'done'}; published {player.published}")
            return 0
        finally:
            node.destroy_node()


if __name__ == "__main__":
    sys.exit(main())
