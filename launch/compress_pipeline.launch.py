"""Launch the compress pipeline: [bag player ->] encoder -> decoder.

    ros2 launch sensor_codec compress_pipeline.launch.py \\
        [config:=my_pipeline.yaml] [encoder:=true] [decoder:=true] \\
        [bag:=/path/to/bag] [rate:=1.0] [loop:=false] [camera_bandwidth_kbps:=500]

The nodes, their parameters files and arguments come from
``sensor_codec.graph.pipeline_graph``, the same description
``sensor-codec launch`` runs, so the two cannot drift apart. Topic names and
codec settings live in the parameters file (config/pipeline.yaml by default);
nothing here repeats a node default. ``camera_bandwidth_kbps`` (empty: as the
parameters file says) sets the encoder's bit-rate target per camera topic;
``config:=<share>/config/pipeline_learned.yaml`` runs the learned camera
codec with semantic map topics and semantic lidar steering.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sensor_codec.graph import (DEFAULT_CONFIG, DEFAULT_RATE, FASTDDS_PROFILE, PACKAGE,
                                pipeline_graph)


def _flag(context, name):
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={value!r} must be true or false")
    return value == "true"


def _pipeline_nodes(context, *args, **kwargs):
    """Build the Node actions once the launch arguments are known."""
    bag = LaunchConfiguration("bag").perform(context).strip()
    bandwidth = LaunchConfiguration("camera_bandwidth_kbps").perform(context).strip()
    try:
        bandwidth_kbps = float(bandwidth) if bandwidth else None
    except ValueError:
        raise ValueError(f"launch argument camera_bandwidth_kbps:={bandwidth!r} must be a "
                         f"number of kbit/s (0 = off) or empty") from None
    specs = pipeline_graph(
        LaunchConfiguration("config").perform(context),
        encoder=_flag(context, "encoder"),
        decoder=_flag(context, "decoder"),
        bag=bag or None,
        rate=float(LaunchConfiguration("rate").perform(context)),
        loop=_flag(context, "loop"),
        camera_bandwidth_kbps=bandwidth_kbps,
    )
    nodes = []
    for spec in specs:
        parameters = list(spec.parameter_files)
        if spec.parameters:
            parameters.append(dict(spec.parameters))
        nodes.append(Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            parameters=parameters,
            remappings=list(spec.remappings),
            arguments=list(spec.arguments),
            additional_env=dict(spec.env),
            output="screen",
            emulate_tty=True,
        ))
    return nodes


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument(
            "config", default_value=os.path.join(share, "config", DEFAULT_CONFIG),
            description="ROS 2 parameters file of the encoder and decoder"),
        DeclareLaunchArgument("encoder", default_value="true", choices=["true", "false"],
                              description="start the encoder node"),
        DeclareLaunchArgument("decoder", default_value="true", choices=["true", "false"],
                              description="start the decoder node"),
        DeclareLaunchArgument("bag", default_value="",
                              description="rosbag (sqlite3 or mcap) to replay; empty for none"),
        DeclareLaunchArgument("rate", default_value=str(DEFAULT_RATE),
                              description="bag replay rate factor"),
        DeclareLaunchArgument("loop", default_value="false", choices=["true", "false"],
                              description="replay the bag in a loop"),
        DeclareLaunchArgument("camera_bandwidth_kbps", default_value="",
                              description="bit-rate target per camera topic in kbit/s, the "
                                          "encoder picks the quality per frame (0 = off; "
                                          "empty: as the parameters file says)"),
        # Shared memory sized for multi-megabyte frames; see the profile's comments.
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               os.path.join(share, "config", FASTDDS_PROFILE)),
        OpaqueFunction(function=_pipeline_nodes),
    ])
