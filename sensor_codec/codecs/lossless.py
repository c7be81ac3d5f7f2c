"""``zstd``: lossless Zstandard over the raw frame bytes, for any modality.

The reference every other codec's ratio is compared to: it keeps every bit
(NaNs and padding included) and only removes byte-level redundancy.
"""

from __future__ import annotations

import numpy as np
import zstandard

from ..errors import WireFormatError
from ..frames import IMAGE_ENCODINGS, CameraFrame, Modality, PointCloudFrame
from ..wire import Container, check_image_shape, meta_get
from .streams import zstd_decompress_exact
from .base import Codec, Param, camera_meta, empty_cloud_from_meta, point_layout_meta, register_codec


@register_codec
class ZstdCodec(Codec):
    name = "zstd"
    modalities = frozenset(Modality)
    lossless = True
    description = "Lossless Zstandard of the raw bytes (any modality)"
    params = (Param("level", int, 19, "Zstandard compression level", min=1, max=22),)

    def _encode(self, frame):
        if isinstance(frame, CameraFrame):
            meta = camera_meta(frame)
            raw = frame.pixels.astype(frame.pixels.dtype.newbyteorder("<"), copy=False).tobytes()
        else:
            meta = point_layout_meta(frame)
            raw = frame.points.tobytes()
        meta["raw_bytes"] = len(raw)
        return meta, [zstandard.ZstdCompressor(level=self.settings["level"]).compress(raw)]

    def _decode(self, c: Container):
        if len(c.sections) != 1:
            raise WireFormatError(f"zstd payload needs 1 section, has {len(c.sections)}")
        expected = meta_get(c.metadata, "raw_bytes")
        if c.modality == Modality.CAMERA:
            h, w = meta_get(c.metadata, "height"), meta_get(c.metadata, "width")
            enc = meta_get(c.metadata, "encoding", str)
            if enc not in IMAGE_ENCODINGS:
                raise WireFormatError(f"unknown image encoding {enc!r}")
            ch, dtype = IMAGE_ENCODINGS[enc]
            check_image_shape(h, w, ch)
            if expected != h * w * ch * dtype.itemsize:
                raise WireFormatError(f"raw size {expected} does not match {h}x{w} {enc}")
        else:
            records, height, width = empty_cloud_from_meta(c.metadata, c.modality)
            if expected != records.nbytes:
                raise WireFormatError(f"raw size {expected} does not match the point layout")
        raw = zstd_decompress_exact(c.sections[0], expected, "zstd section")
        if c.modality == Modality.CAMERA:
            shape = (h, w) if ch == 1 else (h, w, ch)
            pixels = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
            return CameraFrame(pixels.astype(dtype), enc, c.stamp_ns, c.frame_id)
        records = np.frombuffer(raw, dtype=records.dtype).copy()
        return PointCloudFrame(records, c.modality, height, width, c.stamp_ns, c.frame_id)
