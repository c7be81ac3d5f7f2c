"""The compress pipeline's node graph, described once.

``launch/compress_pipeline.launch.py`` (for ``ros2 launch``) and
``sensor-codec launch`` (no ROS launch tooling needed) both build their
processes from ``pipeline_graph``, so the two can never drift apart. Pure
Python: nothing here imports ROS.

The graph::

    bag_player --(raw topics)--> encoder --(<topic>/sensor_codec)--> decoder --(<topic>/decoded)

With a camera codec that computes a semantic map (``camera_learned``), the
encoder also publishes it on ``<camera topic>/semantic`` and the decoder the
map it regenerates on ``<camera topic>/decoded/semantic`` (``semantic_topics``).

Topic names and codec settings come from the parameters file
(``config/pipeline.yaml``; ``config/pipeline_learned.yaml`` for the learned
camera codec with semantic topics, lidar steering and a bandwidth target);
only what the command line chooses (which nodes, which bag, replay rate, a
camera bandwidth target) is added here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .resources import PACKAGE, data_file, share_dir  # noqa: F401  (re-exported)

DEFAULT_CONFIG = "pipeline.yaml"
FASTDDS_PROFILE = "fastdds_profile.xml"
LAUNCH_FILE = "compress_pipeline.launch.py"

ENCODER_NAME = "sensor_codec_encoder"
DECODER_NAME = "sensor_codec_decoder"
BAG_PLAYER_NAME = "sensor_codec_bag_player"

COMPRESSED_SUFFIX = "/sensor_codec"
DECODED_SUFFIX = "/decoded"
# Semantic maps (mono8 class ids) beside the image they belong to: the
# encoder's on <camera topic>/semantic, the decoder's regenerated one on
# <decoded topic>/semantic.
SEMANTIC_SUFFIX = "/semantic"
TOPIC_LISTS = ("camera_topics", "lidar_topics", "radar_topics")

DEFAULT_RATE = 1.0
# Longest the bag player waits for the encoder to subscribe to its input
# topics before replaying, so the first frames are not published into the void.
DEFAULT_WAIT_FOR_SUBSCRIBERS = 10.0


@dataclass
class NodeSpec:
    """One process of the graph, as both launchers need it."""

    package: str
    executable: str
    name: str
    parameter_files: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)  # plain arguments, before --ros-args
    env: dict[str, str] = field(default_factory=dict)

    @property
    def module(self) -> str:
        """The Python module to run with ``python -m`` when the console
        script is not on hand (the package's nodes live in ``<package>.nodes``)."""
        return f"{self.package}.nodes.{self.executable}"


# --- installed data files -------------------------------------------------------

def default_config() -> Path:
    return data_file("config", DEFAULT_CONFIG)


def fastdds_profile() -> Path:
    return data_file("config", FASTDDS_PROFILE)


def launch_file() -> Path:
    return data_file("launch", LAUNCH_FILE)


def pipeline_environment(profile: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment every node of the pipeline runs with: the FastDDS profile
    (shared-memory transport sized for multi-megabyte frames)."""
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile or fastdds_profile())}


# --- the graph ------------------------------------------------------------------

def load_config(config_file: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{node name: parameters}`` from a ROS 2 parameters file."""
    path = Path(config_file)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline config {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"pipeline config {str(path)!r} is not valid YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"pipeline config {str(path)!r} must map node names to parameters")
    nodes = {}
    for node, body in document.items():
        params = body.get("ros__parameters") if isinstance(body, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(
                f"pipeline config {str(path)!r}: node {node!r} needs a 'ros__parameters' mapping")
        nodes[str(node).lstrip("/")] = params
    return nodes


def encoder_input_topics(encoder_params: dict[str, Any]) -> list[str]:
    """The raw topics an encoder configured with these parameters subscribes to."""
    topics = []
    for key in TOPIC_LISTS:
        value = encoder_params.get(key) or []
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ConfigError(f"encoder parameter {key!r} must be a list of topic names, "
                              f"got {value!r}")
        topics.extend(value)
    return topics


def encoder_output_topics(encoder_params: dict[str, Any]) -> list[str]:
    """The compressed topics an encoder configured with these parameters publishes."""
    return [t + COMPRESSED_SUFFIX for t in encoder_input_topics(encoder_params)]


def absolute_topic(topic: str, namespace: str = "/") -> str:
    """A relative topic name resolved in ``namespace`` (a bag stores absolute names)."""
    if topic.startswith("/"):
        return topic
    return namespace.rstrip("/") + "/" + topic


def semantic_topics(nodes: dict[str, dict[str, Any]]) -> list[str]:
    """The semantic-map topics a pipeline with these parameters (``load_config``'s
    result) publishes: the encoder's, then the decoder's; none unless the camera
    codec computes a semantic map."""
    from .codecs import codec_class  # the registry: no ROS

    encoder = nodes.get(ENCODER_NAME, {})
    camera = encoder.get("camera") if isinstance(encoder.get("camera"), dict) else {}
    codec = camera.get("codec", encoder.get("camera.codec", "jpeg"))
    cameras = encoder.get("camera_topics") or []
    if not cameras or not hasattr(codec_class(codec), "encode_with_semantic"):
        return []
    topics = []
    suffix = encoder.get("semantic_topic_suffix", SEMANTIC_SUFFIX)
    if suffix:
        topics += [t + suffix for t in cameras]
    decoder = nodes.get(DECODER_NAME, {})
    suffix = decoder.get("semantic_topic_suffix", SEMANTIC_SUFFIX)
    outputs = dict(zip(decoder.get("input_topics") or encoder_output_topics(encoder),
                       decoder.get("output_topics") or []))
    if suffix:
        for topic in cameras:
            compressed = topic + COMPRESSED_SUFFIX
            topics.append(outputs.get(compressed, topic + DECODED_SUFFIX) + suffix)
    return topics


def pipeline_graph(config_file: str | os.PathLike | None = None, encoder: bool = True,
                   decoder: bool = True, bag: str | os.PathLike | None = None,
                   rate: float = DEFAULT_RATE, loop: bool = False,
                   topics: list[str] | None = None,
                   wait_for_subscribers: float = DEFAULT_WAIT_FOR_SUBSCRIBERS,
                   camera_bandwidth_kbps: float | None = None) -> list[NodeSpec]:
    """The processes of the compress pipeline, bag player first.

    ``config_file`` is a ROS 2 parameters file with an entry per node name
    (``sensor_codec_encoder``, ``sensor_codec_decoder``); the default is the
    installed ``config/pipeline.yaml``. When the decoder's entry names no
    ``input_topics``, it decodes every topic the encoder publishes.
    ``camera_bandwidth_kbps`` (None: as the file says) overrides the encoder's
    ``camera.bandwidth_kbps``.
    """
    config = Path(config_file) if config_file else default_config()
    nodes = load_config(config)
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"replay rate must be a positive number, got {rate!r}")
    if wait_for_subscribers < 0:
        raise ConfigError(f"wait_for_subscribers must be >= 0 s, got {wait_for_subscribers!r}")
    if camera_bandwidth_kbps is not None and not (math.isfinite(camera_bandwidth_kbps)
                                                  and camera_bandwidth_kbps >= 0):
        raise ConfigError(f"camera bandwidth target must be >= 0 kbit/s (0 = off), got "
                          f"{camera_bandwidth_kbps!r}")
    specs: list[NodeSpec] = []
    if bag:
        bag_path = Path(bag)
        if not bag_path.exists():
            raise ConfigError(f"bag {str(bag_path)!r} does not exist")
        arguments = [str(bag_path), "--rate", _number(rate)]
        if loop:
            arguments.append("--loop")
        if topics:
            arguments += ["--topics", *topics]
        wait_topics = encoder_input_topics(nodes.get(ENCODER_NAME, {})) if encoder else []
        if wait_for_subscribers and wait_topics:
            arguments += ["--wait-for-subscribers", _number(wait_for_subscribers),
                          "--wait-topics", *(absolute_topic(t) for t in wait_topics)]
        specs.append(NodeSpec(PACKAGE, "bag_player", BAG_PLAYER_NAME, arguments=arguments))
    if encoder:
        overrides = ({} if camera_bandwidth_kbps is None
                     else {"camera.bandwidth_kbps": float(camera_bandwidth_kbps)})
        specs.append(NodeSpec(PACKAGE, "encoder_node", ENCODER_NAME,
                              parameter_files=[str(config)], parameters=overrides))
    if decoder:
        parameters = {}
        decoder_params = nodes.get(DECODER_NAME, {})
        if not decoder_params.get("input_topics"):
            inputs = encoder_output_topics(nodes.get(ENCODER_NAME, {}))
            if not inputs:
                raise ConfigError(
                    f"pipeline config {str(config)!r} gives the decoder no input_topics and the "
                    f"encoder no camera/lidar/radar topics to derive them from")
            parameters["input_topics"] = inputs
        specs.append(NodeSpec(PACKAGE, "decoder_node", DECODER_NAME,
                              parameter_files=[str(config)], parameters=parameters))
    return specs


# --- command lines ----------------------------------------------------------------

def ros_args(spec: NodeSpec) -> list[str]:
    """``--ros-args`` for a node: its name, parameter files, parameters, remappings."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    for path in spec.parameter_files:
        args += ["--params-file", str(path)]
    for key, value in spec.parameters.items():
        args += ["-p", f"{key}:={param_value(value)}"]
    for source, target in spec.remappings:
        args += ["-r", f"{source}:={target}"]
    return args


def param_value(value: Any) -> str:
    """A parameter value as ``-p name:=VALUE`` wants it (YAML, which rcl parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        # Plain when YAML reads it back as the same string, else quoted.
        try:
            plain = yaml.safe_load(value) == value and "," not in value and "]" not in value
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(param_value(v) for v in value) + "]"
    raise ConfigError(f"parameter value {value!r} of type {type(value).__name__} cannot be "
                      f"passed on the command line")


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return repr(value)
