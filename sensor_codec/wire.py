"""The sensor_codec container: a versioned, self-describing, checksummed payload.

Layout (all integers little-endian, explicit ``struct`` formats)::

    offset  size  field
    0       4     magic b"SCDC"
    4       2     format version (u16), currently 1
    6       1     modality id (u8): 1 camera, 2 lidar, 3 radar
    7       1     flags (u8), reserved, 0
    8       8     stamp in nanoseconds since the epoch (i64)
    16      1     codec name length L1 (u8), then L1 bytes ASCII
    ..      1     model id length L2 (u8), then L2 bytes ASCII
    ..      2     frame id length L3 (u16), then L3 bytes UTF-8
    ..      4     metadata length L4 (u32), then L4 bytes UTF-8 JSON object
    ..      2     section count S (u16)
    ..      S x   section: length (u32) then that many bytes
    end-4   4     CRC32 (u32) of every byte before it

The metadata holds the original shape, encoding or point layout and the
codec's settings: whatever a decoder needs besides the byte streams.
Every declared size is checked against the bytes actually present and
against hard caps before anything is allocated.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from .errors import (BadMagicError, ChecksumMismatchError, OversizedPayloadError,
                     TruncatedPayloadError, UnsupportedVersionError, WireFormatError)
from .frames import Modality

MAGIC = b"SCDC"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# Safety caps: a payload claiming more than this is refused before decoding.
MAX_PAYLOAD_BYTES = 1 << 30
MAX_SECTIONS = 256
MAX_METADATA_BYTES = 1 << 20
MAX_IMAGE_PIXELS = 16384 * 16384
MAX_POINTS = 64 * 1024 * 1024

_FIXED = struct.Struct("<4sHBBq")
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


@dataclass
class Container:
    """A parsed payload: who made it and the raw sections to decode."""

    modality: Modality
    codec: str
    model_id: str
    stamp_ns: int = 0
    frame_id: str = ""
    metadata: dict = field(default_factory=dict)
    sections: list[bytes] = field(default_factory=list)
    version: int = FORMAT_VERSION

    def pack(self) -> bytes:
        codec = _ascii(self.codec, "codec name", 255)
        model = _ascii(self.model_id, "model id", 255)
        frame_id = self.frame_id.encode("utf-8")
        if len(frame_id) > 0xFFFF:
            raise WireFormatError(f"frame id is {len(frame_id)} bytes, max 65535")
        meta = json.dumps(self.metadata, sort_keys=True, separators=(",", ":")).encode()
        if len(meta) > MAX_METADATA_BYTES:
            raise OversizedPayloadError(
                f"metadata is {len(meta)} bytes, cap is {MAX_METADATA_BYTES}")
        if len(self.sections) > MAX_SECTIONS:
            raise OversizedPayloadError(
                f"{len(self.sections)} sections, cap is {MAX_SECTIONS}")
        parts = [
            _FIXED.pack(MAGIC, self.version, int(self.modality), 0, int(self.stamp_ns)),
            _U8.pack(len(codec)), codec,
            _U8.pack(len(model)), model,
            _U16.pack(len(frame_id)), frame_id,
            _U32.pack(len(meta)), meta,
            _U16.pack(len(self.sections)),
        ]
        for s in self.sections:
            parts.append(_U32.pack(len(s)))
            parts.append(bytes(s))
        body = b"".join(parts)
        if len(body) + 4 > MAX_PAYLOAD_BYTES:
            raise OversizedPayloadError(
                f"payload would be {len(body) + 4} bytes, cap is {MAX_PAYLOAD_BYTES}")
        return body + _U32.pack(zlib.crc32(body))

    @property
    def tag(self) -> str:
        """Human-readable description, used as CompressedImage.format."""
        return format_tag(self.modality, self.codec, self.model_id, self.version)

    @property
    def payload_bytes(self) -> int:
        return sum(len(s) for s in self.sections)


def format_tag(modality: Modality, codec: str, model_id: str,
               version: int = FORMAT_VERSION) -> str:
    return f"sensor_codec/{Modality(modality).label}/{codec}; v{version}; model={model_id}"


def _ascii(text: str, what: str, limit: int) -> bytes:
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise WireFormatError(f"{what} {text!r} must be ASCII") from None
    if len(raw) > limit:
        raise WireFormatError(f"{what} {text!r} is longer than {limit} bytes")
    return raw


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise TruncatedPayloadError(
                f"payload truncated in {what}: needs {n} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def unpack(self, st: struct.Struct, what: str):
        return st.unpack(self.take(st.size, what))


@dataclass(frozen=True)
class HeaderInfo:
    """Who made a payload, read from its prefix alone (no CRC check)."""

    version: int
    modality: Modality
    codec: str
    model_id: str
    stamp_ns: int
    frame_id: str

    @property
    def tag(self) -> str:
        return format_tag(self.modality, self.codec, self.model_id, self.version)


def _read_identity(r: "_Reader", modality_id: int) -> tuple[Modality, str, str, str]:
    """Modality, codec name, model id and frame id, which follow the fixed header."""
    try:
        modality = Modality(modality_id)
    except ValueError:
        raise WireFormatError(f"unknown modality id {modality_id}") from None
    codec = bytes(r.take(r.unpack(_U8, "codec length")[0], "codec name")).decode("ascii", "replace")
    model = bytes(r.take(r.unpack(_U8, "model id length")[0], "model id")).decode("ascii", "replace")
    frame_id = bytes(r.take(r.unpack(_U16, "frame id length")[0], "frame id")).decode(
        "utf-8", "replace")
    return modality, codec, model, frame_id


def peek_header(payload: bytes | bytearray | memoryview) -> HeaderInfo:
    """Read the identifying prefix of a payload without touching its sections."""
    r = _Reader(memoryview(payload).cast("B"))
    magic, version, modality_id, _flags, stamp_ns = r.unpack(_FIXED, "fixed header")
    if magic != MAGIC:
        raise BadMagicError(f"not a sensor_codec payload: starts with {magic!r}")
    modality, codec, model, frame_id = _read_identity(r, modality_id)
    return HeaderInfo(version, modality, codec, model, stamp_ns, frame_id)


def unpack(payload: bytes | bytearray | memoryview, *, verify_crc: bool = True) -> Container:
    """Parse and validate a payload. Raises a ``WireFormatError`` subclass."""
    data = memoryview(payload).cast("B") if not isinstance(payload, bytes) else memoryview(payload)
    if len(data) == 0:
        raise TruncatedPayloadError("empty payload: expected a sensor_codec container")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise OversizedPayloadError(
            f"payload is {len(data)} bytes, cap is {MAX_PAYLOAD_BYTES}")
    if len(data) >= 4 and bytes(data[:4]) != MAGIC:
        raise BadMagicError(
            f"not a sensor_codec payload: starts with {bytes(data[:4])!r}, expected {MAGIC!r}")
    r = _Reader(data)
    magic, version, modality_id, _flags, stamp_ns = r.unpack(_FIXED, "fixed header")
    if magic != MAGIC:
        raise BadMagicError(f"not a sensor_codec payload: magic {magic!r}")
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"container format version {version} is not supported; this decoder reads "
            f"versions {list(SUPPORTED_VERSIONS)}")
    if verify_crc:
        if len(data) < r.pos + 4:
            raise TruncatedPayloadError("payload truncated before its checksum")
        stored, = _U32.unpack(data[-4:])
        actual = zlib.crc32(data[:-4])
        if stored != actual:
            raise ChecksumMismatchError(
                f"CRC32 mismatch: stored {stored:#010x}, computed {actual:#010x} "
                "(payload corrupted in transit or storage)")
    modality, codec, model, frame_id = _read_identity(r, modality_id)
    meta_len, = r.unpack(_U32, "metadata length")
    if meta_len > MAX_METADATA_BYTES:
        raise OversizedPayloadError(
            f"metadata claims {meta_len} bytes, cap is {MAX_METADATA_BYTES}")
    meta_raw = bytes(r.take(meta_len, "metadata"))
    try:
        metadata = json.loads(meta_raw) if meta_raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise WireFormatError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    count, = r.unpack(_U16, "section count")
    if count > MAX_SECTIONS:
        raise OversizedPayloadError(f"payload declares {count} sections, cap is {MAX_SECTIONS}")
    sections = []
    for i in range(count):
        length, = r.unpack(_U32, f"section {i} length")
        sections.append(bytes(r.take(length, f"section {i}")))
    if verify_crc and r.pos != len(data) - 4:
        raise WireFormatError(
            f"{len(data) - 4 - r.pos} unexpected bytes between the last section and the checksum")
    return Container(modality=modality, codec=codec, model_id=model, stamp_ns=stamp_ns,
                     frame_id=frame_id, metadata=metadata, sections=sections, version=version)


def check_image_shape(height: int, width: int, channels: int) -> None:
    """Refuse a declared image size beyond the caps (before allocating it)."""
    for name, v in (("height", height), ("width", width), ("channels", channels)):
        if not isinstance(v, int) or v <= 0:
            raise WireFormatError(f"declared image {name} {v!r} is not a positive integer")
    if height * width > MAX_IMAGE_PIXELS or channels > 4:
        raise OversizedPayloadError(
            f"declared image {height}x{width}x{channels} exceeds the cap of "
            f"{MAX_IMAGE_PIXELS} pixels and 4 channels")


def check_point_count(n: int) -> None:
    if not isinstance(n, int) or n < 0:
        raise WireFormatError(f"declared point count {n!r} is not a non-negative integer")
    if n > MAX_POINTS:
        raise OversizedPayloadError(f"declared {n} points, cap is {MAX_POINTS}")


def meta_get(metadata: dict, key: str, kind: type | tuple = (int,)):
    """Fetch a required metadata entry, typed, or raise WireFormatError."""
    if key not in metadata:
        raise WireFormatError(f"metadata lacks required key {key!r}")
    value = metadata[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise WireFormatError(f"metadata {key!r} has wrong type {type(value).__name__}")
    return value
