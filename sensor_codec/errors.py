"""Typed exceptions for every failure the library can report.

Callers catch ``SensorCodecError`` for "anything from this library" or a
specific subclass when they can act on it (a node skips a frame on
``WireFormatError`` but stops on ``ConfigError``).
"""


class SensorCodecError(Exception):
    """Base class of every error raised by sensor_codec."""


class ConfigError(SensorCodecError, ValueError):
    """A parameter or configuration value is invalid."""


class InvalidFrameError(SensorCodecError, ValueError):
    """A frame handed to a codec does not fit what the codec accepts."""


class ConversionError(SensorCodecError, ValueError):
    """A ROS message cannot be turned into a frame (or back)."""


class WireFormatError(SensorCodecError, ValueError):
    """A payload is not a valid sensor_codec container."""


class BadMagicError(WireFormatError):
    """The payload does not start with the sensor_codec magic bytes."""


class TruncatedPayloadError(WireFormatError):
    """The payload ends before a declared field or section."""


class ChecksumMismatchError(WireFormatError):
    """The CRC32 stored in the payload does not match its contents."""


class UnsupportedVersionError(WireFormatError):
    """The container's format version is not one this decoder reads."""


class OversizedPayloadError(WireFormatError):
    """A declared size exceeds the decoder's safety caps."""


class UnknownCodecError(SensorCodecError, KeyError):
    """No codec is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown codec"


class UnknownModelError(SensorCodecError):
    """The payload was made by a model (weights) this decoder does not hold."""


class CodecError(SensorCodecError):
    """A codec failed to encode or decode valid-looking data."""


class BagError(SensorCodecError):
    """A rosbag cannot be read, written or converted."""
