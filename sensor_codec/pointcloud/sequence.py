"""Sequence mode: bounded-error geometry for clouds without usable beams.

Used when the range-image path of ``predict`` cannot find the sensor's
beams (View-of-Delft's column-ordered, tilted HDL-64 cloud; unstructured
clouds). Every point is quantised on its own Cartesian grid,
``G = round(p / q)`` with ``q = grid_step(E)`` (so the decoded ``G q`` is
within E of the point), and predicted from an earlier point of the cloud in
its original order: ``G[i] - G[i - lag[i]]`` with ``1 <= lag[i] <= MAX_LAG``
chosen by the encoder. A spinning lidar repeats its firing pattern, so the
best reference is usually the same laser one firing back, and the lag stays
the same for long stretches: the lag stream costs about a bit a point and
the residuals are small.

Streams (each coded online, from a flat prior plus the running counts of
the symbols already coded, or with frame histograms in the side information,
whichever is cheaper; both sides know the contexts before decoding a stream):

* ``lag code``: the change of the lag from the previous point's;
* ``x`` residual, context: did the lag change;
* ``y`` residual, context: bit length of |x residual| and lag change;
* ``z`` residual, context: bit length of |x| + |y| residual and lag change.

Decoding is vectorised: the residuals are summed along each point's chain
of references by pointer jumping (log2 of the chain length rounds).

Spherical layer (``encode_spherical``): the same reference-lag coding applied
to the range-image integers (elevation, azimuth, range) of ``predict``,
followed by the point's Cartesian corrections as one joint symbol. One
firing later the same laser has the same elevation, the azimuth moved by
the firing step and the range barely changed, so these residuals are
smaller than Cartesian ones (about 20 % fewer bits on View-of-Delft). The
azimuth step is chosen per frame so that it divides the firing step.
"""

from __future__ import annotations

import numpy as np

from ..errors import WireFormatError
from . import predict
from .entropy import (
    ALPHABET,
    SideReader,
    SideWriter,
    StreamReader,
    StreamWriter,
    estimate_bits,
    quantise_histograms,
    read_int_sequence,
    to_symbols,
    write_int_sequence,
)

MAX_LAG = 64
# Keep the previous point's lag unless another reference saves more than
# this many grid steps (L1): a kept lag costs a fraction of a bit.
LAG_KEEP_SLACK = 4
CTX_BITS = 5


def choose_lags(G: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """Reference lag per point (0 for the first point: predicted from 0):
    the earlier point within ``max_lag`` nearest in L1 grid steps, or the
    previous point's choice when that is nearly as near."""
    m = G.shape[0]
    lags = np.zeros(m, np.int64)
    if m < 2:
        return lags
    # The search runs on 16-bit copies clipped to +-2**13 steps (half the
    # memory traffic): each |difference| <= 2**14 and their sum <= 49152 fit
    # uint16. Clipping only blurs the choice among far-apart candidates; the
    # residuals are computed from the exact integers.
    axes = [np.clip(G[:, k], -2 ** 13, 2 ** 13).astype(np.int16) for k in range(3)]
    best = np.full(m, np.iinfo(np.uint16).max, np.uint16)
    best_lag = np.ones(m, np.int64)
    c = np.empty(m, np.uint16)
    t = np.empty(m, np.int16)
    better = np.empty(m, bool)
    last = min(max_lag, m - 1)
    for lag in range(1, last + 1):
        k = m - lag
        ck = c[:k]
        tk = t[:k]
        np.subtract(axes[0][lag:], axes[0][:-lag], out=tk)
        np.abs(tk, out=ck, casting="unsafe")
        for axis in axes[1:]:
            np.subtract(axis[lag:], axis[:-lag], out=tk)
            np.abs(tk, out=tk)
            ck += tk.view(np.uint16)
        np.less(ck, best[lag:], out=better[:k])
        np.copyto(best_lag[lag:], lag, where=better[:k])
        np.minimum(best[lag:], ck, out=best[lag:])
        if lag % LAG_CHECK_EVERY == 0 and lag < last:
            # a point with an exact copy in reach (distance 0) keeps it: when
            # few points are left, search for those alone
            open_points = np.flatnonzero(best != 0)
            if (open_points.size * LAG_SPARSE_SHARE < m
                    and open_points.size * (last - lag) <= LAG_SPARSE_CELLS):
                _search_lags_of(axes, best, best_lag, open_points, lag + 1, last)
                break
    return _settle_lags(axes, best, best_lag)


# ``choose_lags``: every LAG_CHECK_EVERY lags, the remaining lags are searched
# at once for the points still without an exact copy, when they are fewer
# than 1 in LAG_SPARSE_SHARE and the (lags x points) table has at most
# LAG_SPARSE_CELLS cells (nuScenes' near points: 281 of 4576 after two lags).
LAG_CHECK_EVERY = 2
LAG_SPARSE_SHARE = 4
LAG_SPARSE_CELLS = 1 << 18


def _search_lags_of(axes: list, best: np.ndarray, best_lag: np.ndarray, points: np.ndarray,
                    first_lag: int, last_lag: int) -> None:
    """``choose_lags``' search over lags first_lag..last_lag for ``points``
    only, all lags at once, updating ``best`` and ``best_lag`` in place with
    what the lag-by-lag search gives: the smallest lag of the least
    distance, where that beats the distance found so far."""
    lags = np.arange(first_lag, last_lag + 1)
    ref = points[None, :] - lags[:, None]
    valid = ref >= 0
    ref = np.maximum(ref, 0)
    cost = np.zeros(ref.shape, np.int32)
    for a in axes:
        wide = a.astype(np.int32)
        cost += np.abs(wide[points][None, :] - wide[ref])
    cost[~valid] = np.iinfo(np.int32).max
    pick = np.argmin(cost, axis=0)  # the first (smallest) lag on ties
    least = cost[pick, np.arange(points.size)]
    better = least < best[points]
    best_lag[points[better]] = lags[pick[better]]
    best[points[better]] = least[better]


def _settle_lags(axes: list, best: np.ndarray, best_lag: np.ndarray) -> np.ndarray:
    """``choose_lags``' final step: keep the previous point's lag where it is
    nearly as near as the best one (``axes``: the clipped int16 columns)."""
    m = best.size
    axes = [a.astype(np.int32) for a in axes]
    i = np.arange(m)
    prev = np.r_[1, best_lag[:-1]]
    prev_valid = prev <= i
    ref = np.where(prev_valid, i - prev, 0)
    keep_cost = (np.abs(axes[0] - axes[0][ref]) + np.abs(axes[1] - axes[1][ref])
                 + np.abs(axes[2] - axes[2][ref]))
    keep = prev_valid & (keep_cost <= best.astype(np.int64) + LAG_KEEP_SLACK)
    lags = np.where(keep, prev, best_lag)
    lags[0] = 0
    return lags


def choose_lags_batch(Gs: list, max_lag: int = MAX_LAG) -> list:
    """``choose_lags`` of each of several equally long sequences, searched
    together: on a few thousand points the per-lag overhead dominates, and
    one pass over the lags serves them all (same lags as one at a time)."""
    m = Gs[0].shape[0] if Gs else 0
    if len(Gs) < 2 or m < 2 or any(G.shape[0] != m for G in Gs):
        return [choose_lags(G, max_lag) for G in Gs]
    b = len(Gs)
    axes = [np.stack([np.clip(G[:, k], -2 ** 13, 2 ** 13).astype(np.int16) for G in Gs])
            for k in range(3)]
    best = np.full((b, m), np.iinfo(np.uint16).max, np.uint16)
    best_lag = np.ones((b, m), np.int64)
    c = np.empty((b, m), np.uint16)
    t = np.empty((b, m), np.int16)
    better = np.empty((b, m), bool)
    for lag in range(1, min(max_lag, m - 1) + 1):
        k = m - lag
        ck = c[:, :k]
        tk = t[:, :k]
        np.subtract(axes[0][:, lag:], axes[0][:, :-lag], out=tk)
        np.abs(tk, out=ck, casting="unsafe")
        for axis in axes[1:]:
            np.subtract(axis[:, lag:], axis[:, :-lag], out=tk)
            np.abs(tk, out=tk)
            np.add(ck, tk, out=ck, casting="unsafe")
        np.less(ck, best[:, lag:], out=better[:, :k])
        np.copyto(best_lag[:, lag:], lag, where=better[:, :k])
        np.minimum(best[:, lag:], ck, out=best[:, lag:])
    return [_settle_lags([a[r] for a in axes], best[r], best_lag[r]) for r in range(b)]


def lag_codes(lags: np.ndarray) -> np.ndarray:
    """Change of the lag from the previous point (0: same reference pattern;
    a firing that lost a return shifts the lag by a little)."""
    return np.diff(lags, prepend=0)


def lags_from_codes(codes: np.ndarray, max_lag: int) -> np.ndarray:
    m = codes.size
    if m == 0:
        return codes
    if np.abs(codes).max() > max_lag:
        raise WireFormatError(f"sequence-mode lag change outside -{max_lag}..{max_lag}")
    lags = np.cumsum(codes)
    if lags[0] != 0 or (lags[1:] < 1).any() or (lags > max_lag).any():
        raise WireFormatError(f"sequence-mode lags outside 1..{max_lag}")
    if (lags > np.arange(m)).any():
        raise WireFormatError("sequence-mode lag refers before the first point")
    return lags


def residual_streams(G: np.ndarray, lags: np.ndarray):
    """Residuals (m x 3) and the three context arrays, encoder side."""
    m = G.shape[0]
    ref = np.arange(m) - lags
    res = G - np.where(lags[:, None] > 0, G.take(np.maximum(ref, 0), axis=0), 0)
    return res, contexts(res, lags)


def _bits(v: np.ndarray) -> np.ndarray:
    return np.minimum(np.frexp(v.astype(np.float64))[1], CTX_BITS)


def contexts(res: np.ndarray | None, lags: np.ndarray, axis: int | None = None):
    """Context of each residual stream; with ``axis`` only that one (the
    decoder has the earlier axes' residuals by then)."""
    changed = np.r_[1, (lags[1:] != lags[:-1]).astype(np.int64)]
    out = [changed]
    if axis is None or axis >= 1:
        out.append(2 * _bits(np.abs(res[:, 0])) + changed)
    if axis is None or axis >= 2:
        out.append(2 * _bits(np.abs(res[:, 0]) + np.abs(res[:, 1])) + changed)
    return out if axis is None else out[axis]


def _write_tables(side: SideWriter, counts: np.ndarray) -> np.ndarray:
    """One histogram per context present (``counts``: contexts x symbols),
    in context order; returns the table."""
    used = np.flatnonzero(counts.sum(axis=1))
    table = np.zeros(counts.shape)
    table[used] = quantise_histograms(counts[used])
    side.histograms(table[used])
    return table


def _read_tables(side: SideReader, ctx: np.ndarray) -> np.ndarray:
    present = np.bincount(ctx)  # contexts are small non-negative ints
    table = np.zeros((present.size, ALPHABET))
    for c in np.flatnonzero(present != 0).tolist():
        table[c] = side.histogram()[0]
    return table


# Streams are coded with frame histograms (side information) or, when that
# is estimated cheaper, online: counts of the symbols coded so far over a
# flat prior worth FLAT_PRIOR_WEIGHT symbols per context, no side information.
TABLES, ONLINE = 0, 1
FLAT_PRIOR_WEIGHT = 2.0


def _context_counts(sym: np.ndarray, ctx: np.ndarray,
                    plan: predict.OnlinePlan | None = None) -> np.ndarray:
    """Symbol counts per context, contexts x symbols (``plan``: the stream's
    online plan, whose counts per chunk add up to them)."""
    if plan is not None:
        return plan.hist.sum(axis=0)
    rows = int(ctx.max()) + 1
    return np.bincount(ctx * ALPHABET + sym, minlength=rows * ALPHABET).reshape(rows, ALPHABET)


def _histogram_cost_bits(counts: np.ndarray) -> float:
    """Cost with one histogram per context (``counts``: ``_context_counts``):
    the symbols' ideal cost plus the side information's bytes."""
    used = counts[counts.sum(axis=1) > 0].astype(np.float64)
    nz = used > 0
    share = np.where(nz, used, 1.0) / used.sum(axis=1, keepdims=True)
    np.log2(share, out=share)
    share *= used
    return float(-share.sum()) + 8.0 * (used.shape[0] + 3 * int(nz.sum()))


def _online_plan(sym: np.ndarray, ctx: np.ndarray) -> predict.OnlinePlan:
    prior = np.ones((int(ctx.max()) + 1, ALPHABET))
    chunks = predict.stream_chunks("", sym.size, None, None)
    return predict.OnlinePlan(sym, ctx, prior, chunks, FLAT_PRIOR_WEIGHT)


def _stream_costs(sym: np.ndarray, ctx: np.ndarray) -> tuple[float, float]:
    """(online, histogram) cost in bits of the symbols (extra bits not included)."""
    plan = _online_plan(sym, ctx)
    return plan.cost_bits(), _histogram_cost_bits(_context_counts(sym, ctx, plan))


def stream_cost_bits(values: np.ndarray, ctx: np.ndarray) -> float:
    """What ``write_stream`` would spend, ideally (for choosing modes)."""
    if values.size == 0:
        return 0.0
    sym, nextra, _ = to_symbols(values)
    return min(_stream_costs(sym, ctx)) + float(nextra.sum())


def write_stream(writer: StreamWriter, side: SideWriter, values: np.ndarray,
                 ctx: np.ndarray) -> None:
    """Code ``values`` under contexts ``ctx`` the cheaper of the two ways."""
    symbols = to_symbols(values)
    sym = symbols[0]
    plan = _online_plan(sym, ctx)
    counts = _context_counts(sym, ctx, plan)
    if plan.cost_bits() >= _histogram_cost_bits(counts):
        side.u16(TABLES)
        writer.write(values, ctx, _write_tables(side, counts), symbols)
        return
    side.u16(ONLINE)
    plan.write(writer, symbols)


def read_stream(reader: StreamReader, side: SideReader, ctx: np.ndarray) -> np.ndarray:
    m = ctx.size
    how = side.u16()
    if how == TABLES:
        return reader.read(m, ctx, _read_tables(side, ctx))
    if how != ONLINE:
        raise WireFormatError(f"unknown sequence stream coding {how}")
    rows = int(ctx.max()) + 1
    table = predict.OnlineTable(np.ones((rows, ALPHABET)), FLAT_PRIOR_WEIGHT)
    out = np.empty(m, np.int64)
    for a, b in predict.stream_chunks("", m, None, None):
        out[a:b], sym = reader.read(b - a, ctx[a:b], None, table.rows_for, True)
        table.update(ctx[a:b], sym)
    return out


def encode_sequence(writer: StreamWriter, side: SideWriter, G: np.ndarray, lags: np.ndarray):
    m = G.shape[0]
    if m == 0:
        return
    write_stream(writer, side, lag_codes(lags), np.zeros(m, np.int64))
    res, ctxs = residual_streams(G, lags)
    for axis in range(3):
        write_stream(writer, side, res[:, axis], ctxs[axis])


def decode_sequence(reader: StreamReader, side: SideReader, m: int, max_lag: int) -> np.ndarray:
    if m == 0:
        return np.zeros((0, 3), np.int64)
    lags = lags_from_codes(read_stream(reader, side, np.zeros(m, np.int64)), max_lag)
    res = np.empty((m, 3), np.int64)
    for axis in range(3):
        res[:, axis] = read_stream(reader, side, contexts(res, lags, axis))
    return sum_along_references(res, np.arange(m) - lags, lags > 0)


def sum_along_references(res: np.ndarray, ref: np.ndarray, has_ref: np.ndarray) -> np.ndarray:
    """G[i] = res[i] + G[ref[i]] (where has_ref), by pointer jumping."""
    # one contiguous column per axis: gathers of 1-D arrays are several
    # times faster than of the rows of an m x 3 array
    cols = [res[:, k].copy() for k in range(res.shape[1])]
    ptr = np.where(has_ref, ref, -1)
    live = np.flatnonzero(ptr >= 0)
    while live.size:
        p = ptr[live]
        for col in cols:
            col[live] += col[p]
        nxt = ptr[p]
        ptr[live] = nxt
        live = live[nxt >= 0]
    return np.stack(cols, axis=1) if cols else res.copy()


SAMPLE_WINDOW = 8192
SAMPLE_PARTS = 4


def sample_windows(m: int) -> list[slice]:
    """SAMPLE_PARTS contiguous windows, SAMPLE_WINDOW points in all, spread
    evenly over a scan of m points (for estimating a mode's cost)."""
    size = SAMPLE_WINDOW // SAMPLE_PARTS
    return [slice(start, start + size)
            for start in ((2 * k + 1) * m // (2 * SAMPLE_PARTS) - size // 2
                          for k in range(SAMPLE_PARTS))]


def estimate_sequence_bits(G: np.ndarray, lags: np.ndarray | None = None) -> float:
    """Approximate coded size (no contexts) for choosing the geometry mode."""
    m = G.shape[0]
    if m == 0:
        return 0.0
    if lags is None:  # a quick estimate from one window in the middle of the scan
        if m > 2 * SAMPLE_WINDOW:
            start = (m - SAMPLE_WINDOW) // 2
            return estimate_sequence_bits(G[start:start + SAMPLE_WINDOW]) * m / SAMPLE_WINDOW
        lags = choose_lags(G)
    ref = np.arange(m) - lags
    res = G - np.where(lags[:, None] > 0, G.take(np.maximum(ref, 0), axis=0), 0)
    return estimate_bits(lag_codes(lags)) + sum(estimate_bits(res[:, k]) for k in range(3))


def quick_sequence_bits(xyz: np.ndarray, q: np.ndarray) -> float:
    """``estimate_sequence_bits`` of the whole cloud on the grid of the
    finest step, without lags (one window), gridding only that window."""
    m = xyz.shape[0]
    step = float(q.min()) if q.size else 1.0
    if m > 2 * SAMPLE_WINDOW:
        start = (m - SAMPLE_WINDOW) // 2
        G = np.round(xyz[start:start + SAMPLE_WINDOW] / step).astype(np.int64)
        return estimate_sequence_bits(G) * m / SAMPLE_WINDOW
    return estimate_sequence_bits(np.round(xyz / step).astype(np.int64))


# --- spherical layer -------------------------------------------------------------

# Lag search key: elevation weighted up, since it tells the lasers apart.
ELEVATION_KEY_WEIGHT = 4


def spherical_integers(xyz: np.ndarray, q: np.ndarray, q0: float,
                       az_ref: float = predict.REF_RANGE):
    """(V = [El, A, R] m x 3, C, reconstruction) of the spherical layer."""
    R, A, El, C, p1 = predict.quantise(xyz, q, q0, az_ref=az_ref)
    V = np.stack([El, A, R], axis=1)
    return V, C, predict.reconstruct(R, A, El, C, q, q0, p1)


def choose_spherical_azimuth_ref(xyz: np.ndarray, q: np.ndarray, q0: float) -> float:
    """The azimuth step (``predict.AZIMUTH_REFS``) whose residuals to the
    reference points cost least, on a stretch of the scan: one that divides
    the firing step makes them near-constant (View-of-Delft at 1 cm: 5.31 ->
    5.17 bits a point)."""
    m = xyz.shape[0]
    if m < 2:
        return predict.REF_RANGE
    start = max(0, (m - predict.AZIMUTH_SAMPLE) // 2)
    window = slice(start, start + predict.AZIMUTH_SAMPLE)
    x = xyz[window]
    V, _, _ = spherical_integers(x, q[window], q0)
    ref = np.arange(x.shape[0]) - spherical_lags(V)
    az = predict.spherical(x)[1]
    costs = []
    for candidate in predict.AZIMUTH_REFS:
        A = np.round(az / (q0 / candidate)).astype(np.int64)
        costs.append(estimate_bits(A - A[ref]))
    return predict.AZIMUTH_REFS[int(np.argmin(costs))]


def spherical_lags(V: np.ndarray) -> np.ndarray:
    key = V.copy()
    key[:, 0] *= ELEVATION_KEY_WEIGHT
    return choose_lags(key)


def encode_spherical(writer: StreamWriter, side: SideWriter, V, C, lags, q, q0) -> None:
    m = V.shape[0]
    if m == 0:
        return
    encode_sequence(writer, side, V, lags)
    joint, escape = predict.joint_corrections(C)
    ctx = predict.correction_contexts(V[:, 2], q, q0)
    write_stream(writer, side, joint, ctx)
    for axis in range(3):
        write_int_sequence(writer, side, C[escape, axis], ())


def decode_spherical(reader: StreamReader, side: SideReader, q, q0,
                     az_ref: float = predict.REF_RANGE) -> np.ndarray:
    m = q.size
    if m == 0:
        return np.zeros((0, 3))
    V = decode_sequence(reader, side, m, MAX_LAG)
    ctx = predict.correction_contexts(V[:, 2], q, q0)
    C, escape = predict.corrections_from_joint(read_stream(reader, side, ctx))
    count = int(escape.sum())
    for axis in range(3):
        C[escape, axis] = read_int_sequence(reader, side, count)
    return predict.reconstruct(V[:, 2], V[:, 1], V[:, 0], C, q, q0, None, az_ref)


def sequence_cost_bits(G: np.ndarray, lags: np.ndarray) -> float:
    """What ``encode_sequence`` would spend, ideally."""
    m = G.shape[0]
    if m == 0:
        return 0.0
    res, ctxs = residual_streams(G, lags)
    return stream_cost_bits(lag_codes(lags), np.zeros(m, np.int64)) + sum(
        stream_cost_bits(res[:, axis], ctxs[axis]) for axis in range(3))


def spherical_cost_bits(V: np.ndarray, C: np.ndarray, lags: np.ndarray, q, q0) -> float:
    """What ``encode_spherical`` would spend, ideally."""
    if V.shape[0] == 0:
        return 0.0
    joint, escape = predict.joint_corrections(C)
    return (sequence_cost_bits(V, lags)
            + stream_cost_bits(joint, predict.correction_contexts(V[:, 2], q, q0))
            + sum(estimate_bits(C[escape, axis]) for axis in range(3)))


def sampled_cost_bits(xyz: np.ndarray, q: np.ndarray, q0: float) -> dict[str, float]:
    """Cost of the two sequence layers on windows of the scan, scaled to the
    whole scan: what ``auto`` compares (estimates without contexts misjudge
    the two layers against each other by several per cent)."""
    m = xyz.shape[0]
    windows = sample_windows(m) if m > 2 * SAMPLE_WINDOW else [slice(0, m)]
    scale = m / sum(len(range(*w.indices(m))) for w in windows) if m else 0.0
    cost = {"sequence": 0.0, "spherical": 0.0}
    parts = []
    for w in windows:
        x, qw = xyz[w], q[w]
        if x.shape[0] == 0:
            continue
        G = np.round(x / float(qw.min())).astype(np.int64)
        V, C, _ = spherical_integers(x, qw, q0)
        key = V.copy()
        key[:, 0] *= ELEVATION_KEY_WEIGHT  # as spherical_lags
        parts.append((G, V, C, qw, key))
    # the windows' lag searches together (equal windows: one pass for all)
    lags = choose_lags_batch([p[0] for p in parts] + [p[4] for p in parts])
    for (G, V, C, qw, _), g_lags, v_lags in zip(parts, lags, lags[len(parts):]):
        cost["sequence"] += sequence_cost_bits(G, g_lags)
        cost["spherical"] += spherical_cost_bits(V, C, v_lags, qw, q0)
    return {k: v * scale for k, v in cost.items()}
