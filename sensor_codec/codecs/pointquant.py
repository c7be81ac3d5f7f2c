"""Field-wise quantisation and entropy coding of point clouds, shared by the
``grid``, ``draco`` and ``radar_quant`` codecs.

Each field of the cloud becomes one zstd section:

* a float field given an error bound ``b > 0`` is stored as the integers
  ``q = round(v / s)``, with the step ``s`` just under ``2 b``, shrunk so
  that the value the decoder writes (``q * s`` in float64, rounded to the
  field's own type, float32 usually) is within ``b`` of the original for
  every finite value (``quantisation_step`` has the argument). Large
  coordinates therefore get a finer step rather than a broken bound: 1e6 m
  in float32 still meets 1 cm. NaN and infinite values are kept exactly: a
  bitmask of where they are and their raw bit patterns;
* every other field (integers, and floats with bound 0) is stored exactly
  as its raw bit pattern;
* a field with at most 256 distinct values (a reflectance in steps of 0.01,
  a ring number) is sent as a table of those values and one byte per point;
* any other field's integers are optionally differenced along the point
  order, against the point 1, 2, 4 ... 128 places back (a lidar scan's
  neighbours in the same ring are close; radar detections are not, so the
  encoder picks, per field, raw or the cheapest lag), zig-zag mapped,
  narrowed to the fewest bytes that hold them and split into byte planes
  before zstd, which then sees long runs of zero high bytes.

Field names, types, offsets and the point step come back exactly; padding
bytes between fields come back as zeros.
"""

from __future__ import annotations

import numpy as np
import zstandard

from ..errors import InvalidFrameError, WireFormatError
from ..frames import PointCloudFrame
from ..wire import MAX_SECTIONS, Container, meta_get
from .base import Param, empty_cloud_from_meta, point_layout_meta
from .streams import zstd_decompress_exact

XYZ = ("x", "y", "z")
ZSTD_LEVEL_PARAM = Param("zstd_level", int, 9, "zstd level of the coded fields, 1..22",
                         min=1, max=22)

# Quantised integers stay well inside int64 (and exact in float64) below this.
_MAX_QUANT = 1 << 50
_WIDTHS = (1, 2, 4, 8)
_MODES = ("raw", "delta", "palette")
_PALETTE_MAX = 256
# Prediction distances tried for differencing, and the points used to choose.
_LAGS = (1, 2, 4, 8, 16, 32, 64, 128)
_LAG_SAMPLE = 32768


def encode_cloud(frame: PointCloudFrame, max_errors: dict[str, float],
                 zstd_level: int) -> tuple[dict, list[bytes]]:
    """Metadata and one section per field; ``max_errors`` maps a field name to
    the largest absolute error allowed on each of its values (fields absent
    or at 0 are kept exactly)."""
    meta = point_layout_meta(frame)
    meta["coding"], sections = encode_fields(frame.points, frame.points.dtype.names,
                                             max_errors, zstd_level)
    return meta, sections


def decode_cloud(c: Container) -> PointCloudFrame:
    records, height, width = empty_cloud_from_meta(c.metadata, c.modality)
    decode_fields(records, records.dtype.names, meta_get(c.metadata, "coding", list),
                  c.sections)
    return PointCloudFrame(records, c.modality, height, width, c.stamp_ns, c.frame_id)


def encode_fields(points: np.ndarray, names, max_errors: dict[str, float],
                  zstd_level: int) -> tuple[list, list[bytes]]:
    """Code the named fields of ``points``: (coding entries for the metadata,
    one section per field)."""
    if len(names) > MAX_SECTIONS - 2:
        raise InvalidFrameError(
            f"cloud has {len(names)} fields; this codec stores at most {MAX_SECTIONS - 2}; "
            f"use 'zstd' for it")
    compressor = zstandard.ZstdCompressor(level=zstd_level)
    coding, sections = [], []
    for name in names:
        column = np.ascontiguousarray(points[name]).reshape(len(points), _count(points.dtype, name))
        bound = float(max_errors.get(name, 0.0))
        if column.dtype.kind != "f":
            bound = 0.0  # integer fields are already exact at their own resolution
        stream, entry = _encode_field(name, column, bound)
        coding.append(entry)
        sections.append(compressor.compress(stream))
    return coding, sections


def decode_fields(records: np.ndarray, names, coding: list, sections: list[bytes]) -> None:
    """Fill the named fields of ``records`` from what ``encode_fields`` made."""
    if len(coding) != len(names) or len(sections) != len(names):
        raise WireFormatError(
            f"payload codes {len(coding)} fields in {len(sections)} sections, "
            f"the point layout has {len(names)} to decode")
    for name, entry, section in zip(names, coding, sections):
        shape = (len(records), _count(records.dtype, name))
        column = _decode_field(name, entry, section, shape, records.dtype.fields[name][0].base)
        records[name] = column.reshape(records[name].shape)


def quantisation_step(bound: float, dtype: np.dtype, largest: float) -> float:
    """The step that keeps every decoded value of a field within ``bound``.

    ``largest`` bounds the magnitude of the field's values ``v``. The encoder
    rounds ``v / step`` and the decoder computes ``x = q * step``, both in
    float64, so ``|v - x| <= step / 2 + e`` with ``e`` one float64 spacing at
    that magnitude. The decoder then rounds ``x`` to ``dtype``: that moves it
    by at most half a ``dtype`` spacing ``u``, and - ``v`` being itself a
    value of ``dtype`` - by no more than ``|v - x|``. Hence the error is at
    most ``step / 2 + e + u / 2`` and at most ``step + 2 e``; the larger step
    meeting either form of the bound is used.
    """
    magnitude = largest + 2 * bound
    e = float(np.spacing(np.float64(magnitude)))
    u = float(np.spacing(np.asarray(magnitude, dtype=dtype)))
    step = max(2 * (bound - e) - u, bound - 2 * e)
    if not np.isfinite(step) or step <= 0:
        raise InvalidFrameError(
            f"values up to {largest:g} cannot be kept within {bound:g} in {dtype}; "
            "raise the error bound or keep the field exact")
    return step


def _encode_field(name: str, column: np.ndarray, bound: float) -> tuple[bytes, list]:
    n, count = column.shape
    prefix = b""
    nonfinite = 0
    step = 0.0
    if bound > 0:
        finite = np.isfinite(column)
        nonfinite = int(finite.size - np.count_nonzero(finite))
        values = np.where(finite, column, 0).astype(np.float64)
        largest = float(np.abs(values).max()) if values.size else 0.0
        if largest / bound >= _MAX_QUANT:
            raise InvalidFrameError(
                f"field {name!r} holds {largest:g}, too large to quantise within {bound:g}; "
                f"raise the error bound or keep the field exact")
        step = quantisation_step(bound, column.dtype, largest)
        ints = np.rint(values / step).astype(np.int64)
        if nonfinite:
            prefix = np.packbits(~finite.reshape(-1)).tobytes() + column[~finite].tobytes()
    else:
        # Exact: the bit pattern as a signed integer of the same width.
        ints = column.view(f"<i{column.dtype.itemsize}").astype(np.int64)

    table, indices = np.unique(ints, return_inverse=True) if ints.size else (ints, ints)
    table_codes = _zigzag(table)
    table_width = _narrowest(table_codes)
    if len(table) <= _PALETTE_MAX and len(table) * table_width * 2 < ints.size:
        # Few distinct values (a reflectance in 1/100 steps, a ring number):
        # a one-byte index per value beats any coding of the values themselves.
        stream = _planes(table_codes, table_width) + indices.astype(np.uint8).tobytes()
        return prefix + stream, [name, step, "palette", table_width, nonfinite, len(table), 0]

    codes, mode, lag = _zigzag(ints), "raw", _best_lag(ints)
    if lag:
        deltas = _lag_diff(ints, lag)
        if step == 0:
            # Wrap differences to the field's own width (the decoder's sum
            # wraps back), so they never need more bytes than the values.
            deltas = deltas.astype(f"<i{column.dtype.itemsize}").astype(np.int64)
        delta_codes = _zigzag(deltas)
        if _bit_cost(delta_codes) < _bit_cost(codes):
            codes, mode = delta_codes, "delta"
    if mode == "raw":
        lag = 0
    width = _narrowest(codes)
    return prefix + _planes(codes, width), [name, step, mode, width, nonfinite, 0, lag]


def _best_lag(ints: np.ndarray) -> int:
    """The lag whose differences ``v[i] - v[i - lag]`` look cheapest (0 for
    fewer than two points). Lag 1 suits a scan stored ring by ring; a sensor
    that stores each firing's rings together (nuScenes: 32 rings) repeats a
    ring every ``rings`` points, so that lag predicts best."""
    sample = ints[:_LAG_SAMPLE]
    lags = [lag for lag in _LAGS if lag < len(sample)]
    if not lags:
        return 0
    costs = [_bit_cost(_zigzag(_lag_diff(sample, lag))) for lag in lags]
    return lags[int(np.argmin(costs))]


def _lag_diff(ints: np.ndarray, lag: int) -> np.ndarray:
    out = ints.copy()
    out[lag:] -= ints[:-lag]
    return out


def _lag_sum(deltas: np.ndarray, lag: int) -> np.ndarray:
    """Invert ``_lag_diff``: a running sum within each residue class mod ``lag``."""
    n, count = deltas.shape
    rows = -(-n // lag) * lag
    padded = np.zeros((rows, count), np.int64)
    padded[:n] = deltas
    return np.cumsum(padded.reshape(-1, lag, count), axis=0, dtype=np.int64).reshape(
        rows, count)[:n]


def _decode_field(name: str, entry, section: bytes, shape: tuple[int, int],
                  dtype: np.dtype) -> np.ndarray:
    try:
        coded_name, step, mode, width, nonfinite, table_size, lag = entry
    except (TypeError, ValueError):
        raise WireFormatError(f"bad coding entry {entry!r} for field {name!r}") from None
    n, count = shape
    values_n = n * count
    if (coded_name != name or not isinstance(step, (int, float)) or not step >= 0
            or mode not in _MODES or width not in _WIDTHS
            or not isinstance(nonfinite, int) or not 0 <= nonfinite <= values_n
            or (nonfinite and not step > 0) or not isinstance(table_size, int)
            or not (1 <= table_size <= _PALETTE_MAX if mode == "palette" else table_size == 0)
            or not (lag in _LAGS if mode == "delta" else lag == 0)):
        raise WireFormatError(f"bad coding entry {entry!r} for field {name!r}")
    mask_bytes = (values_n + 7) // 8 if nonfinite else 0
    special_bytes = nonfinite * dtype.itemsize
    coded_bytes = table_size * width + values_n if mode == "palette" else values_n * width
    expected = mask_bytes + special_bytes + coded_bytes
    raw = zstd_decompress_exact(section, expected, f"section of field {name!r}")
    buf = np.frombuffer(raw, dtype=np.uint8)
    coded = buf[mask_bytes + special_bytes:]
    if mode == "palette":
        table = _unzigzag(_from_planes(coded[:table_size * width], width, table_size))
        indices = coded[table_size * width:]
        if values_n and int(indices.max()) >= table_size:
            raise WireFormatError(f"field {name!r} indexes past its {table_size}-entry palette")
        ints = table[indices].reshape(n, count)
    else:
        ints = _unzigzag(_from_planes(coded, width, values_n)).reshape(n, count)
        if mode == "delta":
            ints = _lag_sum(ints, lag)
    if step == 0:
        return ints.astype(f"<i{dtype.itemsize}").view(dtype)
    column = (ints.astype(np.float64) * step).astype(dtype)
    if nonfinite:
        mask = np.unpackbits(buf[:mask_bytes], count=values_n).astype(bool).reshape(n, count)
        if int(mask.sum()) != nonfinite:
            raise WireFormatError(f"field {name!r} marks {int(mask.sum())} non-finite "
                                  f"values, its coding says {nonfinite}")
        column[mask] = buf[mask_bytes:mask_bytes + special_bytes].view(dtype)
    return column


def _planes(codes: np.ndarray, width: int) -> bytes:
    """Little-endian values of ``width`` bytes, split into byte planes (all
    lowest bytes, then all next bytes...): zstd then sees runs of zeros."""
    as_bytes = codes.astype(f"<u{width}").reshape(-1).view(np.uint8).reshape(-1, width)
    return np.ascontiguousarray(as_bytes.T).tobytes()


def _from_planes(data: np.ndarray, width: int, count: int) -> np.ndarray:
    planes = data[:count * width].reshape(width, count)
    return np.ascontiguousarray(planes.T).view(f"<u{width}").reshape(-1).astype(np.uint64)


def _count(dtype: np.dtype, name: str) -> int:
    """Values per point of a field (more than 1 for array fields)."""
    return int(np.prod(dtype.fields[name][0].shape, dtype=np.int64))


def _zigzag(ints: np.ndarray) -> np.ndarray:
    """Signed to unsigned, small magnitudes to small codes (0,-1,1,-2 -> 0,1,2,3)."""
    return ((ints << 1) ^ (ints >> 63)).view(np.uint64)


def _unzigzag(codes: np.ndarray) -> np.ndarray:
    return ((codes >> np.uint64(1)) ^ (np.uint64(0) - (codes & np.uint64(1)))).view(np.int64)


def _bit_cost(codes: np.ndarray) -> float:
    # Roughly the bits an entropy coder spends: the bit length of each code.
    return float(np.log2(codes.astype(np.float64) + 1.0).sum())


def _narrowest(codes: np.ndarray) -> int:
    top = int(codes.max()) if codes.size else 0
    return next(w for w in _WIDTHS if top < (1 << (8 * w)))
