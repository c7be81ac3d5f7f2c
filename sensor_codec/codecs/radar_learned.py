"""``radar_ac``: radar detections on per-field grids, adaptive arithmetic coding.

Each field is mapped to integers on its own grid and coded losslessly
relative to that grid, so the decoded value is within half a grid step of
the original (plus half an ulp of the field's float type):

* ``x, y, z`` (and ``range``) with ``position_res`` (default 0.01 m);
* velocity-like fields (``v_r``, ``v_r_compensated``, ``v_rel``, ``vx``, ...)
  with ``velocity_res`` (0.01 m/s);
* ``rcs`` with ``rcs_res`` (0.1 dBsm);
* other float fields with ``other_res`` (0 = bit-exact); integer fields and
  integer-valued float fields are lossless. A float32 field kept bit-exact
  (``other_res`` 0, or holding NaN/inf) is coded through its bit pattern
  mapped to ordered integers, so a monotonic ``time`` field still costs
  little; float64 fields kept bit-exact and array fields go to zstd.

Data already on a coarser grid (a CAN radar that reports 0.04 m or
0.025 m/s steps) is detected and coded on that grid, and comes back
bit-exact. Per field the encoder picks the cheapest predictor, measured
with the exact cost of the adaptive coder:

* none; the same field ``p`` detections earlier (repeating track slots);
* another field of the same detection on the same grid;
* *radial*: ``c * x / |p|`` plus optionally another field, where ``p`` is
  the detection's decoded position: the radial velocity of a static target
  seen from a moving radar is ``-v_ego * cos(angle)``, so ``v_r`` costs
  about as little as ``v_r_compensated`` and one of them predicts the other;
* *range*: for detections sorted by range (as View-of-Delft's are), ``x``
  from the previous detection's range and this one's ``y`` and ``z``;
* *keyed*: the value at the previous detection with the same key (an
  integer field such as ``track_id`` coded first), or the linear
  extrapolation from the two previous ones: a stream of track messages;
* *match*: for integer fields, what followed the same one or two values
  last time (track slots reported in a recurring order); or the *cycle
  coder*: each value as its rank among the likely next ones (slots not yet
  seen in the current radar cycle, in the previous cycle's order from after
  the last value; then a new cycle), a new value as an escape and its
  difference to the last. The last slot of a cycle costs almost nothing.

Residuals may also be coded with one adaptive model per value of an
integer field (per track slot, new-track flag); for a keyed predictor, the
first detection of each key (no history to predict from) with a model of
its own, folded when those values share a sign; as their magnitudes when
all of them are >= 0 (a time field); as the nearest of up to three
*centers* plus an offset when large residuals cluster (bursts 2.7 ms apart,
radar cycles 50 ms apart); or with a dictionary of frequent exact values.
A field holding one value throughout is stored as that value. The
residuals are range-coded (constriction) with a model learned on the fly
from the symbols already coded, so small clouds carry no probability
tables: it starts from counts that favour small symbols and is re-estimated
after each of the first ``FAST_SINGLES`` symbols (a second of comma2k19
tracks is ~170 detections, so the start-up cost matters), then every block
of up to 64. Order and count are preserved: predictors adapt to the order,
they never change it.

Wire format 3 (section 0, varints are LEB128): a format byte
(``SECTION_FORMAT``; the decoder reads ``READABLE_FORMATS`` and refuses
others with ``UnsupportedVersionError``), the point count, layout flags
(organised, explicit offsets, coding order; bits 5-7 name one of
``LAYOUT_PRESETS``, the layouts this package's importers publish, and then
no field list follows), else the fields (one byte for a known name and
type: an index into ``FIELD_NAMES`` and ``FIELD_TYPES``; other names
spelled out), each field's plan in coding order (one byte of domain,
constant flag, common-factor flag and predictor; the grid step as a
``STEP_TABLE`` index that also carries a common factor up to 15, or a
float64; the predictor's parameters: a keyed predictor's key field, order,
first-detection model and its sign in one varint; an options byte and the
centers when used; a constant 0 is the plan byte alone), then the
range-coded 32-bit words stored most significant byte first, their last
bytes dropped where the payload decodes the same without them (the
decoder pads with zeros). Section 1, present only when a field needs it,
is the zstd-compressed bytes of fields kept verbatim. The container's
metadata stays empty, so a message costs the container's fixed 58 bytes
(with frame id ``radar``) plus 1-7 bytes per field here (format 2: 5-8
bytes per field, and the field list spelled out; format 1: a JSON plan of
380-440 bytes). Payloads of formats 1 and 2 still decode.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import zstandard

from ..errors import (
    CodecError,
    InvalidFrameError,
    SensorCodecError,
    UnsupportedVersionError,
    WireFormatError,
)
from ..frames import Modality, PointCloudFrame
from ..pointcloud.entropy import (
    ADAPTIVE_BLOCK,
    ADAPTIVE_PRIOR,
    ALPHABET,
    DIRECT,
    Categorical,
    StreamReader,
    StreamWriter,
    adaptive_blocks,
    from_symbols,
    period_residual,
    read_adaptive,
    read_extra_bits,
    to_symbols,
    undo_period_residual,
    zigzag,
)
from ..wire import Container, meta_get, unpack
from .base import Codec, Param, empty_cloud_from_meta, register_codec
from .streams import byte_shuffle, byte_unshuffle, zstd_decompress_exact

POSITION_NAMES = ("x", "y", "z", "range", "r")
VELOCITY_NAMES = ("v_r", "v_r_compensated", "v_rel", "vx", "vy", "vz", "velocity", "doppler",
                  "v", "vr", "vr_compensated", "radial_velocity", "speed")
RCS_NAMES = ("rcs", "rcs_dbsm")
PERIODS = (1, 2, 3, 4, 8, 12, 14, 16, 24, 32, 64)
MAX_INT = 2 ** 45
MAX_RESIDUAL = 2 ** 46  # the entropy coder's limit (zigzag below 2**48 with room)
# Finer grids tried for data that sits exactly on a grid coarser than the
# requested one but not a multiple of it (0.025 m/s against 0.01 m/s).
NATIVE_GRID_DIVISORS = (2, 4, 5, 10)

SECTION_FORMAT = 3  # 1 was the JSON field plan in the container metadata
READABLE_FORMATS = (2, 3)  # 2: block-adaptive models, field list always spelled out
# Part of the wire format: a name's index + 1 is what the payload stores, in
# 5 bits (the table is full at 31); a change needs a new SECTION_FORMAT.
FIELD_NAMES = ("x", "y", "z", "rcs", "v_r", "v_r_compensated", "time", "track_id",
               "new_track", "intensity", "range", "azimuth", "elevation", "doppler",
               "velocity", "v_rel", "vx", "vy", "vz", "snr", "noise", "id", "ring",
               "timestamp", "t", "rcs_dbsm", "vr", "vr_compensated", "radial_velocity",
               "speed", "power")
FIELD_TYPES = ("|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<f4", "<f8")
STEP_TABLE = (0.01, 0.1, 0.005, 0.05, 0.001, 0.0025, 0.025, 0.02, 0.04, 0.5, 0.25, 0.002,
              0.0001, 0.2, 0.125, 0.0625)
STEP_INTEGER, STEP_LITERAL = 0, 255

LAYOUT_ORGANISED, LAYOUT_OFFSETS, LAYOUT_ORDER, LAYOUT_INTS_FIRST = 1, 2, 4, 8
PRESET_SHIFT = 5  # format 3: flag bits 5-7 hold 1 + a LAYOUT_PRESETS index (0: none)
# Format 3: packed layouts this package's importers publish, stored as their
# index (part of the wire format: append only).
LAYOUT_PRESETS = (
    (("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rcs", "<f4"), ("v_r", "<f4"),
     ("v_r_compensated", "<f4"), ("time", "<f4")),                       # View-of-Delft
    (("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("track_id", "<u4"),
     ("new_track", "|u1")),                                              # comma2k19 cycle
    (("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("track_id", "<u4"),
     ("new_track", "|u1"), ("time", "<f4")),                             # comma2k19 timed
    (("x", "<f4"), ("y", "<f4"), ("z", "<f4")),
)
# A field's plan byte: predictor (bits 0-2), options byte follows (bit 3),
# constant (bit 4), common factor follows (bit 5), domain (bits 6-7).
DOMAIN_GRID, DOMAIN_BITS, DOMAIN_RAW = 0, 1, 2
PRED_NONE, PRED_PERIOD, PRED_REF, PRED_RADIAL, PRED_KEY, PRED_RANGE, PRED_MATCH = range(7)
PRED_PREVIOUS = 7  # format 3: period 1 with no period stored
PLAN_OPTIONS, PLAN_CONST, PLAN_GCD = 0x08, 0x10, 0x20
CONST_ZERO = 0x01      # format 3, with PLAN_CONST: every value 0, no step or value stored
OPT_CONTEXT = 0x01     # one adaptive model per value of a key field (varint index follows)
OPT_DICTIONARY = 0x02  # frequent exact residuals coded as one symbol each
OPT_NONNEGATIVE = 0x04  # format 3: every residual >= 0, coded as unzigzag(r) (a bit saved a word)
OPT_PAIRS = 0x08        # format 3, match predictor: format 2's pair matching (else: cycle coder)
MAX_CYCLE_VALUES = 256  # distinct values the cycle coder keeps (encoder offers it up to 64)
CENTERS_SHIFT = 4       # format 3: options bits 4-5 count centers: residuals coded as (nearest
MAX_CENTERS = 3         # of them or 0, offset); they follow the options as (s)varints
MIN_CENTERED = 8        # large residuals below this count cannot pay for a center's bytes
SIGN_NONE, SIGN_NONNEGATIVE, SIGN_NONPOSITIVE = 0, 1, 2  # first-detection group, folded
STEP_GCD_MAX = 15      # format 3: a table step's code also carries a common factor up to this
NO_REF = 0  # field references are stored as index + 1

# The range and match predictors decode one detection at a time (each needs
# the one before): refused beyond this many detections, so that a forged
# count cannot make the decoder loop for minutes.
MAX_SEQUENTIAL_POINTS = 1 << 17
# The coded tail is trimmed (by trial decodes) only up to this many coded bytes:
# the 1-3 bytes it saves matter in small messages (a 20 Hz cycle: ~45 B; a second
# of tracks: ~440 B), while in large ones they are noise and the trial decodes
# cost most of the encode (View-of-Delft, 1.9 kB: 79 -> ~35 ms).
TRIM_MAX_BYTES = 1024
RANGE_SORTED_FRACTION = 0.6  # detections not closer than the previous one
MAX_CONTEXTS = 64            # key values the encoder uses as contexts (the decoder takes 4x)
DICTIONARY_SIZE = 32         # most frequent earlier residuals offered as symbols
DICTIONARY_ESCAPE_PRIOR = 0.5
# Format 3 models adapt after every one of the first FAST_SINGLES symbols
# (the start-up cost dominates small messages), then in blocks as format 2.
FAST_SINGLES = 256
# Initial counts: a floor for every symbol plus PRIOR_MASS spread over the
# small symbols (residuals are mostly small), so fewer bits go to learning that.
PRIOR_FLOOR, PRIOR_MASS, PRIOR_DECAY = 0.02, 3.0, 5.0
_DECAY = np.exp(-np.arange(ALPHABET) / PRIOR_DECAY)
FAST_PRIOR = PRIOR_FLOOR + PRIOR_MASS * _DECAY / _DECAY.sum()
# The first detections of each key are values, not residuals: no symbol favoured.
FIRST_PRIOR = np.full(ALPHABET, 0.05)

_F64 = struct.Struct("<d")


# --- little byte helpers ------------------------------------------------------------

class _Bytes:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(bytes((v,)))

    def varint(self, v: int) -> None:
        if v < 0:
            raise CodecError(f"varint {v} is negative")
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
        self.parts.append(bytes(out))

    def svarint(self, v: int) -> None:
        self.varint((v << 1) ^ -1 if v < 0 else v << 1)

    def raw(self, b: bytes) -> None:
        self.parts.append(b)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class _Parse:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise WireFormatError(f"radar_ac header ends inside {what} (offset {self.pos}, "
                                  f"{len(self.data)} bytes)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str, limit: int = MAX_INT) -> int:
        v, shift = 0, 0
        while True:
            b = self.u8(what)
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                raise WireFormatError(f"radar_ac {what} is an overlong varint")
        if v > limit:
            raise WireFormatError(f"radar_ac {what} is {v}, limit {limit}")
        return v

    def svarint(self, what: str) -> int:
        u = self.varint(what, 2 * MAX_INT)
        return (u >> 1) ^ -(u & 1)

    def f64(self, what: str) -> float:
        return _F64.unpack(self.take(8, what))[0]


# --- numeric helpers ----------------------------------------------------------------


def _dequantise(ints: np.ndarray, step: float, dt: np.dtype) -> np.ndarray:
    """Grid integers back to field values; encoder and decoder share it."""
    if step == 0:
        return ints.astype(dt)
    return (ints.astype(np.float64) * step).astype(dt)


def _float32_to_ordered(values: np.ndarray) -> np.ndarray:
    """float32 bit patterns as integers in the floats' order (NaN payloads kept)."""
    i = values.astype("<f4").view("<i4").astype(np.int64)
    return np.where(i >= 0, i, -(i & 0x7FFFFFFF) - 1)


def _ordered_to_float32(ordered: np.ndarray) -> np.ndarray:
    bits = np.where(ordered >= 0, ordered, (-ordered - 1) | 0x80000000)
    return bits.astype(np.uint32).view("<f4")


def _previous_same_key(keys: np.ndarray) -> np.ndarray:
    """For each detection the index of the previous one with the same key, or -1."""
    order = np.argsort(keys, kind="stable")
    prev = np.full(keys.size, -1, np.int64)
    same = keys[order[1:]] == keys[order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    return prev


def _key_prediction(base: np.ndarray, prev: np.ndarray, order: int) -> np.ndarray:
    """Previous same-key value (order 1) or linear extrapolation from the two
    previous ones (order 2, order 1 where only one exists); 0 for a new key."""
    pred = np.zeros(base.size, np.int64)
    has = prev >= 0
    pred[has] = base[prev[has]]
    if order == 2:
        prev2 = np.where(has, prev[np.maximum(prev, 0)], -1)
        two = prev2 >= 0
        pred[two] = 2 * base[prev[two]] - base[prev2[two]]
    return pred


def _undo_key_prediction(res: np.ndarray, keys: np.ndarray, order: int) -> np.ndarray:
    """Inverse of ``res = base - _key_prediction(base)``, vectorised per key run."""
    n = res.size
    if n == 0:
        return res
    idx = np.argsort(keys, kind="stable")
    r = res[idx]
    starts = np.r_[True, keys[idx[1:]] != keys[idx[:-1]]]
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(n), 0))

    def seg_cumsum(a: np.ndarray) -> np.ndarray:
        c = np.cumsum(a)
        return c - (c[start_pos] - a[start_pos])

    if order == 1:
        base_sorted = seg_cumsum(r)
    else:
        # base_m = base_0 + sum_{j<=m} d_j with d_j = sum_{1<=k<=j} res_k.
        d = r.copy()
        d[starts] = 0
        d = seg_cumsum(d)
        base_sorted = seg_cumsum(d) + r[start_pos]
    out = np.empty(n, np.int64)
    out[idx] = base_sorted
    return out


def _match_prediction(values: np.ndarray, residuals: bool = False) -> np.ndarray:
    """What followed the last occurrence of the two previous values (else of the
    previous value; else the previous value itself): track slots reported in a
    recurring order. With ``residuals`` the input is ``values - prediction``
    and the values are rebuilt (the decoder); otherwise the predictions."""
    seq = values.tolist()
    out = [0] * len(seq)
    after_pair: dict = {}
    after_one: dict = {}
    known = [0] * len(seq)
    for i, v in enumerate(seq):
        if i == 0:
            pred = 0
        else:
            prev = known[i - 1]
            j = after_pair.get((known[i - 2], prev)) if i > 1 else None
            if j is None:
                j = after_one.get(prev)
            pred = known[j] if j is not None else prev
            if i > 1:
                after_pair[(known[i - 2], prev)] = i
            after_one[prev] = i
        known[i] = v + pred if residuals else v
        if residuals and abs(known[i]) >= MAX_INT:
            raise WireFormatError("radar_ac match predictor decodes beyond 2**45 grid steps")
        out[i] = pred
    return np.array(known if residuals else out, np.int64)


def _finite_positions(fields: list[_Field], name: str) -> list[np.ndarray]:
    """Decoded positions in metres for a predictor, refused if not finite (a
    forged grid step) so that no NaN reaches an integer cast."""
    metric = [f.metric() for f in fields]
    if not all(np.isfinite(m).all() for m in metric):
        raise WireFormatError(f"radar_ac predictor of {name!r} meets non-finite positions")
    return metric


def _range_sorted(positions: list[_Field]) -> bool:
    norm = sum(p.metric() ** 2 for p in positions)
    return norm.size >= 16 and float(np.mean(np.diff(norm) >= 0)) >= RANGE_SORTED_FRACTION


def _range_prediction(f: _Field, others: list[np.ndarray], sign: int) -> np.ndarray:
    """x from the previous detection's range and this one's other coordinates:
    sign * sqrt(r_prev^2 - y^2 - z^2) in grid steps (0 for the first)."""
    unit = f.gcd * f.step
    xm = f.base.astype(np.float64) * unit
    other_sq = _sum_of_squares(others)
    pred = np.zeros(f.base.size, np.int64)
    r_sq = xm[:-1] * xm[:-1] + other_sq[:-1]
    pred[1:] = sign * np.round(np.sqrt(np.maximum(r_sq - other_sq[1:], 0.0)) / unit)
    return pred


def _undo_range_prediction(res: np.ndarray, unit: float, others: list[np.ndarray],
                           sign: int) -> np.ndarray:
    """Inverse of ``_range_prediction``, one detection at a time with the same
    IEEE double operations in the same order (so the same predictions)."""
    other_sq = _sum_of_squares(others).tolist()
    out = res.tolist()
    for i in range(1, len(out)):
        xm = float(out[i - 1]) * unit
        r_sq = xm * xm + other_sq[i - 1]
        pred = math.sqrt(max(r_sq - other_sq[i], 0.0)) / unit
        if not pred < MAX_INT:  # inf or NaN from a forged step, or out of range
            raise WireFormatError("radar_ac range predictor decodes beyond 2**45 grid steps")
        out[i] += sign * round(pred)
        if abs(out[i]) >= MAX_INT:
            raise WireFormatError("radar_ac range predictor decodes beyond 2**45 grid steps")
    return np.array(out, np.int64)


def _sum_of_squares(values: list[np.ndarray]) -> np.ndarray:
    total = values[0] * values[0]
    for v in values[1:]:
        total = total + v * v
    return total


def _radial_cosine(positions: list[np.ndarray]) -> np.ndarray:
    """First coordinate over the norm of the position (0 at the origin); float64
    elementwise IEEE operations, so encoder and decoder agree bit for bit."""
    squared = sum(p * p for p in positions)
    norm = np.sqrt(squared)
    return np.where(norm > 0, positions[0] / np.where(norm > 0, norm, 1.0), 0.0)


def _step_code(step: float, out: _Bytes, gcd: int = 1) -> bool:
    """The grid step's byte (and float64 for a step off the table). Format 3
    folds a common factor up to STEP_GCD_MAX into a table step's code:
    ``1 + index + len(STEP_TABLE) * (gcd - 1)``. True when it did."""
    if step == 0:
        out.u8(STEP_INTEGER)
    elif step in STEP_TABLE:
        folded = 1 < gcd <= STEP_GCD_MAX
        out.u8(STEP_TABLE.index(step) + 1 + (len(STEP_TABLE) * (gcd - 1) if folded else 0))
        return folded
    else:
        out.u8(STEP_LITERAL)
        out.raw(_F64.pack(step))
    return False


def _read_step(p: _Parse, version: int = SECTION_FORMAT) -> tuple[float, int]:
    """(grid step, common factor folded into its code: 1 in format 2)."""
    code = p.u8("grid step")
    if code == STEP_INTEGER:
        return 0.0, 1
    if code == STEP_LITERAL:
        step = p.f64("grid step")
        if not (np.isfinite(step) and step > 0):
            raise WireFormatError(f"radar_ac grid step {step!r} is not a positive number")
        return step, 1
    table = len(STEP_TABLE)
    limit = table * (STEP_GCD_MAX if version >= 3 else 1)
    if code > limit:
        raise WireFormatError(f"radar_ac grid step code {code} is not in this decoder's table "
                              f"of {limit}")
    return STEP_TABLE[(code - 1) % table], (code - 1) // table + 1


# --- the codec ------------------------------------------------------------------------

class _Field:
    """One field as integers on its grid: value = base * gcd * step (step 0:
    integers as they are; bits domain: float32 bit patterns)."""

    def __init__(self, index: int, name: str, domain: int, step: float, base: np.ndarray,
                 gcd: int, is_float: bool) -> None:
        self.index, self.name, self.domain, self.step = index, name, domain, step
        self.base, self.gcd, self.is_float = base, gcd, is_float

    @property
    def unit(self) -> tuple:
        return (self.domain, self.step, self.gcd)

    def metric(self) -> np.ndarray:
        return self.base.astype(np.float64) * (self.gcd * self.step)


@register_codec
class RadarAdaptiveCodec(Codec):
    name = "radar_ac"
    modalities = frozenset({Modality.RADAR})
    lossless = False
    description = ("Radar detections on per-field grids (position, velocity, RCS), lossless "
                   "relative to the grid; adaptive arithmetic coding with per-field predictors")
    params = (
        Param("position_res", float, 0.01, "grid step of x, y, z, range (m)", min=1e-6, max=100.0),
        Param("velocity_res", float, 0.01, "grid step of velocity fields (m/s)",
              min=1e-6, max=100.0),
        Param("rcs_res", float, 0.1, "grid step of RCS (dBsm)", min=1e-6, max=100.0),
        Param("other_res", float, 0.0, "grid step of other float fields (0 = bit-exact)",
              min=0.0, max=1e6),
    )

    def _res_for(self, name: str) -> tuple[str, float]:
        low = name.lower()
        if low in POSITION_NAMES:
            return "position", self.settings["position_res"]
        if low in VELOCITY_NAMES:
            return "velocity", self.settings["velocity_res"]
        if low in RCS_NAMES:
            return "rcs", self.settings["rcs_res"]
        return "other", self.settings["other_res"]

    # -- encoder --

    def _to_ints(self, name: str, values: np.ndarray) -> tuple[int, float, np.ndarray] | None:
        """(domain, step, ints) for a scalar field, or None to keep it verbatim."""
        dt = values.dtype
        if np.issubdtype(dt, np.integer):
            return DOMAIN_GRID, 0.0, values.astype(np.int64)
        f = values.astype(np.float64)
        _, res = self._res_for(name)
        if np.isfinite(f).all():
            if res > 0 and (np.abs(f) / res < MAX_INT).all():
                return DOMAIN_GRID, *self._grid(f, values, res)
            if (f == np.round(f)).all() and (np.abs(f) < 2 ** 31).all() and not (
                    np.signbit(f) & (f == 0)).any():
                return DOMAIN_GRID, 0.0, f.astype(np.int64)
        if dt == np.float32:
            return DOMAIN_BITS, 0.0, _float32_to_ordered(values)
        return None

    @staticmethod
    def _grid(f: np.ndarray, values: np.ndarray, res: float) -> tuple[float, np.ndarray]:
        """The requested grid, or a coarser one the data already sits on exactly."""
        best_step, best = res, np.round(f / res).astype(np.int64)
        best_coarse = res * _gcd(best)
        for k in NATIVE_GRID_DIVISORS:
            fine = res / k
            q = np.round(f / fine).astype(np.int64)
            coarse = fine * _gcd(q)
            if coarse > best_coarse and np.array_equal(_dequantise(q, fine, values.dtype),
                                                        values):
                best_step, best, best_coarse = fine, q, coarse
        return best_step, best

    def _encode(self, frame: PointCloudFrame):
        pts = frame.points
        n = pts.size
        head = _Bytes()
        head.u8(SECTION_FORMAT)
        head.varint(n)
        names = pts.dtype.names
        fields, packed, offset = [], True, 0
        for name in names:
            sub, off = pts.dtype.fields[name][:2]
            base_dt = sub.base if sub.shape else sub
            count = int(np.prod(sub.shape)) if sub.shape else 1
            dstr = base_dt.newbyteorder("<").str.replace("<i1", "|i1").replace("<u1", "|u1")
            if dstr not in FIELD_TYPES:
                raise InvalidFrameError(f"field {name!r} has type {dstr}, which no PointCloud2 "
                                        f"field can carry; use one of {list(FIELD_TYPES)}")
            fields.append((name, dstr, int(off), count))
            packed &= off == offset
            offset = off + base_dt.itemsize * count
        packed &= offset == pts.dtype.itemsize

        columns: dict[int, _Field] = {}
        raw_parts, verbatim = [], []
        for i, name in enumerate(names):
            sub = pts.dtype[name]
            got = self._to_ints(name, pts[name]) if not sub.shape and n else None
            if got is None:
                verbatim.append(i)
                if n:
                    raw_parts.append(byte_shuffle(pts[name]))
                continue
            domain, step, ints = got
            gcd = _gcd(ints)
            columns[i] = _Field(i, name, domain, step, ints // gcd, gcd,
                                bool(np.issubdtype(sub, np.floating)))
        order = self._coding_order(columns, names)

        flags = (LAYOUT_ORGANISED if frame.height > 1 else 0) | (0 if packed else LAYOUT_OFFSETS)
        # Coding order: stored only when neither layout order nor the
        # integer-typed-fields-first rule gives it.
        coding = order + verbatim
        ints_first = _ints_first([d for _, d, _, _ in fields])
        if coding == list(range(len(names))):
            explicit = False
        elif coding == ints_first:
            flags |= LAYOUT_INTS_FIRST
            explicit = False
        else:
            flags |= LAYOUT_ORDER
            explicit = True
        layout = tuple((name, dstr) for name, dstr, _, count in fields if count == 1)
        preset = LAYOUT_PRESETS.index(layout) if packed and layout in LAYOUT_PRESETS else None
        if preset is not None:
            flags |= (preset + 1) << PRESET_SHIFT
        head.u8(flags)
        if frame.height > 1:
            head.varint(frame.height)
        if preset is None:
            head.varint(len(names))
        for name, dstr, _, count in fields if preset is None else ():
            # One byte for a scalar field of a known name: name code, type code.
            code = FIELD_NAMES.index(name) + 1 if name in FIELD_NAMES and count == 1 else 0
            head.u8(code << 3 | FIELD_TYPES.index(dstr))
            if not code:
                encoded = name.encode("utf-8")
                if len(encoded) > 127:
                    raise CodecError(f"field name {name!r} is longer than 127 bytes")
                head.u8(len(encoded) | (0x80 if count > 1 else 0))
                head.raw(encoded)
                if count > 1:
                    head.varint(count)
        if not packed:
            for _, _, off, _ in fields:
                head.varint(off)
            head.varint(pts.dtype.itemsize)
        if explicit:
            for i in coding:
                head.varint(i)

        writer = StreamWriter()
        coded: list[_Field] = []
        self._breakdown = {"layout": len(head.getvalue()), "fields": []}
        for i in order:
            plan_at, bits_at = len(head.getvalue()), writer.enc.num_bits()
            self._plan_and_write(columns[i], coded, head, writer)
            coded.append(columns[i])
            self._breakdown["fields"].append(
                (names[i], len(head.getvalue()) - plan_at, writer.enc.num_bits() - bits_at))
        if n:
            for i in verbatim:
                head.u8(DOMAIN_RAW << 6)
        raw = b"".join(raw_parts)
        header = head.getvalue()
        sections = [header + _words_to_section(writer.finish())]
        if raw:
            sections.append(zstandard.ZstdCompressor(level=19).compress(raw))
        return {}, self._trim_tail(frame, header, sections)

    def encode_with_breakdown(self, frame: PointCloudFrame) -> tuple[bytes, dict]:
        """The payload and where its section-0 bytes go: ``layout`` (format
        byte, count, flags, field list), per coded field ``(name, plan bytes,
        range-coded bits)`` and ``words``, the range coder's output after the
        trimmed tail (for benchmarks; fields kept verbatim are not listed)."""
        payload = self.encode(frame)
        breakdown = dict(self._breakdown)
        head = _read_header(unpack(payload))
        breakdown["words"] = len(unpack(payload).sections[0]) - head.end
        return payload, breakdown

    def _trim_tail(self, frame: PointCloudFrame, header: bytes, sections: list) -> list:
        """The range coder ends on whole 32-bit words, more than the decoder
        needs: stored most significant byte first and padded with zeros when
        read, the coded words lose their last bytes (the kept ones rounded up
        where that helps) as long as the payload still decodes to the same
        points, which is checked by decoding it (messages of at most
        ``TRIM_MAX_BYTES`` coded bytes)."""
        coded = sections[0][len(header):]
        if not coded or len(coded) > TRIM_MAX_BYTES:
            return sections

        def decoded(body: bytes):
            container = Container(frame.modality, self.name, self.model_id,
                                  sections=[header + body] + sections[1:])
            try:
                return self._decode(container).points.tobytes()
            except SensorCodecError:
                return None

        reference = decoded(coded)
        value, best = int.from_bytes(coded, "big"), coded
        for drop in range(1, min(len(coded), 8)):
            for bump in (0, 1):
                kept = (value >> (8 * drop)) + bump
                if kept >= 1 << (8 * (len(coded) - drop)):
                    continue
                body = kept.to_bytes(len(coded) - drop, "big") if kept else b""
                if decoded(body) == reference:
                    best = body
                    break
            else:
                break  # neither way decodes: fewer bytes will not either
        return [header + best] + sections[1:]

    @staticmethod
    def _coding_order(columns: dict[int, _Field], names) -> list[int]:
        """Integer fields first (they can key the others), then positions (the
        radial predictor needs them), then the rest in layout order. When the
        detections come sorted by range, x goes after y and z, so that the
        range predictor can give it from the previous detection's range."""
        ints = [i for i, f in columns.items() if not f.is_float]
        pos = {names[i].lower(): i for i in columns
               if i not in ints and names[i].lower() in ("x", "y", "z")}
        order = [pos[k] for k in ("x", "y", "z") if k in pos]
        if len(pos) == 3 and _range_sorted([columns[pos[k]] for k in ("x", "y", "z")]):
            order = [pos["y"], pos["z"], pos["x"]]
        return ints + order + [i for i in columns if i not in ints and i not in order]

    def _plan_and_write(self, f: _Field, coded: list[_Field], head: _Bytes,
                        writer: StreamWriter) -> None:
        n = f.base.size
        grid_step = f.domain == DOMAIN_GRID and f.is_float
        if (f.base == f.base[0]).all():
            if f.base[0] == 0:  # nothing else to store: 0 on any grid is 0
                head.u8(f.domain << 6 | PLAN_CONST | CONST_ZERO)
                f.base, f.gcd, f.step = f.base * 0, 1, 0.0  # what the decoder rebuilds
                return
            head.u8(f.domain << 6 | PLAN_CONST)
            if grid_step:
                _step_code(f.step, head)
            head.svarint(int(f.base[0]) * f.gcd)
            f.base, f.gcd = f.base * f.gcd, 1  # what the decoder rebuilds
            return
        candidates = [_candidate(f.base, (PRED_NONE,))]
        candidates += [_candidate(period_residual(f.base, p), (PRED_PERIOD, p))
                       for p in PERIODS if p < n]
        candidates += [_candidate(f.base - o.base, (PRED_REF, o.index))
                       for o in coded if o.unit == f.unit]
        candidates += self._radial_candidates(f, coded)
        candidates += self._key_candidates(f, coded)
        candidates += self._range_candidates(f, coded)
        if not f.is_float and 2 < n <= MAX_SEQUENTIAL_POINTS:
            candidates.append(_candidate(f.base - _match_prediction(f.base), (PRED_MATCH,)))
        candidates = [c for c in candidates if c is not None]
        best = sorted(candidates, key=lambda c: c[0])[:3]
        cost, plan, res = best[0]
        context, dictionary, first, nonnegative, centers = None, False, False, False, None
        keys = {c.index: c for c in coded}
        center_sets: dict = {}
        for key in [None] + coded:  # one model per key value (per track slot) where that pays
            groups = [np.arange(n)] if key is None else _context_groups(key)
            if groups is None:
                continue
            for b, (_, c_plan, c_res) in enumerate(best):
                if b not in center_sets:
                    # clustered large residuals (bursts 2.7 ms apart, radar cycles 50 ms
                    # apart in a time field): offsets from the nearest center are small
                    sets = []
                    if c_res.size and np.abs(c_res).max() < 2 ** 44:
                        sets = [_pick_centers(c_res, k) for k in range(1, MAX_CENTERS + 1)]
                    center_sets[b] = [None] + [c for c in sets if c.size]
                # a keyed prediction's first detections of each key (no history) apart
                splits = (False, True) if key is None and c_plan[0] == PRED_KEY else (False,)
                for split in splits:
                    c_groups = _first_groups(keys[c_plan[1]]) if split else groups
                    signs = (False, True) if c_res.size and c_res.min() >= 0 else (False,)
                    for use_dict in (False, True):
                        for unsigned in signs:
                            # centers with one model per key value: too few values each
                            plain = use_dict or key is not None
                            for c_centers in [None] if plain else center_sets[b]:
                                if c_centers is None:
                                    coded_res = _fold_nonnegative(c_res) if unsigned else c_res
                                    bits = sum(_residual_cost(coded_res[g], use_dict,
                                                              split and j == 1)
                                               for j, g in enumerate(c_groups))
                                    stored = 0
                                else:
                                    bits = sum(_centered_cost(c_res[g], c_centers, unsigned)
                                               for g in c_groups)
                                    stored = sum(8 * len(_svarint_bytes(c, unsigned))
                                                 for c in c_centers.tolist())
                                # an options byte, a field index for a context and the
                                # centers in the header
                                total = bits + stored + 8 * (key is not None) + 8 * (
                                    key is not None or use_dict or unsigned
                                    or c_centers is not None)
                                if total < cost:
                                    cost, plan, res = total, c_plan, c_res
                                    context, dictionary, first = key, use_dict, split
                                    nonnegative, centers = unsigned, c_centers
        cycle = None
        if (not f.is_float and 2 < n <= MAX_SEQUENTIAL_POINTS
                and np.unique(f.base).size <= MAX_CONTEXTS):
            symbols, escapes = _cycle_symbols(f.base)
            cycle_cost = _fast_cost(symbols) + _fast_cost(escapes) + 8
            if cycle_cost < cost:
                cycle = (symbols, escapes)
                plan, context, dictionary, first, nonnegative = (PRED_MATCH,), None, False, \
                    False, False
                centers = None
        groups = [np.arange(n)] if context is None else _context_groups(context)
        if first:
            groups = _first_groups(keys[plan[1]])
        first_sign = SIGN_NONE
        if first and not (dictionary or nonnegative or centers is not None) and groups[1].size:
            # the first detections' values (no prediction) often share a sign: x ahead
            lone = res[groups[1]]
            cheapest = _fast_cost(lone, FIRST_PRIOR)
            for sign, same in ((SIGN_NONNEGATIVE, lone), (SIGN_NONPOSITIVE, -lone)):
                folded_cost = _fast_cost(_fold_nonnegative(same), FIRST_PRIOR)
                if same.min() >= 0 and folded_cost < cheapest:
                    first_sign, cheapest = sign, folded_cost
        options = (OPT_CONTEXT if context is not None else 0) | (
            OPT_DICTIONARY if dictionary else 0) | (OPT_NONNEGATIVE if nonnegative else 0) | (
            OPT_PAIRS if plan[0] == PRED_MATCH and cycle is None else 0) | (
            (centers.size << CENTERS_SHIFT) if centers is not None else 0)
        pred = PRED_PREVIOUS if plan[0] == PRED_PERIOD and plan[1] == 1 else plan[0]
        byte_at = len(head.parts)
        head.u8(0)  # the plan byte, once the step code says whether it holds the factor
        folded = _step_code(f.step, head, f.gcd) if grid_step else False
        head.parts[byte_at] = bytes((f.domain << 6 | (PLAN_GCD if f.gcd != 1 and not folded
                                                      else 0)
                                     | pred | (PLAN_OPTIONS if options else 0),))
        if f.gcd != 1 and not folded:
            head.varint(f.gcd)
        if pred == PRED_PERIOD or pred == PRED_REF:
            head.varint(plan[1])
        elif plan[0] == PRED_RADIAL:
            _, pos_idx, ref_idx, c = plan
            head.u8(len(pos_idx))
            for i in pos_idx:
                head.varint(i)
            head.varint(NO_REF if ref_idx is None else ref_idx + 1)
            head.svarint(c)
        elif plan[0] == PRED_KEY:
            # key field, order, whether first detections of a key have their own model
            # and the sign they share
            head.varint(plan[1] << 4 | (plan[2] - 1) << 3 | first << 2 | first_sign)
        elif plan[0] == PRED_RANGE:
            _, others, sign = plan
            head.u8(len(others) | (0x80 if sign < 0 else 0))
            for i in others:
                head.varint(i)
        if options:
            head.u8(options)
        if context is not None:
            head.varint(context.index)
        if cycle is not None:
            _write_fast(writer, cycle[0])
            _write_fast(writer, cycle[1])
            return
        if centers is not None:
            for c in centers.tolist():
                (head.varint if nonnegative else head.svarint)(c)
            for g in groups:
                _write_centered(writer, res[g], centers, nonnegative)
            return
        if nonnegative:
            res = _fold_nonnegative(res)
        if first_sign != SIGN_NONE:
            res = res.copy()
            res[groups[1]] = _fold_nonnegative(res[groups[1]] * (
                1 if first_sign == SIGN_NONNEGATIVE else -1))
        for j, g in enumerate(groups):
            if dictionary:
                _write_dictionary_adaptive(writer, res[g])
            else:
                _write_fast(writer, res[g], FIRST_PRIOR if first and j == 1 else FAST_PRIOR)

    def _radial_candidates(self, f: _Field, coded: list[_Field]) -> list:
        if f.domain != DOMAIN_GRID or f.step == 0 or f.name.lower() not in VELOCITY_NAMES:
            return []
        by_name = {o.name.lower(): o for o in coded if o.domain == DOMAIN_GRID and o.step > 0}
        pos = [by_name[k] for k in ("x", "y", "z") if k in by_name]
        if len(pos) < 2 or pos[0].name.lower() != "x":
            return []
        cos = _radial_cosine([p.metric() for p in pos])
        usable = np.abs(cos) > 0.3
        if not usable.any():
            return []
        out = []
        refs = [None] + [o for o in coded if o.unit == f.unit]
        for ref in refs:
            target = f.base - (ref.base if ref is not None else 0)
            c = int(np.round(np.median(target[usable] / cos[usable])))
            if c == 0 or abs(c) > MAX_INT // 4:
                continue
            res = target - np.round(c * cos).astype(np.int64)
            out.append(_candidate(res, (PRED_RADIAL, [p.index for p in pos],
                                        None if ref is None else ref.index, c)))
        return out

    @staticmethod
    def _range_candidates(f: _Field, coded: list[_Field]) -> list:
        if (f.domain != DOMAIN_GRID or f.step == 0 or f.name.lower() != "x"
                or not 1 < f.base.size <= MAX_SEQUENTIAL_POINTS):
            return []
        others = [o for o in coded if o.name.lower() in ("y", "z") and o.domain == DOMAIN_GRID
                  and o.step > 0]
        if len(others) != 2:
            return []
        sign = -1 if (f.base < 0).sum() * 2 > f.base.size else 1
        pred = _range_prediction(f, [o.metric() for o in others], sign)
        return [_candidate(f.base - pred, (PRED_RANGE, [o.index for o in others], sign))]

    @staticmethod
    def _key_candidates(f: _Field, coded: list[_Field]) -> list:
        out = []
        for key in coded:
            if key.domain != DOMAIN_GRID or key.step != 0:
                continue
            prev = _previous_same_key(key.base)
            if (prev >= 0).sum() < f.base.size // 2:  # keys must repeat to help
                continue
            for order in (1, 2):
                out.append(_candidate(f.base - _key_prediction(f.base, prev, order),
                                      (PRED_KEY, key.index, order)))
        return out

    # -- decoder --

    def _decode(self, c: Container) -> PointCloudFrame:
        if "field_plan" in c.metadata:
            return _decode_json_plan(c)
        head = _read_header(c)
        records, n = head.records, head.records.size
        decoded: dict[int, _Field] = {}
        if n:
            body = c.sections[0][head.end:]
            reader = StreamReader(_section_to_words(body) if head.version >= 3 else body)
            for i, plan in zip(head.order, head.plans):
                if plan is not None:
                    decoded[i] = self._decode_field(plan, reader, decoded, records, n,
                                                    head.version)
        raw_fields = [i for i, plan in zip(head.order, head.plans) if plan is None]
        if raw_fields and n:
            self._decode_raw(c, raw_fields, head.fields, records, n)
        elif len(c.sections) == 2:
            raise WireFormatError("radar_ac payload has a verbatim section but no verbatim field")
        try:
            return PointCloudFrame(records, c.modality, head.height, head.width, c.stamp_ns,
                                   c.frame_id)
        except InvalidFrameError as exc:  # a layout that no cloud may have
            raise WireFormatError(f"radar_ac payload describes an invalid cloud: {exc}") from None

    @staticmethod
    def _decode_field(plan: dict, reader: StreamReader, decoded: dict, records: np.ndarray,
                      n: int, version: int) -> _Field:
        name, dt, step = plan["name"], plan["dtype"], plan["step"]

        def grid_of(j: int) -> _Field:
            other = decoded.get(j)
            if other is None:
                raise WireFormatError(f"radar_ac field {name!r} needs field {j}, which is "
                                      "verbatim")
            return other

        if plan["kind"] == "const":
            ints = np.full(n, plan["value"], np.int64)
            gcd = 1
            base = ints
        else:
            gcd = plan["gcd"]
            groups = [np.arange(n)]
            if plan["context"] is not None:
                groups = _context_groups(grid_of(plan["context"]), limit=MAX_CONTEXTS * 4)
                if groups is None:
                    raise WireFormatError(f"radar_ac field {name!r} takes its contexts from a "
                                          f"field with more than {MAX_CONTEXTS * 4} values")
            if plan["first"]:
                groups = _first_groups(grid_of(plan["key"]))
            if plan["cycle"]:
                groups = []
                symbols = _read_fast(reader, n)
                escapes = _read_fast(reader, int((symbols == 0).sum()))
                res = _undo_cycle_symbols(symbols, escapes)
            fast = _read_fast if version >= 3 else read_adaptive
            read = _read_dictionary_adaptive if plan["dictionary"] else fast
            if groups:
                res = np.empty(n, np.int64)
            if plan["centers"] is not None:
                for g in groups:
                    res[g] = _read_centered(reader, g.size, plan["centers"], plan["nonnegative"])
                groups = []
            for j, g in enumerate(groups):
                if plan["first"] and j == 1 and not plan["dictionary"]:
                    res[g] = _read_fast(reader, g.size, FIRST_PRIOR)
                else:
                    res[g] = read(reader, g.size)
            if plan["nonnegative"] and groups:
                res = zigzag(res).astype(np.int64)
            if plan["first_sign"] != SIGN_NONE and groups:
                lone = groups[1]
                res[lone] = zigzag(res[lone]).astype(np.int64) * (
                    1 if plan["first_sign"] == SIGN_NONNEGATIVE else -1)
            pred = plan["pred"]
            if pred == PRED_NONE:
                base = res
            elif pred == PRED_PERIOD:
                base = undo_period_residual(res, plan["period"])
            elif pred == PRED_REF:
                base = res + grid_of(plan["ref"]).base
            elif pred == PRED_RADIAL:
                pos = [grid_of(j) for j in plan["pos"]]
                if any(q.domain != DOMAIN_GRID for q in pos):
                    raise WireFormatError(f"radar_ac radial predictor of {name!r} names a "
                                          "position field that is not on a grid")
                cos = _radial_cosine(_finite_positions(pos, name))
                base = res + np.round(plan["c"] * cos).astype(np.int64)
                if plan["ref"] is not None:
                    base = base + grid_of(plan["ref"]).base
            elif pred == PRED_KEY:
                base = _undo_key_prediction(res, grid_of(plan["key"]).base, plan["order"])
            elif pred == PRED_MATCH:
                base = res if plan["cycle"] else _match_prediction(res, residuals=True)
            else:
                others = [grid_of(j) for j in plan["others"]]
                if any(q.domain != DOMAIN_GRID for q in others):
                    raise WireFormatError(f"radar_ac range predictor of {name!r} names a "
                                          "position field that is not on a grid")
                base = _undo_range_prediction(res, gcd * step, _finite_positions(others, name),
                                              plan["sign"])
            if np.abs(base).max() >= MAX_INT // max(gcd, 1):
                raise WireFormatError(f"radar_ac field {name!r} decodes to values beyond "
                                      f"2**45 grid steps")
            ints = base * gcd
        if plan["domain"] == DOMAIN_BITS:
            if ints.min() < -(2 ** 31) or ints.max() >= 2 ** 31:
                raise WireFormatError(f"radar_ac field {name!r} decodes to a bit pattern "
                                      "beyond 32 bits")
            records[name] = _ordered_to_float32(ints)
        else:
            # An encoder only puts values of the field's type on a grid: a
            # payload claiming more is forged or damaged, not data to wrap.
            limit = np.finfo(dt).max if dt.kind == "f" else None
            if limit is not None and not np.abs(ints.astype(np.float64) * step).max() <= limit:
                raise WireFormatError(f"radar_ac field {name!r} decodes beyond the range of "
                                      f"{dt}")
            if limit is None and (ints.min() < np.iinfo(dt).min or ints.max() > np.iinfo(dt).max):
                raise WireFormatError(f"radar_ac field {name!r} decodes beyond the range of "
                                      f"{dt}")
            records[name] = _dequantise(ints, step, dt)
        return _Field(plan["index"], name, plan["domain"], step, base, gcd, dt.kind == "f")

    @staticmethod
    def _decode_raw(c: Container, raw_fields: list[int], fields: list, records: np.ndarray,
                    n: int) -> None:
        if len(c.sections) != 2:
            raise WireFormatError("radar_ac payload lacks the section of verbatim fields")
        sizes = [np.dtype(fields[i][1]).itemsize * fields[i][3] * n for i in raw_fields]
        raw = zstd_decompress_exact(c.sections[1], sum(sizes), "verbatim section")
        pos = 0
        for i, size in zip(raw_fields, sizes):
            name, dstr, _, repeat = fields[i]
            dt = np.dtype(dstr)
            records[name] = byte_unshuffle(raw[pos:pos + size], dt, n * repeat).reshape(
                records[name].shape)
            pos += size


class _Header:
    """What section 0 says before its range-coded words."""

    def __init__(self, records, height, width, fields, order, plans, end, version) -> None:
        self.records, self.height, self.width = records, height, width
        self.fields, self.order, self.plans, self.end = fields, order, plans, end
        self.version = version


def _read_header(c: Container) -> _Header:
    if not 1 <= len(c.sections) <= 2:
        raise WireFormatError(f"radar_ac payload needs 1 or 2 sections, has {len(c.sections)}")
    p = _Parse(c.sections[0])
    version = p.u8("format byte")
    if version not in READABLE_FORMATS:
        raise UnsupportedVersionError(
            f"radar_ac section format {version} is not supported; this decoder reads "
            f"formats {', '.join(map(str, READABLE_FORMATS))} (and the JSON-plan format 1)")
    n = p.varint("point count")
    flags = p.u8("layout flags")
    known = LAYOUT_ORGANISED | LAYOUT_OFFSETS | LAYOUT_ORDER | LAYOUT_INTS_FIRST
    preset = (flags >> PRESET_SHIFT) - 1 if version >= 3 else -1
    if flags & ~(known | (0xFF << PRESET_SHIFT & 0xFF if version >= 3 else 0)):
        raise WireFormatError(f"radar_ac layout flags {flags:#x} hold unknown bits")
    if preset >= 0 and flags & LAYOUT_OFFSETS:
        raise WireFormatError("radar_ac layout preset comes with explicit offsets")
    height = p.varint("height", MAX_INT) if flags & LAYOUT_ORGANISED else 1
    if height == 0 or n % height:
        raise WireFormatError(f"radar_ac height {height} does not divide {n} points")
    fields = []
    if preset >= 0:
        if preset >= len(LAYOUT_PRESETS):
            raise WireFormatError(f"radar_ac layout preset {preset} is not in this decoder's "
                                  f"table of {len(LAYOUT_PRESETS)}")
        fields = [[name, dstr, 0, 1] for name, dstr in LAYOUT_PRESETS[preset]]
    count = len(fields) or p.varint("field count", 4096)
    if count == 0:
        raise WireFormatError("radar_ac layout has no fields")
    for _ in range(count - len(fields)):
        byte = p.u8("field")
        code, dstr, repeat = byte >> 3, FIELD_TYPES[byte & 7], 1
        if code == 0:
            length = p.u8("field name length")
            name = p.take(length & 0x7F, "field name").decode("utf-8", "replace")
            if length & 0x80:
                repeat = p.varint("field count", 1024)
        else:
            name = FIELD_NAMES[code - 1]
        fields.append([name, dstr, 0, repeat])
    if len({fld[0] for fld in fields}) != count:
        raise WireFormatError("radar_ac layout names a field twice")
    if flags & LAYOUT_OFFSETS:
        for fld in fields:
            fld[2] = p.varint("field offset", 1 << 16)
        step = p.varint("point step", 1 << 16)
    else:
        step = 0
        for fld in fields:
            fld[2] = step
            step += np.dtype(fld[1]).itemsize * fld[3]
    meta = {"fields": fields, "point_step": step, "height": height, "width": n // height,
            "num_points": n}
    records, height, width = empty_cloud_from_meta(meta, c.modality)
    if flags & LAYOUT_ORDER:
        order = [p.varint("coding order", count - 1) for _ in range(count)]
        if sorted(order) != list(range(count)):
            raise WireFormatError(f"radar_ac coding order {order} is not a permutation")
    elif flags & LAYOUT_INTS_FIRST:
        order = _ints_first([fld[1] for fld in fields])
    else:
        order = list(range(count))
    plans: list = []
    if n:
        seen: dict = {}
        plans = [_read_plan(p, i, fields, seen, n, version) for i in order]
    return _Header(records, height, width, fields, order, plans, p.pos, version)


def _read_plan(p: _Parse, i: int, fields: list, seen: dict, n: int, version: int):
    name, dstr, _, repeat = fields[i]
    byte = p.u8("field plan")
    domain, pred = byte >> 6, byte & 0x0F
    if domain == DOMAIN_RAW:
        if byte != DOMAIN_RAW << 6:
            raise WireFormatError(f"radar_ac verbatim field {name!r} has plan {byte:#x}")
        seen[i] = None
        return None
    if repeat != 1:
        raise WireFormatError(f"radar_ac array field {name!r} must be verbatim")
    if domain not in (DOMAIN_GRID, DOMAIN_BITS):
        raise WireFormatError(f"radar_ac field {name!r} has unknown domain {domain}")
    is_float = "f" in dstr
    if domain == DOMAIN_BITS and dstr != "<f4":
        raise WireFormatError(f"radar_ac bit-pattern coding of {name!r} needs float32, "
                              f"field is {dstr}")
    if version >= 3 and byte & PLAN_CONST and byte & CONST_ZERO:
        if byte & (PLAN_GCD | 0x0F) != CONST_ZERO:
            raise WireFormatError(f"radar_ac constant field {name!r} has plan {byte:#x}")
        plan = {"index": i, "name": name, "dtype": np.dtype(dstr), "domain": domain,
                "step": 0.0, "kind": "const", "value": 0}
        seen[i] = plan
        return plan
    step, folded = (_read_step(p, version) if domain == DOMAIN_GRID and is_float
                    else (0.0, 1))
    plan = {"index": i, "name": name, "dtype": np.dtype(dstr), "domain": domain,
            "step": step}
    seen[i] = plan
    if byte & PLAN_CONST:
        if byte & (PLAN_GCD | 0x0F) or folded != 1:
            raise WireFormatError(f"radar_ac constant field {name!r} has plan {byte:#x}")
        plan.update(kind="const", value=p.svarint("constant"))
        return plan
    gcd = folded * (p.varint("common factor") if byte & PLAN_GCD else 1)
    if gcd == 0 or gcd > MAX_INT:
        raise WireFormatError(f"radar_ac field {name!r} has common factor {gcd}")
    has_options = pred & PLAN_OPTIONS
    pred &= ~PLAN_OPTIONS
    if pred == PRED_PREVIOUS and version >= 3:
        pred = PRED_PERIOD
        plan["period"] = 1
    elif pred == PRED_PERIOD:
        plan["period"] = p.varint("period", max(n, 1))
    plan.update(kind="stream", gcd=gcd, pred=pred)

    def earlier(what: str, j: int) -> int:
        if j == i or seen.get(j) is None:
            raise WireFormatError(f"radar_ac field {name!r} refers to field {j} as its "
                                  f"{what}, which is not coded before it")
        return j

    if pred in (PRED_NONE, PRED_PERIOD):
        pass
    elif pred == PRED_REF:
        plan["ref"] = earlier("reference", p.varint("reference field", 4095))
    elif pred == PRED_RADIAL:
        npos = p.u8("position count")
        if npos not in (2, 3):
            raise WireFormatError(f"radar_ac radial predictor of {name!r} needs 2 or 3 "
                                  f"position fields, has {npos}")
        plan["pos"] = [earlier("position", p.varint("position field", 4095))
                       for _ in range(npos)]
        ref = p.varint("reference field", 4096)
        plan["ref"] = None if ref == NO_REF else earlier("reference", ref - 1)
        plan["c"] = p.svarint("radial coefficient")
        if abs(plan["c"]) > MAX_INT // 4:
            raise WireFormatError(f"radar_ac radial coefficient {plan['c']} is too large")
    elif pred == PRED_RANGE:
        if n > MAX_SEQUENTIAL_POINTS or step == 0:
            raise WireFormatError(f"radar_ac range predictor of {name!r} needs a grid step and "
                                  f"at most {MAX_SEQUENTIAL_POINTS} detections, has {n}")
        byte = p.u8("range predictor")
        plan["sign"] = -1 if byte & 0x80 else 1
        plan["others"] = [earlier("position", p.varint("position field", 4095))
                          for _ in range(byte & 0x7F)]
        if not 1 <= len(plan["others"]) <= 2:
            raise WireFormatError(f"radar_ac range predictor of {name!r} names "
                                  f"{len(plan['others'])} other position fields")
    elif pred == PRED_MATCH:
        if n > MAX_SEQUENTIAL_POINTS:
            raise WireFormatError(f"radar_ac match predictor of {name!r} takes at most "
                                  f"{MAX_SEQUENTIAL_POINTS} detections, has {n}")
    elif pred == PRED_KEY:
        if version >= 3:
            code = p.varint("key field", 4095 << 4 | 15)
            plan["key"] = earlier("key", code >> 4)
            plan["order"] = (code >> 3 & 1) + 1
            plan["first"] = bool(code & 4)
            plan["first_sign"] = code & 3
            if plan["first_sign"] not in (SIGN_NONE, SIGN_NONNEGATIVE, SIGN_NONPOSITIVE) or (
                    plan["first_sign"] and not plan["first"]):
                raise WireFormatError(f"radar_ac key predictor of {name!r} has code {code}")
        else:
            plan["key"] = earlier("key", p.varint("key field", 4095))
            plan["order"] = p.u8("key order")
        if plan["order"] not in (1, 2):
            raise WireFormatError(f"radar_ac key predictor order {plan['order']} is unknown")
    else:
        raise WireFormatError(f"radar_ac field {name!r} has unknown predictor {pred}")
    options = p.u8("plan options") if has_options else 0
    allowed = OPT_CONTEXT | OPT_DICTIONARY | (
        OPT_NONNEGATIVE | OPT_PAIRS | 3 << CENTERS_SHIFT if version >= 3 else 0)
    if options & ~allowed or (has_options and not options):
        raise WireFormatError(f"radar_ac field {name!r} has unknown plan options {options:#x}")
    plan.setdefault("first", False)
    plan.setdefault("first_sign", SIGN_NONE)
    if options & OPT_PAIRS and pred != PRED_MATCH:
        raise WireFormatError(f"radar_ac field {name!r} has pair matching without the match "
                              "predictor")
    # format 3: the match predictor alone is the cycle coder
    plan["cycle"] = version >= 3 and pred == PRED_MATCH and not options & OPT_PAIRS
    if plan["cycle"] and options:
        raise WireFormatError(f"radar_ac field {name!r} has the cycle coder with options "
                              f"{options:#x}")
    if plan["first_sign"] and (options & (OPT_DICTIONARY | OPT_NONNEGATIVE)
                               or options >> CENTERS_SHIFT & 3):
        raise WireFormatError(f"radar_ac field {name!r} folds its first detections and has "
                              f"options {options:#x}")
    if plan["first"] and options & OPT_CONTEXT:
        raise WireFormatError(f"radar_ac field {name!r} splits first detections and has "
                              f"contexts (options {options:#x}): one grouping only")
    plan["nonnegative"] = bool(options & OPT_NONNEGATIVE)
    plan["dictionary"] = bool(options & OPT_DICTIONARY)
    plan["context"] = (earlier("context", p.varint("context field", 4095))
                       if options & OPT_CONTEXT else None)
    plan["centers"] = None
    k = options >> CENTERS_SHIFT & 3
    if k:
        if options & OPT_DICTIONARY:
            raise WireFormatError(f"radar_ac field {name!r} has centers and a dictionary")
        read = (lambda: p.varint("center")) if plan["nonnegative"] else (
            lambda: p.svarint("center"))
        plan["centers"] = np.array([read() for _ in range(k)], np.int64)
        if np.abs(plan["centers"]).max() >= 2 ** 44:
            raise WireFormatError(f"radar_ac field {name!r} has a center beyond 2**44")
    return plan


def _dictionary(earlier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most frequent earlier residuals (ties: smaller first) and their counts."""
    if earlier.size == 0:
        return earlier, earlier
    values, counts = np.unique(earlier, return_counts=True)
    top = np.lexsort((values, -counts))[:DICTIONARY_SIZE]
    return values[top], counts[top].astype(np.float64)


def _dictionary_blocks(values: np.ndarray):
    """Per adaptive block: (start, end, dictionary words, their weights). Lazy, so the
    decoder passes its output array: each block's dictionary is built from the values
    decoded into it before."""
    for a, b in adaptive_blocks(values.size):
        words, weights = _dictionary(values[:a])
        yield a, b, words, weights


def _write_dictionary_adaptive(writer: StreamWriter, values: np.ndarray) -> None:
    """Like ``write_adaptive``, but each block first codes, for every value, one
    of the most frequent earlier values or an escape; escaped values follow
    with the bucket model. Near-constant large residuals (a radar's fixed
    2.7 ms burst spacing in a time field) then cost a fraction of a bit."""
    counts = np.full(ALPHABET, ADAPTIVE_PRIOR)
    escapes = DICTIONARY_ESCAPE_PRIOR
    for a, b, words, weights in _dictionary_blocks(values):
        block = values[a:b]
        index = {int(w): i + 1 for i, w in enumerate(words)}
        dsym = np.array([index.get(int(v), 0) for v in block], np.int32)
        if words.size:
            writer.enc.encode(dsym, Categorical(np.r_[escapes, weights], perfect=False))
        sym, nextra, extra = to_symbols(block[dsym == 0])
        if sym.size:
            writer.enc.encode(sym, Categorical(counts, perfect=False))
            writer.write_extra(nextra, extra)
        counts += np.bincount(sym, minlength=ALPHABET)
        escapes += sym.size


def _read_dictionary_adaptive(reader: StreamReader, count: int) -> np.ndarray:
    out = np.zeros(count, np.int64)
    counts = np.full(ALPHABET, ADAPTIVE_PRIOR)
    escapes = DICTIONARY_ESCAPE_PRIOR
    for a, b, words, weights in _dictionary_blocks(out):
        if words.size:
            dsym = np.asarray(reader.dec.decode(
                Categorical(np.r_[escapes, weights], perfect=False), b - a), np.int64)
            if dsym.size and int(dsym.max()) > words.size:
                raise WireFormatError("radar_ac dictionary symbol outside the dictionary")
        else:
            dsym = np.zeros(b - a, np.int64)
        escaped = np.flatnonzero(dsym == 0)
        sym = np.zeros(0, np.int32)
        if escaped.size:
            sym = np.asarray(reader.dec.decode(Categorical(counts, perfect=False),
                                               int(escaped.size)), np.int32)
            if int(sym.max()) >= ALPHABET:
                raise WireFormatError("radar_ac decoded symbol outside the alphabet")
            out[a + escaped] = from_symbols(sym, read_extra_bits(reader.dec, sym))
        hits = np.flatnonzero(dsym > 0)
        out[a + hits] = words[dsym[hits] - 1]
        counts += np.bincount(sym, minlength=ALPHABET)
        escapes += sym.size
    return out



def _fast_blocks(n: int) -> list[tuple[int, int]]:
    """Format 3: one symbol at a time for the first FAST_SINGLES, then blocks
    of 16, 32, 64, 64, ... (the model is re-estimated before each)."""
    out = [(i, i + 1) for i in range(min(n, FAST_SINGLES))]
    start, size = len(out), 16
    while start < n:
        out.append((start, min(n, start + size)))
        start, size = out[-1][1], min(size * 2, ADAPTIVE_BLOCK)
    return out


_FAMILY = Categorical(perfect=False)  # one probability row per symbol, given at coding time


def _write_fast(writer: StreamWriter, values: np.ndarray,
                prior: np.ndarray = FAST_PRIOR) -> None:
    """Format 3's adaptive coder: like ``write_adaptive`` with FAST_SINGLES
    single-symbol steps first. Those are coded in one call, each with its own
    row of counts (the decoder rebuilds each row with the same family)."""
    if values.size == 0:
        return
    sym, nextra, extra = to_symbols(values)
    k = min(sym.size, FAST_SINGLES)
    onehot = np.zeros((k, ALPHABET))
    onehot[np.arange(k), sym[:k]] = 1.0
    rows = prior + np.cumsum(onehot, axis=0) - onehot
    writer.enc.encode(sym[:k], _FAMILY, rows)
    counts = prior + onehot.sum(axis=0)
    for a, b in _fast_blocks(sym.size)[k:]:
        writer.enc.encode(sym[a:b], Categorical(counts, perfect=False))
        counts += np.bincount(sym[a:b], minlength=ALPHABET)
    writer.write_extra(nextra, extra)


def _read_fast(reader: StreamReader, count: int, prior: np.ndarray = FAST_PRIOR) -> np.ndarray:
    if count == 0:
        return np.zeros(0, np.int64)
    sym = np.empty(count, np.int32)
    counts = prior.copy()
    for a, b in _fast_blocks(count):
        if b - a == 1 and a < FAST_SINGLES:
            s = np.asarray(reader.dec.decode(_FAMILY, counts[None, :]), np.int32)
        else:
            s = np.asarray(reader.dec.decode(Categorical(counts, perfect=False), b - a),
                           np.int32)
        if s.size and int(s.max()) >= ALPHABET:
            raise WireFormatError("radar_ac decoded symbol outside the alphabet")
        sym[a:b] = s
        counts += np.bincount(s, minlength=ALPHABET)
    return from_symbols(sym, read_extra_bits(reader.dec, sym))


def _fast_cost(values: np.ndarray, prior: np.ndarray = FAST_PRIOR) -> float:
    """Ideal cost in bits of ``_write_fast`` (for choosing predictors)."""
    if values.size == 0:
        return 0.0
    sym, nextra, _ = to_symbols(values)
    k = min(sym.size, FAST_SINGLES)
    head = sym[:k]
    # earlier occurrences of each symbol among the singles: rank within equal symbols
    order = np.argsort(head, kind="stable")
    ranked = head[order]
    idx = np.arange(k)
    run_start = np.maximum.accumulate(np.where(np.r_[True, ranked[1:] != ranked[:-1]], idx, 0))
    before = np.empty(k)
    before[order] = idx - run_start
    bits = float(nextra.sum()) - float(np.log2((prior[head] + before)
                                               / (prior.sum() + idx)).sum())
    counts = prior + np.bincount(head, minlength=ALPHABET)
    for a, b in _fast_blocks(sym.size)[k:]:
        bits -= float(np.log2((counts / counts.sum())[sym[a:b]]).sum())
        counts += np.bincount(sym[a:b], minlength=ALPHABET)
    return bits


def _residual_cost(values: np.ndarray, dictionary: bool, first: bool = False) -> float:
    """Ideal cost in bits of ``_write_fast`` (with ``FIRST_PRIOR`` for a group of
    first detections) or ``_write_dictionary_adaptive``."""
    if not dictionary:
        return _fast_cost(values, FIRST_PRIOR if first else FAST_PRIOR)
    bits = 0.0
    counts = np.full(ALPHABET, ADAPTIVE_PRIOR)
    escapes = DICTIONARY_ESCAPE_PRIOR
    for a, b, words, weights in _dictionary_blocks(values):
        block = values[a:b]
        hit = np.zeros(block.size, bool)
        if words.size:
            order = np.argsort(words)
            pos = np.minimum(np.searchsorted(words[order], block), words.size - 1)
            hit = words[order][pos] == block
            total = escapes + weights.sum()
            p = np.where(hit, weights[order][pos], escapes) / total
            bits -= float(np.log2(p).sum())
        sym, nextra, _ = to_symbols(block[~hit])
        bits -= float(np.log2((counts / counts.sum())[sym]).sum()) - float(nextra.sum())
        counts += np.bincount(sym, minlength=ALPHABET)
        escapes += sym.size
    return bits


def _candidate(res: np.ndarray, plan: tuple) -> tuple | None:
    """(exact cost in bits, plan, residuals), or None for residuals beyond what the
    entropy coder takes (extrapolating from values near 2**45)."""
    if res.size and np.abs(res).max() >= MAX_RESIDUAL:
        return None
    return _fast_cost(res), plan, res


def _context_groups(key: _Field, limit: int = MAX_CONTEXTS) -> list[np.ndarray] | None:
    """Indices of each key value (ascending values, detections in order), or
    None when the key cannot serve: not integer, or too many values."""
    if key.domain != DOMAIN_GRID or key.step != 0:
        return None
    values, inverse = np.unique(key.base, return_inverse=True)
    if not 1 < values.size <= limit or values.size * 4 > key.base.size:
        return None
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def _cycle_candidates(ref: list, known: list, cur: list) -> list:
    """The values that may come next, likeliest first: those not yet in the
    current cycle, in the previous cycle's order from after the last value;
    then other known values (by recency); then the current cycle's (a new
    cycle starts), in the previous cycle's order."""
    pos = ref.index(cur[-1]) + 1 if cur and cur[-1] in ref else 0
    in_cycle = set(cur)
    unseen = [x for x in ref[pos:] + ref[:pos] if x not in in_cycle]
    taken = set(unseen)
    others = [x for x in reversed(known) if x not in taken and x not in in_cycle]
    repeats = [x for x in ref if x in in_cycle]
    repeats += [x for x in reversed(known) if x in in_cycle and x not in set(repeats)]
    return unseen + others + repeats


def _cycle_step(v: int, known: list, cycle: list) -> None:
    """Update after value ``v``: ``cycle`` is [previous cycle, current cycle]."""
    if v in cycle[1]:  # a value repeats: a new cycle starts
        cycle[0], cycle[1] = cycle[1], []
    cycle[1].append(v)
    if v in known:
        known.remove(v)
    known.append(v)


def _cycle_symbols(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Track slots reported once per radar cycle in a varying order: each
    value as 1 + its index among ``_cycle_candidates``, or 0 and an escape
    (the difference to the previous value) for a value not seen before.
    Symbols come back zigzag-folded (they are never negative)."""
    known: list = []
    cycle: list = [[], []]
    symbols, escapes = [], []
    for v in values.tolist():
        cands = _cycle_candidates(cycle[0] or known, known, cycle[1])
        if v in cands:
            symbols.append(cands.index(v) + 1)
        else:
            symbols.append(0)
            escapes.append(v - (known[-1] if known else 0))
        _cycle_step(v, known, cycle)
    return (_fold_nonnegative(np.array(symbols, np.int64)), np.array(escapes, np.int64))


def _undo_cycle_symbols(symbols: np.ndarray, escapes: np.ndarray) -> np.ndarray:
    if symbols.size > MAX_SEQUENTIAL_POINTS:
        raise WireFormatError(f"radar_ac cycle coder takes at most {MAX_SEQUENTIAL_POINTS} "
                              f"detections, has {symbols.size}")
    known: list = []
    cycle: list = [[], []]
    out = []
    esc = iter(escapes.tolist())
    for s in zigzag(symbols).tolist():
        if s == 0:
            v = next(esc) + (known[-1] if known else 0)
            if abs(v) >= MAX_INT or len(known) >= MAX_CYCLE_VALUES:
                raise WireFormatError("radar_ac cycle coder decodes a value beyond 2**45 or "
                                      f"more than {MAX_CYCLE_VALUES} distinct values")
        else:
            cands = _cycle_candidates(cycle[0] or known, known, cycle[1])
            if s > len(cands):
                raise WireFormatError(f"radar_ac cycle symbol {s} names one of "
                                      f"{len(cands)} candidates")
            v = cands[s - 1]
        _cycle_step(v, known, cycle)
        out.append(v)
    return np.array(out, np.int64)


def _svarint_bytes(v: int, unsigned: bool = False) -> bytes:
    out = _Bytes()
    (out.varint if unsigned else out.svarint)(v)
    return out.getvalue()


def _pick_centers(values: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` centers of the residuals too large to be symbols themselves
    (a few rounds of one-dimensional k-means seeded at quantiles; 0 is always
    a center too, implicitly)."""
    big = values[np.abs(values) >= DIRECT]
    if big.size < max(2 * k, MIN_CENTERED):
        return np.zeros(0, np.int64)
    centers = np.quantile(big, np.linspace(0, 1, k + 2)[1:-1])
    for _ in range(5):
        cls = _nearest_center(big, np.round(centers).astype(np.int64))
        centers = np.array([np.median(big[cls == j + 1]) if (cls == j + 1).any() else centers[j]
                            for j in range(k)])
    centers = np.unique(np.round(centers).astype(np.int64))
    return centers[np.abs(centers) >= DIRECT]


def _nearest_center(values: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Class of each value: 0 for the implicit center 0, j + 1 for centers[j]."""
    everything = np.r_[0, centers]
    return np.argmin(np.abs(values[:, None] - everything[None, :]), axis=1)


def _centered_parts(values: np.ndarray, centers: np.ndarray, nonnegative: bool):
    """The class stream, then each class's offsets from its center (class 0
    folded when the residuals are all >= 0)."""
    cls = _nearest_center(values, centers)
    parts = [_fold_nonnegative(cls)]
    for j, c in enumerate(np.r_[0, centers].tolist()):
        offsets = values[cls == j] - c
        parts.append(_fold_nonnegative(offsets) if j == 0 and nonnegative else offsets)
    return parts


def _centered_cost(values: np.ndarray, centers: np.ndarray, nonnegative: bool) -> float:
    return sum(_fast_cost(part) for part in _centered_parts(values, centers, nonnegative))


def _write_centered(writer: StreamWriter, values: np.ndarray, centers: np.ndarray,
                    nonnegative: bool) -> None:
    for part in _centered_parts(values, centers, nonnegative):
        _write_fast(writer, part)


def _read_centered(reader: StreamReader, count: int, centers: np.ndarray,
                   nonnegative: bool) -> np.ndarray:
    cls = zigzag(_read_fast(reader, count)).astype(np.int64)
    if cls.size and int(cls.max()) > centers.size:
        raise WireFormatError(f"radar_ac center class {int(cls.max())} beyond the "
                              f"{centers.size} centers")
    out = np.empty(count, np.int64)
    for j, c in enumerate(np.r_[0, centers].tolist()):
        where = np.flatnonzero(cls == j)
        offsets = _read_fast(reader, where.size)
        if j == 0 and nonnegative:
            offsets = zigzag(offsets).astype(np.int64)
        out[where] = offsets + c
    return out


def _words_to_section(words: bytes) -> bytes:
    """Format 3 stores the range coder's little-endian 32-bit words most
    significant byte first, so that its final bytes are the least significant."""
    return np.frombuffer(words, "<u4").astype(">u4").tobytes()


def _section_to_words(body: bytes) -> bytes:
    """Inverse of ``_words_to_section`` for a body whose last bytes may have
    been dropped: zeros stand in for them."""
    padded = body + bytes(-len(body) % 4)
    return np.frombuffer(padded, ">u4").astype("<u4").tobytes()


def _fold_nonnegative(values: np.ndarray) -> np.ndarray:
    """Non-negative residuals to the signed values whose zigzag they are, so the
    coder's sign bit is not spent on them (``zigzag`` undoes it)."""
    return np.where(values % 2 == 0, values // 2, -(values + 1) // 2)


def _first_groups(key: _Field) -> list[np.ndarray]:
    """Indices of the detections whose key value came before, then of those
    whose key is new (the first of each track: no history to predict from)."""
    new = _previous_same_key(key.base) < 0
    return [np.flatnonzero(~new), np.flatnonzero(new)]


def _ints_first(type_strings: list[str]) -> list[int]:
    """Integer-typed fields, then the others, each in layout order."""
    is_int = ["f" not in t for t in type_strings]
    return ([i for i, v in enumerate(is_int) if v] + [i for i, v in enumerate(is_int) if not v])


def _gcd(ints: np.ndarray) -> int:
    return max(int(np.gcd.reduce(ints)) if ints.size and ints.any() else 1, 1)


def section_sizes(container: Container) -> dict[str, int]:
    """Bytes of a radar_ac payload's own header, range-coded words and verbatim
    section, for the benchmark's breakdown (the header is parsed, not guessed)."""
    verbatim = len(container.sections[1]) if len(container.sections) > 1 else 0
    if "field_plan" in container.metadata:
        return {"header": 0, "coded": len(container.sections[0]), "verbatim": verbatim}
    end = _read_header(container).end
    return {"header": end, "coded": len(container.sections[0]) - end, "verbatim": verbatim}


def _decode_json_plan(c: Container) -> PointCloudFrame:
    """Format 1: the field plan as JSON in the container metadata."""
    if len(c.sections) != 2:
        raise WireFormatError(f"radar_ac payload needs 2 sections, has {len(c.sections)}")
    records, height, width = empty_cloud_from_meta(c.metadata, c.modality)
    n = records.size
    raw_len = meta_get(c.metadata, "raw_bytes")
    raw = b""
    if raw_len:
        raw = zstd_decompress_exact(c.sections[1], raw_len, "raw section")
    pos = 0
    reader = StreamReader(c.sections[0])
    decoded: dict[str, np.ndarray] = {}
    for plan in meta_get(c.metadata, "field_plan", list):
        if not (isinstance(plan, list) and len(plan) == 6 and plan[0] in records.dtype.names):
            raise WireFormatError(f"bad field plan {plan!r}")
        name, kind, step, g, period, ref = plan
        dt = records.dtype[name]
        if kind == "raw":
            count = n * max(1, int(np.prod(dt.shape)))
            base_dt = dt.base if dt.shape else dt
            size = base_dt.itemsize * count
            if pos + size > len(raw):
                raise WireFormatError("raw section ends early")
            records[name] = byte_unshuffle(raw[pos:pos + size], base_dt, count).reshape(
                (n,) + dt.shape)
            pos += size
            continue
        if kind not in ("quant", "int") or not isinstance(period, int) or period < 0:
            raise WireFormatError(f"bad field plan {plan!r}")
        res = read_adaptive(reader, n)
        if ref:
            if ref not in decoded:
                raise WireFormatError(f"field {name!r} refers to uncoded field {ref!r}")
            base = res + decoded[ref]
        else:
            base = undo_period_residual(res, period)
        decoded[name] = base
        ints = base * int(g)
        records[name] = (ints * float(step)).astype(dt) if kind == "quant" else ints.astype(dt)
    return PointCloudFrame(records, c.modality, height, width, c.stamp_ns, c.frame_id)
