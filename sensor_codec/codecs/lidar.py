"""Reference lidar codecs.

``grid``
    Bounded error: every finite point comes back within ``max_error`` metres
    (Euclidean) of where it was. x, y and z are quantised on a grid of step
    about ``2 * max_error / sqrt(3)`` (per-axis error at most
    ``max_error / sqrt(3)``), shrunk where float32 rounding of the decoded
    coordinates would otherwise eat into the bound (see
    ``pointquant.quantisation_step``: the bound holds for the float32 output,
    for coordinates of any size float32 can hold). The integer grid indices
    are differenced along the scan order, split into byte planes and
    zstd-coded. Other fields are kept exactly. Points with NaN or infinite
    coordinates come back exactly; point order and an organised cloud's grid
    are kept.

``draco``
    Google Draco geometry coding of x, y, z (what ROS's
    ``draco_point_cloud_transport`` uses), the other fields kept exactly as
    in ``grid``. Draco quantises to ``2**quantization_bits`` levels over the
    cloud's largest extent, so its error bound scales with the scene: at most
    half a level per axis. Point order is preserved (Draco's own reordering
    mode saves about a tenth on x, y, z but would need the permutation sent
    to keep the other fields and an organised grid aligned). Points with a
    NaN or infinite coordinate bypass Draco and come back exactly.
"""

from __future__ import annotations

import math

import DracoPy
import numpy as np
import zstandard

from ..errors import CodecError, WireFormatError
from ..frames import Modality, PointCloudFrame
from ..wire import Container, meta_get
from .base import Codec, Param, empty_cloud_from_meta, point_layout_meta, register_codec
from .pointquant import (XYZ, ZSTD_LEVEL_PARAM, decode_cloud, decode_fields, encode_cloud,
                         encode_fields)
from .streams import zstd_decompress_exact

# Keeps sqrt(3) * (per-axis bound) at or under max_error despite float64 rounding.
_BOUND_MARGIN = 1.0 - 1e-9


@register_codec
class GridCodec(Codec):
    name = "grid"
    error_bound_setting = "max_error"
    modalities = frozenset({Modality.LIDAR})
    description = "Bounded-error grid quantisation of x, y, z + delta + zstd; other fields exact"
    params = (
        Param("max_error", float, 0.01,
              "largest Euclidean distance between a decoded point and the original (metres)",
              min=1e-5, max=100.0),
        ZSTD_LEVEL_PARAM,
    )

    def _encode(self, frame):
        per_axis = self.settings["max_error"] / math.sqrt(3) * _BOUND_MARGIN
        return encode_cloud(frame, dict.fromkeys(XYZ, per_axis), self.settings["zstd_level"])

    def _decode(self, c: Container):
        return decode_cloud(c)


@register_codec
class DracoCodec(Codec):
    name = "draco"
    modalities = frozenset({Modality.LIDAR, Modality.RADAR})
    description = "Draco geometry (x, y, z) + zstd-coded other fields, point order kept"
    params = (
        Param("quantization_bits", int, 14,
              "x, y, z quantisation: 2**bits levels over the cloud's largest extent",
              min=1, max=30),
        Param("compression_level", int, 7, "Draco effort, 0 (fastest) .. 10 (smallest)",
              min=0, max=10),
        ZSTD_LEVEL_PARAM,
    )

    def _encode(self, frame: PointCloudFrame):
        points = frame.points
        xyz = frame.xyz(np.float32)
        finite = np.isfinite(xyz).all(axis=1)
        geometry = b""
        if finite.any():
            try:
                geometry = DracoPy.encode(
                    np.ascontiguousarray(xyz[finite]),
                    quantization_bits=self.settings["quantization_bits"],
                    compression_level=self.settings["compression_level"], preserve_order=True)
            except (DracoPy.EncodingFailedException, ValueError) as exc:
                raise CodecError(f"Draco failed on {int(finite.sum())} points: {exc}") from exc
        # Exact x, y, z of points Draco cannot take, after a bitmask of where they are.
        nonfinite = np.packbits(~finite).tobytes() + xyz[~finite].tobytes()
        others = [n for n in points.dtype.names if n not in XYZ]
        coding, sections = encode_fields(points, others, {}, self.settings["zstd_level"])
        meta = point_layout_meta(frame)
        meta.update(coding=coding, nonfinite_points=int((~finite).sum()))
        level = self.settings["zstd_level"]
        return meta, [geometry, zstandard.ZstdCompressor(level=level).compress(nonfinite),
                      *sections]

    def _decode(self, c: Container):
        records, height, width = empty_cloud_from_meta(c.metadata, c.modality)
        n = len(records)
        for axis in XYZ:
            if axis not in records.dtype.names:
                raise WireFormatError(f"draco payload's point layout lacks field {axis!r}")
        nonfinite_count = meta_get(c.metadata, "nonfinite_points")
        if not 0 <= nonfinite_count <= n or len(c.sections) < 2:
            raise WireFormatError(f"draco payload: bad non-finite count {nonfinite_count} "
                                  f"or {len(c.sections)} sections for {n} points")
        mask_bytes = (n + 7) // 8
        expected = mask_bytes + nonfinite_count * 12
        raw = zstd_decompress_exact(c.sections[1], expected, "draco non-finite section")
        bits = np.frombuffer(raw, dtype=np.uint8, count=mask_bytes)
        nonfinite = np.unpackbits(bits, count=n).astype(bool)
        if int(nonfinite.sum()) != nonfinite_count:
            raise WireFormatError(f"draco non-finite mask marks {int(nonfinite.sum())} points, "
                                  f"metadata says {nonfinite_count}")
        xyz = np.empty((n, 3), dtype=np.float32)
        xyz[nonfinite] = np.frombuffer(raw, dtype="<f4", offset=mask_bytes).reshape(-1, 3)
        finite_count = n - nonfinite_count
        if finite_count:
            try:
                decoded = np.asarray(DracoPy.decode(c.sections[0]).points, dtype=np.float32)
            except (DracoPy.FileTypeException, ValueError, RuntimeError) as exc:
                raise WireFormatError(f"draco geometry is corrupt: {exc}") from None
            if decoded.shape != (finite_count, 3):
                raise WireFormatError(f"draco geometry holds {decoded.shape} points, the "
                                      f"payload needs {finite_count}")
            xyz[~nonfinite] = decoded
        for i, axis in enumerate(XYZ):
            records[axis] = xyz[:, i]
        others = [n for n in records.dtype.names if n not in XYZ]
        decode_fields(records, others, meta_get(c.metadata, "coding", list), c.sections[2:])
        return PointCloudFrame(records, c.modality, height, width, c.stamp_ns, c.frame_id)
