"""Bounded-error geometry: quantisation grids, predictive residuals, contexts.

Every point is coded as integers in two layers:

1. *spherical layer*: range ``R = round(r / (RANGE_STEP q0))``, azimuth ``A`` and
   elevation ``El`` on an angular grid of step ``q0 / REF_RANGE`` (fine
   enough that most corrections below are zero at typical ranges);
2. *Cartesian correction* ``C = round((p - p1) / q)`` on the point's own
   grid, where ``p1`` is the spherical layer's reconstruction and
   ``q = 2 E / sqrt(3)``.

The decoded point ``p1 + q C`` is within ``q/2`` of the original on each
axis, so within ``E`` in Euclidean distance, whatever the spherical layer
did (``C`` is 0 whenever ``p1`` itself lies within ``E``); a safety margin
covers float rounding (see ``grid_step``). Because a point's reconstruction depends only on its own integers, prediction is
lossless integer arithmetic (open loop) and vectorises: residuals along a
beam are undone with a cumulative sum.

Residual streams (coded order = by beam, original order within a beam):
``azimuth`` dA along the beam; ``range`` dR along the beam, whose context
comes from the point at the nearest azimuth on the previous beam (so the
decoder goes beam by beam); ``elevation`` dEl along the beam; ``corr``, the three corrections as one
symbol (see ``CORR_ESCAPE``), with a context from the expected size of the
spherical layer's error.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise

import numpy as np

from ..errors import WireFormatError
from .context_model import ContextModel
from .entropy import (
    ALPHABET,
    DIRECT,
    EXTRA_CHUNK,
    Categorical,
    SideReader,
    SideWriter,
    StreamReader,
    StreamWriter,
    Uniform,
    counts_bits,
    estimate_bits,
    quantise_histogram,
    read_int_sequence,
    symbols_only,
    to_symbols,
    write_int_sequence,
)
from .rangeimage import nearest_in_previous_beam, segment_starts, spherical

REF_RANGE = 16.0  # metres: the angular step is q0 / REF_RANGE
# Range step in units of q0. Coarser than the grid: the radial error (up to
# 0.8 q0) still leaves most spherical-layer points inside the bound's ball
# (q0 sqrt(3) / 2 = 0.87 q0) at short range, and every range costs 0.7 bit
# less; measured best of 1.0-1.9 on the sample frames (1.6: KITTI 7.97 ->
# 7.45 bits a point at 1 cm).
RANGE_STEP = 1.6
# Candidate azimuth steps, as q0 / ref, chosen per frame (``choose_azimuth_ref``)
# on AZIMUTH_SAMPLE points of the coded order. 8192 picks the same step as
# 16384 on all six sample rows (KITTI, nuScenes, View-of-Delft at 1 and 2 cm)
# in half the time; 4096 moves nuScenes at 2 cm (16 -> 15.5, +0.7 % bits).
AZIMUTH_REFS = tuple(14.0 + 0.5 * k for k in range(9))
AZIMUTH_SAMPLE = 8192
CTX_FIRST = 64
CTX_NO_UP = 65
STREAMS = {"azimuth": 2, "range": 66, "elevation": 65, "corr": 12}
# The three corrections of a point are one symbol when each is -1, 0 or 1
# (almost always: one symbol instead of three, and their joint statistics);
# CORR_ESCAPE marks the rest, whose corrections follow as plain integers.
CORR_ESCAPE = 27
CORR_ESCAPE_VALUE = -(CORR_ESCAPE + 1) // 2  # the value whose zigzag symbol is CORR_ESCAPE
MODE_LEARNED, MODE_ADAPTIVE, MODE_ONLINE = 0, 1, 2
# Online mode: the learned table, worth ONLINE_PRIOR_WEIGHT symbols per
# context, plus the counts of the frame's symbols coded so far, refreshed
# after chunks growing from ONLINE_FIRST_CHUNK to ONLINE_CHUNK symbols (every
# beam for the range stream: it is decoded beam by beam). It adapts the
# learned statistics to the sensor at hand without side information.
ONLINE_PRIOR_WEIGHT = 16.0
ONLINE_FIRST_CHUNK = 256
ONLINE_CHUNK = 16384


def grid_step(bound: np.ndarray | float, coord_limit: float, out_eps: float) -> np.ndarray:
    """Cartesian grid step for Euclidean bound ``bound``, leaving room for
    float64 arithmetic and for rounding the output to a float type whose
    relative precision is ``out_eps`` on coordinates below ``coord_limit``."""
    per_axis_rounding = coord_limit * out_eps / 2 + 1e-9
    return 2.0 * (np.asarray(bound, np.float64) / np.sqrt(3.0) - per_axis_rounding)


def bit_len(v: np.ndarray) -> np.ndarray:
    """Bit length of |v| for int arrays (|v| < 2**53)."""
    return np.frexp(np.abs(v).astype(np.float64))[1]


# bit length of 0..64, the last entry standing for every value >= 64
_BIT_LEN_7 = np.minimum(bit_len(np.arange(65)), 7).astype(np.int64)


def bit_len_7(v: np.ndarray) -> np.ndarray:
    """``min(bit_len(v), 7)`` through a table (int arrays, |v| < 2**63)."""
    a = np.abs(v)
    np.minimum(a, 64, out=a)
    return _BIT_LEN_7[a]


def range_azimuth(polar: tuple, q0: float, az_ref: float = REF_RANGE):
    """The integers (R, A) of ``quantise`` from ``spherical(xyz)``."""
    return _rounded(polar[0] / (RANGE_STEP * q0)), _rounded(polar[1] / (q0 / az_ref))


def quantise(xyz: np.ndarray, q: np.ndarray, q0: float, angles: list | None = None,
             az_ref: float = REF_RANGE, polar: tuple | None = None, RA: tuple | None = None):
    """Integers (R, A, El, C) for N x 3 float64 points and per-point steps q,
    and the spherical layer's points p1 (so the caller need not recompute
    them); ``angles``, when given, receives the exact azimuth and elevation;
    ``polar``: ``spherical(xyz)`` when the caller has it. The azimuth step is
    ``q0 / az_ref`` (see ``choose_azimuth_ref``); ``RA``: ``range_azimuth``'s
    result when the caller has it."""
    r, az, el = polar if polar is not None else spherical(xyz)
    if angles is not None:
        angles.extend((az, el))
    R, A = RA if RA is not None else range_azimuth((r, az), q0, az_ref)
    El = _rounded(el / (q0 / REF_RANGE))
    p1 = spherical_points(R, A, El, q0, az_ref)
    d = xyz - p1
    # The grid's cube guarantees the bound through its corners, at distance
    # q sqrt(3) / 2; any spherical-layer point within that distance needs no
    # correction at all (most points: corrections are the rarer symbol).
    inside = d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2 <= 0.75 * q * q
    C = np.zeros(d.shape, np.int64)
    out = np.flatnonzero(~inside)
    C[out] = _rounded(d[out] / q[out, None])
    return R, A, El, C, p1


def _rounded(x: np.ndarray) -> np.ndarray:
    """``np.round(x).astype(np.int64)`` rounding in place (x is a temporary)."""
    np.round(x, out=x)
    return x.astype(np.int64)


def choose_azimuth_ref(az: np.ndarray, order: np.ndarray, first: np.ndarray, q0: float) -> float:
    """The azimuth step (as ``q0 / ref``) among AZIMUTH_REFS whose along-beam
    azimuth steps cost least: a step that divides the sensor's firing step
    evenly turns the azimuth stream into near-constant symbols (KITTI at 1 cm:
    7.47 -> 7.07 bits a point in all)."""
    m = az.size
    if m == 0:
        return REF_RANGE
    # a contiguous stretch of the coded order (a few whole beams) is enough
    start = max(0, (m - AZIMUTH_SAMPLE) // 2)
    window = order[start:start + AZIMUTH_SAMPLE]
    az_sorted = az[window]
    starts = first[start:start + AZIMUTH_SAMPLE].copy()
    starts[0] = True
    # every candidate step at once, a row each (the same values and costs
    # as one at a time, in a fraction of the calls)
    steps = np.array([q0 / ref for ref in AZIMUTH_REFS])
    A = np.round(az_sorted[None, :] / steps[:, None]).astype(np.int64)
    d = np.empty_like(A)
    d[:, 0] = A[:, 0]
    np.subtract(A[:, 1:], A[:, :-1], out=d[:, 1:])
    d[:, starts] = A[:, starts]
    sym = symbols_only(d.reshape(-1)).reshape(d.shape)
    sym += (np.arange(len(AZIMUTH_REFS)) * ALPHABET)[:, None]
    # counted column-wise: neighbouring counts then go to different
    # candidates' histograms, which bincount adds up twice as fast
    counts = np.bincount(sym.T.reshape(-1), minlength=len(AZIMUTH_REFS) * ALPHABET)
    costs = [counts_bits(row, A.shape[1]) for row in counts.reshape(len(AZIMUTH_REFS), ALPHABET)]
    return AZIMUTH_REFS[int(np.argmin(costs))]


def _cos_sin(index: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of ``index * step``; through a table of the values' span
    when that is shorter than the array (angles repeat along a scan)."""
    if index.size == 0:
        return np.zeros(0), np.zeros(0)
    lo, hi = int(index.min()), int(index.max())
    if hi - lo + 1 <= index.size // 2:
        table = _TRIG_TABLES.get(step)
        if table is None or lo < table[0] or hi >= table[0] + table[1].size:
            if table is not None and (max(hi, table[0] + table[1].size - 1) - min(lo, table[0])
                                      < 4 * (hi - lo + 1)):
                lo, hi = min(lo, table[0]), max(hi, table[0] + table[1].size - 1)
            if len(_TRIG_TABLES) >= _TRIG_TABLES_MAX:
                _TRIG_TABLES.clear()
            angles = np.arange(lo, hi + 1) * step  # each value as index * step would give
            table = (lo, np.cos(angles), np.sin(angles))
            _TRIG_TABLES[step] = table
        k = index - table[0]
        return table[1][k], table[2][k]
    angles = index * step
    return np.cos(angles), np.sin(angles)


# _cos_sin's tables, kept between calls: the frames of a stream share the
# steps (q0 / az_ref, q0 / REF_RANGE) and nearly the whole span, and cos and
# sin of the same index * step are the same values whichever table holds them.
# step -> (first index, cos, sin).
_TRIG_TABLES: dict[float, tuple[int, np.ndarray, np.ndarray]] = {}
_TRIG_TABLES_MAX = 32


def spherical_points(R: np.ndarray, A: np.ndarray, El: np.ndarray, q0: float,
                     az_ref: float = REF_RANGE) -> np.ndarray:
    r = R * (RANGE_STEP * q0)
    cos_a, sin_a = _cos_sin(A, q0 / az_ref)
    cos_e, sin_e = _cos_sin(El, q0 / REF_RANGE)
    out = np.empty((R.size, 3))
    horiz = r * cos_e
    np.multiply(horiz, cos_a, out=out[:, 0])
    np.multiply(horiz, sin_a, out=out[:, 1])
    np.multiply(r, sin_e, out=out[:, 2])
    return out


def reconstruct(R, A, El, C, q: np.ndarray, q0: float, p1: np.ndarray | None = None,
                az_ref: float = REF_RANGE) -> np.ndarray:
    if p1 is None:
        p1 = spherical_points(R, A, El, q0, az_ref)
    return p1 + C * q[:, None]


def along_beam_residual(v: np.ndarray, first: np.ndarray) -> np.ndarray:
    d = np.empty_like(v)
    d[0:1] = v[0:1]
    d[1:] = v[1:] - v[:-1]
    d[first] = v[first]
    return d


def undo_along_beam(d: np.ndarray, first: np.ndarray) -> np.ndarray:
    if d.size == 0:
        return d
    cs = np.cumsum(d)
    seg = np.cumsum(first) - 1
    base = (cs - d)[first]
    return cs - base[seg]


class RangeContexts:
    """Context of dR from the previous beam (already decoded when a beam is
    decoded): the bit lengths of the up neighbour's dR and of the up beam's
    range step under this point. The index work is done once per frame;
    ``(a, b, R, dR)`` gives the contexts of points a..b-1."""

    def __init__(self, up: np.ndarray, first: np.ndarray) -> None:
        prev_up = np.where(first, -1, np.r_[-1, up[:-1]])  # up of the previous point
        self.up = np.maximum(up, 0)
        self.prev_up = np.maximum(prev_up, 0)
        self.has_up = up >= 0
        self.has_both = self.has_up & (prev_up >= 0)
        self.first = first

    def __call__(self, a: int, b: int, R: np.ndarray, dR: np.ndarray) -> np.ndarray:
        u = self.up[a:b]
        c1 = bit_len_7(dR[u])
        c2 = np.where(self.has_both[a:b], bit_len_7(R[u] - R[self.prev_up[a:b]]), 0)
        ctx = np.where(self.has_up[a:b], c1 * 8 + c2, CTX_NO_UP)
        ctx[self.first[a:b]] = CTX_FIRST
        return ctx


def elevation_contexts(R, dR, first) -> np.ndarray:
    ctx = bit_len_7(dR) * 8 + bit_len_7(R >> 6)
    ctx[first] = CTX_FIRST
    return ctx


def correction_contexts(R, q: np.ndarray, q0: float) -> np.ndarray:
    # Expected spherical-layer error in units of the point's grid step.
    s = R * (RANGE_STEP * q0 * q0 / REF_RANGE) / q
    ctx = np.zeros(R.size, np.int64)
    pos = s > 0
    ctx[pos] = np.clip(np.floor(np.log2(s[pos])).astype(np.int64) + 6, 0, 11)
    return ctx


# joint index j = 9 (Cx + 1) + 3 (Cy + 1) + (Cz + 1) <-> the value whose
# zigzag symbol is j (j = CORR_ESCAPE: escaped, its row of C left at zero)
_JOINT_VALUE = np.array([j // 2 if j % 2 == 0 else -(j + 1) // 2
                         for j in range(CORR_ESCAPE + 1)], np.int64)
_JOINT_C = np.array([[j // 9 - 1, (j // 3) % 3 - 1, j % 3 - 1] for j in range(CORR_ESCAPE)]
                    + [[0, 0, 0]], np.int64)
_C_OF_VALUE = np.zeros((CORR_ESCAPE + 1, 3), np.int64)  # indexed by value - CORR_ESCAPE_VALUE
_C_OF_VALUE[_JOINT_VALUE - CORR_ESCAPE_VALUE] = _JOINT_C


def joint_corrections(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values whose entropy-coder symbol is the joint index of (Cx, Cy, Cz)
    in {-1, 0, 1}^3, or CORR_ESCAPE; and the mask of escaped points."""
    shifted = C + 1  # each in 0..2 when small; as unsigned, negatives are huge
    wide = shifted.view(np.uint64)
    small = np.maximum(np.maximum(wide[:, 0], wide[:, 1]), wide[:, 2]) <= 2
    j = shifted[:, 0] * 9
    j += shifted[:, 1] * 3
    j += shifted[:, 2]
    j[~small] = CORR_ESCAPE
    return _JOINT_VALUE[j], ~small


def corrections_from_joint(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``joint_corrections``: (C with escaped rows zero, escape mask)."""
    if values.size and (values.min() < CORR_ESCAPE_VALUE or values.max() > -CORR_ESCAPE_VALUE - 1):
        raise WireFormatError("correction symbol outside the joint alphabet")
    return _C_OF_VALUE.take(values - CORR_ESCAPE_VALUE, axis=0), values == CORR_ESCAPE_VALUE


def geometry_streams(R, A, El, C, q, q0, sorted_beams):
    """Encoder side: every stream's residuals and contexts (coded order).
    Also what training counts."""
    first = segment_starts(sorted_beams)
    up = nearest_in_previous_beam(sorted_beams, A)
    dA = along_beam_residual(A, first)
    dR = along_beam_residual(R, first)
    dEl = along_beam_residual(El, first)
    cc = correction_contexts(R, q, q0)
    return {
        "azimuth": (dA, first.astype(np.int64)),
        "range": (dR, RangeContexts(up, first)(0, R.size, R, dR)),
        "elevation": (dEl, elevation_contexts(R, dR, first)),
        "corr": (joint_corrections(C)[0], cc),
    }, first


def stream_symbols(streams: dict) -> dict:
    """``to_symbols`` of every stream's values, computed once per frame."""
    return {name: to_symbols(values) for name, (values, _) in streams.items()}


def estimate_geometry_bits(streams: dict, symbols: dict) -> float:
    """Approximate coded size of the beam-mode streams (``geometry_streams``;
    frame histograms, no contexts), for choosing the geometry mode."""
    return sum(estimate_bits(values, symbols[name][0]) for name, (values, _) in streams.items())


def stream_chunks(name: str, m: int, starts: np.ndarray, ends: np.ndarray):
    """Where the online model is refreshed: every beam for ``range`` (which
    is decoded beam by beam), after chunks of doubling size otherwise."""
    if name == "range":
        return list(zip(starts.tolist(), ends.tolist()))
    cuts, size = [0], ONLINE_FIRST_CHUNK
    while cuts[-1] < m:
        cuts.append(min(m, cuts[-1] + size))
        size = min(2 * size, ONLINE_CHUNK)
    return list(pairwise(cuts))


class OnlineTable:
    """Learned prior plus running counts; ``rows()`` is the table for the
    next chunk (unnormalised: constriction normalises, identically on both
    sides, since the float64 sums are exact IEEE operations)."""

    def __init__(self, prior: np.ndarray, weight: float = ONLINE_PRIOR_WEIGHT) -> None:
        p = prior / prior.sum(axis=1, keepdims=True)
        self.base = weight * p
        self.counts = np.zeros(prior.shape)

    def rows(self) -> np.ndarray:
        return self.base + self.counts

    def rows_for(self, ids: np.ndarray) -> np.ndarray:
        """``rows()[ids]``, building only those rows."""
        return self.base[ids] + self.counts[ids]

    def update(self, ctx: np.ndarray, sym: np.ndarray) -> None:
        # integer counts in float64: every sum is exact, whatever the order
        np.add.at(self.counts.reshape(-1), ctx * self.counts.shape[1] + sym, 1.0)


class OnlinePlan:
    """Encoder side of the online mode, from one pass over a stream's symbols:
    the counts before every chunk (so the tables ``OnlineTable`` would give,
    value for value), the ideal cost, and the coding of every chunk."""

    def __init__(self, sym: np.ndarray, ctx: np.ndarray, prior: np.ndarray, chunks,
                 weight: float = ONLINE_PRIOR_WEIGHT) -> None:
        k, a = prior.shape
        self.base = OnlineTable(prior, weight).base
        self.chunks = chunks
        lengths = [b - a for a, b in chunks]
        n = len(chunks)
        # (chunk, context) of every symbol
        self.cell = np.repeat(np.arange(0, n * k, k, dtype=np.int64), lengths) + ctx
        self.hist = np.bincount(self.cell * a + sym, minlength=n * k * a).reshape(n, k, a)
        # integer counts before each chunk: exact, as the float sums of OnlineTable are
        # (a chunk at a time: several times faster than a cumsum along axis 0)
        self.before = np.empty(self.hist.shape, np.int64)
        self.before[0] = 0
        for j in range(1, n):
            np.add(self.before[j - 1], self.hist[j - 1], out=self.before[j])

    def cost_bits(self) -> float:
        """Ideal cost of the symbols (as ``online_cost_bits``, summed in another order)."""
        n, k, a = self.hist.shape
        flat = self.hist.reshape(-1)
        nz = np.flatnonzero(flat != 0)  # on a bool array: several times faster
        cell, s = np.divmod(nz, a)
        c = cell % k
        ctx_hist = np.bincount(self.cell, minlength=n * k).reshape(n, k)
        ctx_before = np.cumsum(ctx_hist, axis=0) - ctx_hist
        p = self.base[c, s] + self.before.reshape(-1)[nz]
        total = self.base.sum(axis=1)[c] + ctx_before.reshape(-1)[cell]
        return float(-(flat[nz] * (np.log2(p) - np.log2(total))).sum())

    def write(self, writer: StreamWriter, symbols: tuple) -> None:
        """What ``writer.write`` chunk by chunk with ``OnlineTable.rows()`` codes:
        per chunk the symbols grouped by context (stable), then the extra bits."""
        sym, nextra, extra = symbols
        n, k, _ = self.hist.shape
        cell = self.cell
        key = cell.astype(np.int16) if n * k < 2 ** 15 else cell
        order = np.argsort(key, kind="stable")
        sorted_cell = cell[order]
        cuts = np.flatnonzero(np.diff(sorted_cell) != 0) + 1
        run_start = np.concatenate(([0], cuts))
        run_cell = sorted_cell[run_start]
        run_chunk, run_ctx = np.divmod(run_cell, k)
        rows = self.base[run_ctx] + self.before[run_chunk, run_ctx]
        s_sorted = sym[order]
        chunk_runs = np.searchsorted(run_chunk, np.arange(n + 1)).tolist()
        # symbols with extra bits, split by chunk (few: large residuals)
        big = np.flatnonzero(sym >= DIRECT)  # the symbols with extra bits
        chunk_big = np.searchsorted(big, [a0 for a0, _ in self.chunks] + [sym.size]).tolist()
        bounds = run_start.tolist() + [sym.size]
        parts = [s_sorted[a0:b0] for a0, b0 in pairwise(bounds)]
        models = [Categorical(row, perfect=False) for row in rows]
        encode = writer.enc.encode
        if not big.size:  # no extra bits: one pass over every run
            deque(map(encode, parts, models), 0)
            return
        width = nextra[big]
        one_chunk = int(width.max()) <= EXTRA_CHUNK
        if one_chunk:  # what _write_extra_of codes, prepared once for every chunk
            bits = extra[big].astype(np.int32)
            sizes = (np.int64(1) << width).astype(np.int32)
            uniform = Uniform()
        for j in range(n):
            r0, r1 = chunk_runs[j], chunk_runs[j + 1]
            deque(map(encode, parts[r0:r1], models[r0:r1]), 0)
            b0, b1 = chunk_big[j], chunk_big[j + 1]
            if b0 < b1:
                if one_chunk:
                    encode(bits[b0:b1], uniform, sizes[b0:b1])
                else:
                    writer._write_extra_of(width[b0:b1], extra[big[b0:b1]])


def online_cost_bits(sym, ctx, prior: np.ndarray, chunks,
                     weight: float = ONLINE_PRIOR_WEIGHT) -> float:
    """Ideal cost of coding ``sym`` in online mode (for choosing the mode)."""
    return OnlinePlan(sym, ctx, prior, chunks, weight).cost_bits()


def _choose_mode(sym, ctx, model: ContextModel, name: str, scale: int, chunks):
    """Online-adapted learned table (with its ``OnlinePlan``), or this
    frame's own histogram if cheaper."""
    plan = OnlinePlan(sym, ctx, model.table(name, scale), chunks)
    online_bits = plan.cost_bits()
    counts = plan.hist.reshape(-1, ALPHABET).sum(axis=0)  # the plan has counted them
    nz = counts[counts > 0]
    adaptive_bits = float(-(nz * np.log2(nz / sym.size)).sum()) + 8 * (1 + 3 * nz.size)
    if online_bits <= adaptive_bits:
        return MODE_ONLINE, plan
    return MODE_ADAPTIVE, quantise_histogram(counts.astype(np.float64))[None, :]


def encode_geometry(writer: StreamWriter, side: SideWriter, R, A, El, C, q, q0,
                    sorted_beams, model: ContextModel, scale: int, trace: list | None = None,
                    streams: tuple | None = None, symbols: dict | None = None) -> None:
    """Write the geometry streams (``streams``, ``symbols``: ``geometry_streams``'
    and ``stream_symbols``' results when the caller has them); ``trace``
    (training) receives (scale, streams)."""
    m = R.size
    if m == 0:
        return
    streams, first = streams or geometry_streams(R, A, El, C, q, q0, sorted_beams)
    if symbols is None:
        symbols = stream_symbols(streams)
    if trace is not None:
        trace.append((scale, streams))
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], m]
    for name in STREAMS:
        values, ctx = streams[name]
        sym, nextra, extra = symbols[name]
        chunks = stream_chunks(name, m, starts, ends)
        mode, table = _choose_mode(sym, ctx, model, name, scale, chunks)
        side.u16(mode)
        if mode == MODE_ONLINE:
            table.write(writer, symbols[name])
            continue
        side.histogram(table[0])
        if name != "range":
            chunks = [(0, m)]
        for a, b in chunks:
            writer.write(values[a:b], None, table, (sym[a:b], nextra[a:b], extra[a:b]))
    escape = streams["corr"][0] == CORR_ESCAPE_VALUE
    for axis in range(3):
        write_int_sequence(writer, side, C[escape, axis], ())


class _StreamDecoder:
    """Decoder side of one stream's mode: reads chunk by chunk."""

    def __init__(self, reader: StreamReader, side: SideReader, model: ContextModel, name: str,
                 scale: int, m: int, starts, ends) -> None:
        self.reader = reader
        self.mode = side.u16()
        self.online = None
        if self.mode == MODE_LEARNED:
            self.table = model.table(name, scale)
        elif self.mode == MODE_ADAPTIVE:
            self.table = side.histogram()
        elif self.mode == MODE_ONLINE:
            self.online = OnlineTable(model.table(name, scale))
        else:
            raise WireFormatError(f"unknown table mode {self.mode} for stream {name!r}")
        self.uses_context = self.mode != MODE_ADAPTIVE
        whole = self.mode != MODE_ONLINE and name != "range"
        self.chunks = [(0, m)] if whole else stream_chunks(name, m, starts, ends)

    def read(self, a: int, b: int, ctx: np.ndarray | None) -> np.ndarray:
        if not self.uses_context:
            return self.reader.read(b - a, None, self.table)
        if self.online is None:
            return self.reader.read(b - a, ctx, self.table)
        values, sym = self.reader.read(b - a, ctx, None, self.online.rows_for, True)
        self.online.update(ctx, sym)
        return values

    def read_all(self, m: int, ctx: np.ndarray) -> np.ndarray:
        out = np.empty(m, np.int64)
        for a, b in self.chunks:
            out[a:b] = self.read(a, b, ctx[a:b])
        return out


def decode_geometry(reader: StreamReader, side: SideReader, q, q0, sorted_beams,
                    model: ContextModel, scale: int):
    m = sorted_beams.size
    if m == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros((0, 3), np.int64)
    first = segment_starts(sorted_beams)
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], m]

    def stream(name):
        return _StreamDecoder(reader, side, model, name, scale, m, starts, ends)

    dA = stream("azimuth").read_all(m, first.astype(np.int64))
    A = undo_along_beam(dA, first)
    up = nearest_in_previous_beam(sorted_beams, A)

    range_stream = stream("range")
    dR = np.zeros(m, np.int64)
    R = np.zeros(m, np.int64)
    range_contexts = RangeContexts(up, first)
    for a, b in zip(starts.tolist(), ends.tolist()):
        d = range_stream.read(a, b, range_contexts(a, b, R, dR))
        dR[a:b] = d
        np.cumsum(d, out=R[a:b])

    dEl = stream("elevation").read_all(m, elevation_contexts(R, dR, first))
    El = undo_along_beam(dEl, first)

    cc = correction_contexts(R, q, q0)
    C, escape = corrections_from_joint(stream("corr").read_all(m, cc))
    count = int(escape.sum())
    for axis in range(3):
        C[escape, axis] = read_int_sequence(reader, side, count)
    return R, A, El, C
