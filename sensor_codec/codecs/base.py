"""The codec contract and the registry of codecs by stable name.

A codec turns a frame into a container payload and back. Subclasses
implement ``_encode`` (frame -> metadata + byte sections) and ``_decode``
(container -> frame); the base class does the container packing, the
modality and model checks, and settings validation against the declared
``Param`` table (which the ROS nodes also use as parameter descriptors).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import (ConfigError, InvalidFrameError, OversizedPayloadError, UnknownCodecError,
                      UnknownModelError, WireFormatError)
from ..frames import CameraFrame, Frame, Modality, PointCloudFrame
from ..wire import Container, check_point_count, unpack

CLASSICAL_MODEL_ID = "classical"


@dataclass(frozen=True)
class Param:
    """One codec setting, declared once with its range and description."""

    name: str
    type: type
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    def validate(self, value: Any) -> Any:
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, self.type) or (self.type is not bool and isinstance(value, bool)):
            raise ConfigError(
                f"setting {self.name!r} must be {self.type.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"setting {self.name!r} = {value!r} is not one of {list(self.choices)}")
        if self.min is not None and value < self.min:
            raise ConfigError(f"setting {self.name!r} = {value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"setting {self.name!r} = {value!r} is above the maximum {self.max}")
        if isinstance(value, float) and not np.isfinite(value):
            raise ConfigError(f"setting {self.name!r} must be finite, got {value!r}")
        return value


class Codec(abc.ABC):
    """Base class of every codec. Instances are cheap and thread-compatible
    (one instance per thread if a subclass keeps state)."""

    name: ClassVar[str]
    modalities: ClassVar[frozenset[Modality]]
    lossless: ClassVar[bool] = False
    params: ClassVar[tuple[Param, ...]] = ()
    description: ClassVar[str] = ""
    # The setting that holds a per-point error bound in metres, for codecs that
    # have one (``--max-error`` and ``--lidar-max-error`` set it); None otherwise.
    error_bound_setting: ClassVar[str | None] = None

    def __init__(self, **settings: Any) -> None:
        known = {p.name: p for p in self.params}
        unknown = set(settings) - set(known)
        if unknown:
            raise ConfigError(
                f"codec {self.name!r} has no setting(s) {sorted(unknown)}; "
                f"it takes {sorted(known) or 'none'}")
        self.settings = {p.name: p.validate(settings.get(p.name, p.default)) for p in self.params}

    @property
    def model_id(self) -> str:
        """Identifies the weights/tables a decoder must hold. Classical codecs
        have none; learned ones override with name plus weight hash."""
        return CLASSICAL_MODEL_ID

    def encode(self, frame: Frame) -> bytes:
        return self.encode_container(frame).pack()

    def encode_container(self, frame: Frame) -> Container:
        if frame.modality not in self.modalities:
            raise InvalidFrameError(
                f"codec {self.name!r} handles {sorted(m.label for m in self.modalities)}, "
                f"not {frame.modality.label}")
        metadata, sections = self._encode(frame)
        return Container(modality=frame.modality, codec=self.name, model_id=self.model_id,
                         stamp_ns=frame.stamp_ns, frame_id=frame.frame_id,
                         metadata=metadata, sections=list(sections))

    def decode(self, payload: bytes | Container) -> Frame:
        c = payload if isinstance(payload, Container) else unpack(payload)
        if c.codec != self.name:
            raise WireFormatError(f"payload was made by codec {c.codec!r}, not {self.name!r}")
        if c.modality not in self.modalities:
            raise WireFormatError(
                f"codec {self.name!r} cannot decode modality {c.modality.label}")
        if c.model_id != self.model_id:
            raise UnknownModelError(
                f"payload needs model {c.model_id!r} for codec {c.codec!r}; this decoder "
                f"holds {self.model_id!r}")
        return self._decode(c)

    @abc.abstractmethod
    def _encode(self, frame: Frame) -> tuple[dict, list[bytes]]:
        """Return (metadata, sections) for the container."""

    @abc.abstractmethod
    def _decode(self, container: Container) -> Frame:
        """Rebuild the frame from a validated container."""


_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make a codec available under ``cls.name``."""
    name = cls.name
    if not name or not name.isascii() or len(name) > 64:
        raise ConfigError(f"codec name {name!r} must be ASCII, 1..64 characters")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ConfigError(f"codec name {name!r} is already registered by {_REGISTRY[name]}")
    _REGISTRY[name] = cls
    return cls


def codec_class(name: str) -> type[Codec]:
    from . import _load_builtin_codecs
    _load_builtin_codecs()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownCodecError(
            f"no codec named {name!r}; available: {sorted(_REGISTRY)}") from None


def get_codec(name: str, **settings: Any) -> Codec:
    return codec_class(name)(**settings)


def codec_names(modality: Modality | str | None = None) -> list[str]:
    from . import _load_builtin_codecs
    _load_builtin_codecs()
    if modality is None:
        return sorted(_REGISTRY)
    m = Modality.parse(modality)
    return sorted(n for n, c in _REGISTRY.items() if m in c.modalities)


def encode(frame: Frame, codec: str, **settings: Any) -> bytes:
    """Compress a frame with the named codec into a container payload."""
    return get_codec(codec, **settings).encode(frame)


def decode(payload: bytes | bytearray | memoryview) -> Frame:
    """Decode any container payload, picking the codec it names."""
    c = unpack(payload)
    return codec_class(c.codec)().decode(c)


# --- shared helpers for point-cloud codecs -------------------------------------

# PointField datatypes a layout may use (sensor_msgs/PointField constants).
POINT_DTYPES = ("<i1", "<u1", "<i2", "<u2", "<i4", "<u4", "<f4", "<f8",
                # numpy spells one-byte types without a byte order ("|u1"), and
                # point_layout_meta writes what numpy spells.
                "|i1", "|u1")
MAX_POINT_STEP = 4096
# Decoded records a payload may ask for: 64 M points of 64 bytes. Without it
# a forged payload (num_points under the cap, point_step 4096) makes numpy
# try to allocate 256 GiB and raise MemoryError instead of a wire error.
MAX_CLOUD_BYTES = 4 << 30


def point_layout_meta(frame: PointCloudFrame) -> dict:
    """Describe a cloud's layout (fields, offsets, step, grid) for metadata."""
    dt = frame.points.dtype
    fields = []
    for name in dt.names:
        sub, offset = dt.fields[name][:2]
        base = sub.base if sub.shape else sub
        count = int(np.prod(sub.shape)) if sub.shape else 1
        fields.append([name, base.newbyteorder("<").str, int(offset), count])
    return {"fields": fields, "point_step": int(dt.itemsize), "height": int(frame.height),
            "width": int(frame.width), "num_points": int(frame.num_points)}


def point_dtype_from_meta(meta: dict) -> np.dtype:
    """Rebuild and validate the structured dtype described by ``point_layout_meta``."""
    try:
        fields = meta["fields"]
        step = meta["point_step"]
        names, formats, offsets = [], [], []
        for name, dstr, offset, count in fields:
            if not isinstance(name, str) or dstr not in POINT_DTYPES:
                raise WireFormatError(f"bad point field {name!r} of type {dstr!r}")
            if not (isinstance(count, int) and 1 <= count <= 1024):
                raise WireFormatError(f"bad count {count!r} for field {name!r}")
            names.append(name)
            formats.append(np.dtype(dstr) if count == 1 else np.dtype((dstr, (count,))))
            offsets.append(int(offset))
        if not isinstance(step, int) or not 0 < step <= MAX_POINT_STEP:
            raise WireFormatError(f"bad point step {step!r}")
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": step})
    except WireFormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise WireFormatError(f"bad point layout in metadata: {exc}") from None


def empty_cloud_from_meta(meta: dict, modality: Modality) -> tuple[np.ndarray, int, int]:
    """Allocate the output records for a decoded cloud after checking its size."""
    dtype = point_dtype_from_meta(meta)
    n, height, width = meta.get("num_points"), meta.get("height"), meta.get("width")
    check_point_count(n)
    if not all(isinstance(v, int) and v >= 0 for v in (height, width)) or height * width != n:
        raise WireFormatError(f"grid {height}x{width} does not hold {n} points")
    if n * dtype.itemsize > MAX_CLOUD_BYTES:
        raise OversizedPayloadError(f"declared {n} points of {dtype.itemsize} bytes exceed the "
                                    f"cap of {MAX_CLOUD_BYTES} decoded bytes")
    return np.zeros(n, dtype=dtype), height, width


def camera_meta(frame: CameraFrame) -> dict:
    return {"height": frame.height, "width": frame.width, "encoding": frame.encoding}
