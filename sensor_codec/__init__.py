"""sensor_codec: compression of camera, lidar and radar frames for ROS 2 fleets.

The library imports nothing from ROS; ``sensor_codec.nodes`` holds the thin
ROS 2 adapters.
"""

from .codecs import codec_names, decode, encode, get_codec
from .errors import SensorCodecError
from .frames import CameraFrame, Modality, PointCloudFrame
from .wire import FORMAT_VERSION, Container, unpack

__version__ = "0.1.0"

__all__ = ["CameraFrame", "Container", "FORMAT_VERSION", "Modality", "PointCloudFrame",
           "SensorCodecError", "codec_names", "decode", "encode", "get_codec", "unpack"]
