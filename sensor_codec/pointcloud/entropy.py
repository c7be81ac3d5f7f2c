"""Integer streams to bytes with ``constriction``'s range coder.

Every integer is mapped to a small-alphabet *symbol* plus raw *extra bits*,
so one categorical model per context can code values of any size:

* ``u = zigzag(v)``; ``u < DIRECT`` is its own symbol with no extra bits;
* a larger ``u`` with bit length ``nb`` becomes symbol ``DIRECT + nb - DIRECT_BITS - 1``
  followed by its ``nb - 1`` low bits, coded uniformly (those bits are noise).

Symbols are coded in groups that share one categorical model (one group
per context), which keeps the per-symbol cost inside constriction's Rust
loop: grouping needs the decoder to know every symbol's context before it
decodes the group, which is how the callers order their streams.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

Categorical = constriction.stream.model.Categorical
Uniform = constriction.stream.model.Uniform
RangeEncoder = constriction.stream.queue.RangeEncoder
RangeDecoder = constriction.stream.queue.RangeDecoder

from ..errors import CodecError, WireFormatError

DIRECT = 32                 # symbols 0..31 are zigzag values themselves
DIRECT_BITS = 5             # bit length of DIRECT - 1
MAX_VALUE_BITS = 48         # |v| < 2**46 after zigzag fits in 48 bits
ALPHABET = DIRECT + MAX_VALUE_BITS - DIRECT_BITS  # 75 symbols
EXTRA_CHUNK = 16            # extra bits are coded 16 at a time (Uniform needs < 2**24)


def zigzag(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.int64, copy=False)
    return ((v << 1) ^ (v >> 63)).view(np.uint64)  # a view: no copy of the bits


def unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.uint64, copy=False)
    return (u >> np.uint64(1)).view(np.int64) ^ -(u & np.uint64(1)).view(np.int64)


def bit_length(u: np.ndarray) -> np.ndarray:
    """Bit length of non-negative uint64 values (0 for 0), exact for < 2**53."""
    out = np.zeros(u.shape, np.int64)
    nz = u > 0
    # frexp is exact: u < 2**53 is an exact float64, mantissa in [0.5, 1).
    out[nz] = np.frexp(u[nz].astype(np.float64))[1]
    return out


def to_symbols(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbols int32, number of extra bits, extra bits as uint64)."""
    u = zigzag(values)
    n = u.size
    big = np.flatnonzero(u >= DIRECT)
    if big.size == 0:  # the common case for residuals: no extra bits at all
        return u.astype(np.int32), np.zeros(n, np.int64), np.zeros(n, np.uint64)
    ub = u[big]
    if int(ub.max()) >= 1 << MAX_VALUE_BITS:
        raise CodecError(f"value {int(np.abs(values).max())} is too large for the entropy coder "
                         f"(limit 2**{MAX_VALUE_BITS - 2})")
    # frexp is exact: ub < 2**53 is an exact float64, mantissa in [0.5, 1).
    nb = np.frexp(ub.astype(np.float64))[1].astype(np.int64)
    sym = u.astype(np.int32)
    sym[big] = DIRECT + nb - DIRECT_BITS - 1
    nextra = np.zeros(n, np.int64)
    nextra[big] = nb - 1
    extra = np.zeros(n, np.uint64)
    extra[big] = ub - (np.uint64(1) << (nb - 1).astype(np.uint64))
    return sym, nextra, extra


def symbols_only(values: np.ndarray) -> np.ndarray:
    """The symbols of ``to_symbols`` alone, int32 (no range check)."""
    u = zigzag(values)
    big = u >= DIRECT
    sym = u.astype(np.int32)
    if big.any():
        nb = np.frexp(u[big].astype(np.float64))[1]
        sym[big] = DIRECT + nb - DIRECT_BITS - 1
    return sym


def symbol_extra_bits(sym: np.ndarray) -> np.ndarray:
    return np.where(sym >= DIRECT, sym.astype(np.int64) - DIRECT + DIRECT_BITS, 0)


def from_symbols(sym: np.ndarray, extra: np.ndarray) -> np.ndarray:
    sym = sym.astype(np.int64)
    nextra = symbol_extra_bits(sym)
    u = np.where(sym >= DIRECT, (np.uint64(1) << nextra.astype(np.uint64)) + extra,
                 sym.astype(np.uint64))
    return unzigzag(u)


def symbol_cost_bits(sym: np.ndarray, probs: np.ndarray) -> float:
    """Ideal cost in bits of coding ``sym`` with the categorical ``probs``."""
    p = probs / probs.sum()
    return float(-np.log2(np.maximum(p[sym], 2.0 ** -24)).sum())


def categorical(probs: np.ndarray) -> Categorical:
    """constriction model for one probability row (cheap to build: about a
    microsecond; the online tables change every chunk, so nothing is cached)."""
    return Categorical(np.ascontiguousarray(probs, dtype=np.float64), perfect=False)


def context_runs(contexts: np.ndarray):
    """Symbols grouped by context (stable): the order, the context of each
    group and the group lengths, so each group is coded with one model."""
    if not (contexts.size and 0 <= contexts.min() and contexts.max() < 2 ** 15):
        order = np.argsort(contexts, kind="stable")
        ids, lengths = np.unique(contexts[order], return_counts=True)
        return order, ids, lengths
    # small non-negative ints: counted, and sorted by radix (linear time) as int16
    counts = np.bincount(contexts)
    order = np.argsort(contexts.astype(np.int16), kind="stable")
    ids = np.flatnonzero(counts)
    return order, ids, counts[ids]


class StreamWriter:
    """Appends grouped symbols and their extra bits to one range coder."""

    def __init__(self) -> None:
        self.enc = RangeEncoder()

    def write(self, values: np.ndarray, contexts: np.ndarray | None, table: np.ndarray,
              symbols: tuple | None = None) -> None:
        """Code ``values`` with ``table[context]``: symbols grouped by context
        (stable), then the extra bits. The reader must pass the same contexts.
        ``symbols``: ``to_symbols(values)`` when the caller has it."""
        if values.size == 0:
            return
        sym, nextra, extra = symbols if symbols is not None else to_symbols(values)
        if contexts is None or table.shape[0] == 1:
            self.enc.encode(sym, categorical(table[0]))
            order = None
        else:
            order, ids, lengths = context_runs(contexts)
            s_sorted = sym[order]
            ends = np.cumsum(lengths).tolist()
            # plain ints in the loop: numpy scalars cost microseconds each
            for a, b, row in zip([0] + ends[:-1], ends, ids.tolist()):
                self.enc.encode(s_sorted[a:b], categorical(table[row]))
        self.write_extra(nextra, extra)

    def write_extra(self, nextra: np.ndarray, extra: np.ndarray) -> None:
        has = nextra > 0
        if not has.any():
            return
        self._write_extra_of(nextra[has], extra[has])

    def _write_extra_of(self, nextra: np.ndarray, extra: np.ndarray) -> None:
        """``write_extra`` for values that all have extra bits."""
        if int(nextra.max()) <= EXTRA_CHUNK:  # one chunk each: the loop below, once
            _encode_uniform(self.enc, extra.astype(np.int32), nextra)
            return
        # Chunks of 16 bits from the low end; every value's chunk k is coded
        # together with the others' chunk k, all with a vectorised Uniform.
        for k in range(0, int(nextra.max()), EXTRA_CHUNK):
            live = nextra > k
            width = np.minimum(nextra[live] - k, EXTRA_CHUNK)
            chunk = ((extra[live] >> np.uint64(k)) & np.uint64((1 << EXTRA_CHUNK) - 1))
            chunk = (chunk & ((np.uint64(1) << width.astype(np.uint64)) - np.uint64(1)))
            _encode_uniform(self.enc, chunk.astype(np.int32), width)

    def finish(self) -> bytes:
        return self.enc.get_compressed().astype("<u4").tobytes()


def _encode_uniform(enc, chunk: np.ndarray, width: np.ndarray) -> None:
    # constriction's Uniform needs size >= 2, which every width >= 1 gives.
    sizes = (np.int64(1) << width).astype(np.int32)
    enc.encode(chunk, Uniform(), sizes)


def read_extra_bits(dec, sym: np.ndarray) -> np.ndarray:
    """The raw low bits that follow each symbol, read in chunks of EXTRA_CHUNK bits."""
    nextra = symbol_extra_bits(sym)
    extra = np.zeros(len(sym), np.uint64)
    has = np.flatnonzero(nextra > 0)
    if has.size:
        extra[has] = _read_extra(dec, nextra[has])
    return extra


def _read_extra(dec, ne: np.ndarray) -> np.ndarray:
    """Extra bits of symbols with ``ne`` (> 0) extra bits each."""
    if int(ne.max()) <= EXTRA_CHUNK:  # one chunk each: the loop below, once
        sizes = (np.int64(1) << ne).astype(np.int32)
        return np.asarray(dec.decode(Uniform(), sizes), np.uint64)
    acc = np.zeros(ne.size, np.uint64)
    for k in range(0, int(ne.max()), EXTRA_CHUNK):
        live = ne > k
        width = np.minimum(ne[live] - k, EXTRA_CHUNK)
        sizes = (np.int64(1) << width).astype(np.int32)
        acc[live] |= np.asarray(dec.decode(Uniform(), sizes), np.uint64) << np.uint64(k)
    return acc


# value of each symbol below DIRECT (its zigzag inverse); the rest are replaced
_SYMBOL_VALUES = unzigzag(np.arange(ALPHABET, dtype=np.uint64))
# for symbols from DIRECT: 2**(extra bits), the zigzag value without them, and
# the Uniform sizes of _read_extra where they fit one chunk (0 where not)
_EXTRA_BASE = np.zeros(ALPHABET, np.int64)
_EXTRA_BASE[DIRECT:] = np.int64(1) << (np.arange(DIRECT, ALPHABET) - DIRECT + DIRECT_BITS)
_EXTRA_SIZES = np.where(_EXTRA_BASE <= 1 << EXTRA_CHUNK, _EXTRA_BASE, 0).astype(np.int32)
_UNIFORM = Uniform()


class _CheckedDecoder:
    """constriction reports data that cannot come from the model with an
    AssertionError; a damaged payload must surface as a WireFormatError."""

    def __init__(self, decoder) -> None:
        self._decoder = decoder

    def decode(self, *args):
        try:
            return self._decoder.decode(*args)
        except (AssertionError, ValueError) as exc:
            raise WireFormatError(f"range-coded section is corrupt: {exc}") from None


class StreamReader:
    """Mirror of ``StreamWriter``: same calls, same order, same contexts."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise WireFormatError(f"range-coded section has {len(data)} bytes, not a multiple of 4")
        self._raw = RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        self.dec = _CheckedDecoder(self._raw)

    def read(self, count: int, contexts: np.ndarray | None, table: np.ndarray | None,
             rows_for=None, with_symbols: bool = False):
        """``count`` values coded by ``StreamWriter.write`` with ``table``, or
        with the rows ``rows_for(context ids)`` gives (the same values as
        ``table[ids]``: only the rows of the contexts present are built);
        ``with_symbols``: (values, their symbols)."""
        if count == 0:
            z = np.zeros(0, np.int64)
            return (z, z.astype(np.int32)) if with_symbols else z
        if contexts is None or (table is not None and table.shape[0] == 1):
            sym = np.asarray(self.dec.decode(categorical(table[0]), count), dtype=np.int32)
        else:
            order, ids, lengths = context_runs(contexts)
            rows = table[ids] if rows_for is None else rows_for(ids)
            decode = self._raw.decode  # one error check for the whole loop
            try:
                parts = [decode(Categorical(row, perfect=False), k)
                         for k, row in zip(lengths.tolist(), rows)]
            except (AssertionError, ValueError) as exc:
                raise WireFormatError(f"range-coded section is corrupt: {exc}") from None
            sym = np.empty(count, np.int32)
            sym[order] = np.concatenate(parts)
        top = int(sym.max())
        if top >= ALPHABET:
            raise WireFormatError(f"decoded symbol {top} is outside the alphabet")
        out = _SYMBOL_VALUES[sym]  # symbols below DIRECT are the zigzag values
        if top >= DIRECT:  # the few others: bit length plus extra bits
            big = np.flatnonzero(sym >= DIRECT)
            big_sym = sym[big]
            if top - DIRECT + DIRECT_BITS <= EXTRA_CHUNK:  # _read_extra's one chunk, by table
                try:
                    extra = self._raw.decode(_UNIFORM, _EXTRA_SIZES[big_sym])
                except (AssertionError, ValueError) as exc:
                    raise WireFormatError(f"range-coded section is corrupt: {exc}") from None
                u = _EXTRA_BASE[big_sym] + np.asarray(extra, np.int64)
            else:
                ne = big_sym.astype(np.int64) - DIRECT + DIRECT_BITS
                u = ((np.uint64(1) << ne.astype(np.uint64))
                     + _read_extra(self.dec, ne)).view(np.int64)
            out[big] = (u >> 1) ^ -(u & 1)  # unzigzag (u < 2**48)
        return (out, sym) if with_symbols else out


# --- frame-adaptive histograms (side information) --------------------------------

def histogram_table(values: np.ndarray) -> np.ndarray:
    """One-row probability table fitted to ``values`` (the adaptive model)."""
    counts = symbol_counts(values).astype(np.float64)
    return quantise_histogram(counts)[None, :]


def quantise_histogram(counts: np.ndarray) -> np.ndarray:
    """Counts scaled to 1..65535 for the nonzero symbols (what the side info stores)."""
    out = np.zeros(ALPHABET, np.float64)
    nz = counts > 0
    if nz.any():
        out[nz] = np.maximum(np.round(counts[nz] * (65535.0 / counts.max())), 1)
    else:
        out[0] = 1
    return out


def quantise_histograms(counts: np.ndarray) -> np.ndarray:
    """``quantise_histogram`` of every row of a 2-D array of counts, each
    row with at least one nonzero count (the same values, row by row)."""
    counts = counts.astype(np.float64)
    scaled = counts * (65535.0 / counts.max(axis=1))[:, None]
    np.round(scaled, out=scaled)
    np.maximum(scaled, 1.0, out=scaled)
    scaled[counts == 0] = 0.0
    return scaled


def pack_histograms(rows: np.ndarray) -> bytes:
    """``pack_histogram`` of every row, concatenated."""
    nz = rows > 0
    k = nz.sum(axis=1)
    ids = np.nonzero(nz)[1].astype(np.uint8).tobytes()
    weights = rows[nz].astype("<u2").tobytes()
    ends = np.cumsum(k).tolist()
    parts, start = [], 0
    for count, end in zip(k.tolist(), ends):
        parts += [bytes((count,)), ids[start:end], weights[2 * start:2 * end]]
        start = end
    return b"".join(parts)


def pack_histogram(row: np.ndarray) -> bytes:
    """Sparse form: count of nonzero symbols, their ids (u8) and weights (u16)."""
    nz = np.flatnonzero(row > 0)
    return (np.uint8(len(nz)).tobytes() + nz.astype(np.uint8).tobytes()
            + row[nz].astype("<u2").tobytes())


def unpack_histogram(data: bytes, pos: int) -> tuple[np.ndarray, int]:
    if pos >= len(data):
        raise WireFormatError("side information ends before a histogram")
    k = data[pos]
    end = pos + 1 + 3 * k
    if end > len(data) or k == 0:
        raise WireFormatError(f"bad histogram of {k} symbols at offset {pos}")
    ids = np.frombuffer(data, np.uint8, k, pos + 1).astype(np.int64)
    weights = np.frombuffer(data, "<u2", k, pos + 1 + k).astype(np.float64)
    if ids.max() >= ALPHABET or (weights == 0).any():
        raise WireFormatError("histogram names a symbol outside the alphabet")
    row = np.zeros(ALPHABET, np.float64)
    row[ids] = weights
    return row[None, :], end


SPAN_HISTOGRAM_LIMIT = 4096


def symbol_counts(values: np.ndarray, bounds: tuple[int, int] | None = None) -> np.ndarray:
    """``np.bincount(symbols_only(values), minlength=ALPHABET)``; through a
    histogram of the values' span when that is short (residuals), which
    saves the per-value symbol mapping. ``bounds``: (low, high) known to
    hold every value (saves finding the extremes)."""
    if values.size > 4 * SPAN_HISTOGRAM_LIMIT:
        lo, hi = bounds if bounds is not None else (int(values.min()), int(values.max()))
        if hi - lo < SPAN_HISTOGRAM_LIMIT:
            hist = np.bincount(values - lo if lo else values, minlength=hi - lo + 1)
            span_sym = symbols_only(np.arange(lo, hi + 1, dtype=np.int64))
            return np.bincount(span_sym, weights=hist, minlength=ALPHABET).astype(np.int64)
    return np.bincount(symbols_only(values), minlength=ALPHABET)


_EXTRA_BITS = np.arange(DIRECT, ALPHABET) - DIRECT + DIRECT_BITS  # per symbol >= DIRECT


def counts_bits(counts: np.ndarray, n: int) -> float:
    """``estimate_bits`` of n values from their symbol counts."""
    nz = counts[counts > 0]
    extra_bits = float((counts[DIRECT:] * _EXTRA_BITS).sum())
    return float(-(nz * np.log2(nz / n)).sum()) + extra_bits


def estimate_bits(values: np.ndarray, sym: np.ndarray | None = None) -> float:
    """Cost of ``values`` (or of their symbols ``sym``) under their own
    histogram (symbols + extra bits)."""
    if values.size == 0:
        return 0.0
    if sym is None:
        counts = symbol_counts(values)
    else:
        counts = np.bincount(sym, minlength=ALPHABET)
    return counts_bits(counts, values.size)


# --- side information and self-tuning integer sequences ---------------------------

class SideWriter:
    """Little-endian side information (choices, histograms) for one frame."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u16(self, v: int) -> None:
        self.parts.append(int(v).to_bytes(2, "little"))

    def histogram(self, row: np.ndarray) -> None:
        self.parts.append(pack_histogram(row))

    def histograms(self, rows: np.ndarray) -> None:
        """``histogram`` of each row in turn (rows with a nonzero weight)."""
        self.parts.append(pack_histograms(rows))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class SideReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise WireFormatError("side information is truncated")
        v = int.from_bytes(self.data[self.pos:self.pos + 2], "little")
        self.pos += 2
        return v

    def histogram(self) -> np.ndarray:
        row, self.pos = unpack_histogram(self.data, self.pos)
        return row


def period_residual(values: np.ndarray, period: int) -> np.ndarray:
    """values[i] - values[i - period] (values before the start count as 0)."""
    if period == 0:
        return values
    out = values.copy()
    out[period:] -= values[:-period]
    return out


def undo_period_residual(res: np.ndarray, period: int) -> np.ndarray:
    if period == 0 or res.size == 0:
        return res
    n = res.size
    rows = -(-n // period)
    padded = np.zeros(rows * period, np.int64)
    padded[:n] = res
    return np.cumsum(padded.reshape(rows, period), axis=0).reshape(-1)[:n]


def choose_period(values: np.ndarray, periods: tuple[int, ...] = (1,)):
    """(period, estimated bits, residual) of the cheapest coding of
    ``write_int_sequence`` (period 0: the raw values)."""
    return _choose_period(values, periods)[:3]


def _binary_bits(a: int, b: int) -> float:
    """Entropy bits of a + b two-way outcomes (a and b both > 0)."""
    n = a + b
    return -(a * math.log2(a / n) + b * math.log2(b / n))


def _choose_period(values: np.ndarray, periods: tuple[int, ...]):
    """``choose_period``'s result and the residual's symbol counts."""
    values = values.astype(np.int64, copy=False)
    n = values.size
    if n == 0:
        return 0, 0.0, values, np.zeros(ALPHABET, np.int64)
    v_lo, v_hi = int(values.min()), int(values.max())
    # a residual is a value (the first `period` ones) or a difference of two
    res_bounds = (min(v_lo, v_lo - v_hi), max(v_hi, v_hi - v_lo))
    counts = symbol_counts(values, (v_lo, v_hi))
    best = (0, counts_bits(counts, n), values, counts)
    for p in periods:
        if 0 < p < n:
            res = period_residual(values, p)
            # Grouping symbols never raises the entropy: the cost is at least
            # that of "zero or not"; a candidate whose bound reaches the best
            # cost cannot be cheaper, and is not counted.
            rest = int(np.count_nonzero(res))
            if 0 < rest < n and _binary_bits(n - rest, rest) >= best[1] * (1 + 1e-9) + 1e-6:
                continue
            counts = symbol_counts(res, res_bounds)
            cost = counts_bits(counts, n)
            if cost < best[1]:
                best = (p, cost, res, counts)
    return best


def write_int_sequence(writer: StreamWriter, side: SideWriter, values: np.ndarray,
                       periods: tuple[int, ...] = (1,), choice: tuple | None = None) -> None:
    """Code an integer sequence losslessly with the cheapest of: raw values or
    the difference to the value ``period`` places earlier; frame-adaptive
    histogram in the side information. ``choice``: ``choose_period``'s
    result when the caller has it."""
    if choice is not None:
        best_p, _, best_res = choice
        counts = None
    else:
        best_p, _, best_res, counts = _choose_period(values, periods)
    side.u16(best_p)
    if values.size == 0:
        return
    if counts is None:
        table = histogram_table(best_res)
    else:
        table = quantise_histogram(counts.astype(np.float64))[None, :]
    side.histogram(table[0])
    writer.write(best_res, None, table)


def estimate_int_sequence_bits(values: np.ndarray, periods: tuple[int, ...] = (1,)) -> float:
    """What ``write_int_sequence`` would spend, approximately (no side information)."""
    return choose_period(values, periods)[1]


def read_int_sequence(reader: StreamReader, side: SideReader, count: int) -> np.ndarray:
    period = side.u16()
    if count == 0:
        return np.zeros(0, np.int64)
    table = side.histogram()
    res = reader.read(count, None, table)
    return undo_period_residual(res, period)


# --- block-adaptive coding (no side information; for small clouds) ---------------

ADAPTIVE_PRIOR = 0.1
ADAPTIVE_BLOCK = 64


def adaptive_blocks(n: int) -> list[tuple[int, int]]:
    """Blocks of 1, 1, 2, 4, ... then ADAPTIVE_BLOCK symbols: the model is
    re-estimated from all earlier symbols before each block."""
    out, start, size = [], 0, 1
    while start < n:
        end = min(n, start + size)
        out.append((start, end))
        start = end
        size = min(size * 2 if start > 1 else 1, ADAPTIVE_BLOCK)
    return out


def write_adaptive(writer: StreamWriter, values: np.ndarray) -> None:
    """Code values with a model learned on the fly from the symbols already
    coded (KT-style counts), so no histogram has to be sent."""
    if values.size == 0:
        return
    sym, nextra, extra = to_symbols(values)
    counts = np.full(ALPHABET, ADAPTIVE_PRIOR)
    for a, b in adaptive_blocks(sym.size):
        writer.enc.encode(sym[a:b], Categorical(counts, perfect=False))
        counts += np.bincount(sym[a:b], minlength=ALPHABET)
    writer.write_extra(nextra, extra)


def read_adaptive(reader: StreamReader, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, np.int64)
    sym = np.empty(count, np.int32)
    counts = np.full(ALPHABET, ADAPTIVE_PRIOR)
    for a, b in adaptive_blocks(count):
        s = np.asarray(reader.dec.decode(Categorical(counts, perfect=False), b - a), np.int32)
        if s.size and int(s.max()) >= ALPHABET:
            raise WireFormatError("decoded symbol outside the alphabet")
        sym[a:b] = s
        counts += np.bincount(s, minlength=ALPHABET)
    return from_symbols(sym, read_extra_bits(reader.dec, sym))


def adaptive_cost_bits(values: np.ndarray) -> float:
    """Exact ideal cost of ``write_adaptive`` (for choosing predictors)."""
    if values.size == 0:
        return 0.0
    sym, nextra, _ = to_symbols(values)
    counts = np.full(ALPHABET, ADAPTIVE_PRIOR)
    bits = float(nextra.sum())
    for a, b in adaptive_blocks(sym.size):
        p = counts / counts.sum()
        bits -= float(np.log2(p[sym[a:b]]).sum())
        counts += np.bincount(sym[a:b], minlength=ALPHABET)
    return bits
