"""``rangecode``: bounded-error lidar codec with a learned context model.

Guarantee: every decoded point is within the Euclidean error bound E
(setting ``bound``, default 1 cm; per class in ``semantic`` mode) of the
original (the corresponding input point under ``order = sorted``), the
point count is preserved, the order too unless ``order = sorted`` (see
below), and:

* points with a non-finite coordinate, and points whose coordinates are
  too large for the bound to survive rounding to the output float type
  (beyond 8 km for float32 at 1 cm; the limit is ``0.1 E / eps``), are kept
  bit-exact ("verbatim"), so 1e6 m coordinates round-trip exactly;
* records that are byte-for-byte copies of an earlier record (some drivers
  emit every firing twice) are coded as "copy of the record ``lag`` back";
* other fields: integer fields and integer-valued float fields (``ring``)
  are lossless; intensity-like float fields are quantised with
  ``intensity_step`` (|error| <= step / 2), time-like ones with ``time_step``,
  the rest with ``field_step``; a step of 0 keeps the field bit-exact;
* padding bytes between fields are not kept (they decode as zeros).

Geometry is coded in one of three modes, recorded in the payload metadata
as ``geometry_mode`` and chosen per frame by setting ``geometry`` (``auto``:
the smallest estimate):

* ``beams``: the range image of ``sensor_codec.pointcloud.predict`` (beams
  from the ring field or estimated), entropy-coded with the shipped learned
  context model adapted online to the frame (model id ``lidar_ctx-<hash>``
  in every payload; a decoder with other tables refuses the payload with
  ``UnknownModelError``). Points within ``NEAR_RANGE`` of the sensor (no
  return placeholders, the car's own body) are coded by the sequence coder;
* ``sequence``: for clouds without usable beams, each point on the
  bound's Cartesian grid, predicted from an earlier point of the scan
  (``sensor_codec.pointcloud.sequence``);
* ``spherical``: the same reference coding on the range-image integers plus
  Cartesian corrections (column-ordered scans without a ring field, such as
  View-of-Delft's).

The bound is the same in every mode. Every mode codes the geometry as seen
from the sensor's origin: with ``origin = auto`` (default) it is estimated
per frame (``sensor_codec.pointcloud.rangeimage.estimate_origin``: lasers
sit at fixed elevations seen from the sensor, so the elevation histogram is
sharpest there) and, when at least ``ORIGIN_MIN_MM`` from (0, 0, 0), stored
in the metadata as ``origin_mm`` (integer millimetres; absent means
(0, 0, 0)). KITTI's and View-of-Delft's clouds have their origin about
20 cm below the optical centre, nuScenes' 24 cm beside it.

Point order (setting ``order``, recorded in the payload metadata as
``order`` and ``order_scheme``):

* ``keep`` (default): the decoded cloud has the input's order and layout
  (an organised cloud keeps its grid);
* ``sorted``: the encoder may reorder the points, and the decoder returns
  them in that new order as an unorganised cloud (height 1), every field
  permuted with its point and the count kept. Point i of the decoded cloud
  is within the bound of input point ``perm[i]``, where ``perm`` is the
  encoder's ``last_permutation`` after ``encode`` (Python API only; it is
  not in the payload). The encoder codes the first candidate order below
  and, unless that found beams (``geometry_mode`` ``beams``) in a cloud
  stored in scan order (``in_scan_order``), the second too, and keeps the
  smaller payload (so ``sorted`` never costs more than
  ``keep`` beyond the two metadata keys; the second encode halves the
  encode speed):

  - ``scan``: the input order, with each exact copy of a record moved
    right behind its first occurrence (dual-return drivers emit every
    firing twice, View-of-Delft among them);
  - ``elevation_azimuth``: finite points by elevation band
    (``SORT_ELEVATION_BAND`` degrees wide, from the sensor origin), then
    azimuth, then input order; non-finite points last, in input order. This
    turns a column-ordered or shuffled scan without a ring field into rows
    of a range image that the ``beams`` coder handles.
"""

from __future__ import annotations

import numpy as np
import zstandard

from ..errors import ConfigError, InvalidFrameError, WireFormatError
from ..frames import Modality, PointCloudFrame
from ..pointcloud import predict, sequence
from ..pointcloud.context_model import ContextModel, default_model, scale_index
from ..pointcloud.entropy import (
    SideReader,
    SideWriter,
    StreamReader,
    StreamWriter,
    choose_period,
    estimate_bits,
    estimate_int_sequence_bits,
    read_int_sequence,
    write_int_sequence,
)
from ..pointcloud.rangeimage import (
    coded_order,
    estimate_beams,
    estimate_origin,
    ring_field,
    rings_label_lasers,
    segment_starts,
    spherical,
)
from ..pointcloud.semantic import CLASS_FIELD, bounds_for_classes, load_class_bounds
from ..wire import Container, meta_get
from .base import Codec, Param, empty_cloud_from_meta, point_layout_meta, register_codec
from .streams import byte_shuffle, byte_unshuffle, zstd_decompress_exact

INTENSITY_NAMES = ("intensity", "reflectance", "reflectivity", "i")
TIME_NAMES = ("t", "time", "timestamp", "time_offset", "offset_time")
INT_PERIODS = (1, 2, 16, 32, 64, 128)
MAX_INT_FIELD = 2 ** 45
MAX_QUANT = 2 ** 40
# ``auto`` picks the range image without sampling the sequence layers when
# its estimate is below this fraction of the quick sequence estimate.
BEAMS_CLEAR_WIN = 0.9
# Points nearer than this to the sensor origin skip the range image (metres).
NEAR_RANGE = 0.5
# Reference search depth of those near points' sequence coding (at most
# sequence.MAX_LAG, which the decoder checks). nuScenes at 2 cm (4576 near
# points, estimated bits): 64 -> 5387 in 0.83 ms, 32 -> 5377 in 0.39 ms,
# 16 -> 5381, 8 -> 6675.
NEAR_MAX_LAG = 32
# Width of the elevation bands of ``order = sorted`` (degrees). Measured on
# View-of-Delft at 1 cm with the estimated origin (bits per point): 0.1 ->
# 3.81, 0.15 -> 3.79, 0.2 -> 3.74, 0.25 -> 3.83, 0.3 -> 4.35 (about half
# an HDL-64 laser spacing).
SORT_ELEVATION_BAND = 0.2
ORDERS = ("keep", "sorted")
SCAN_ORDER_MAX_STEP = 10.0
SCAN_ORDER_SAMPLE = 16384
# An estimated sensor origin nearer than this to (0, 0, 0) is not used (mm).
ORIGIN_MIN_MM = 10
_EPS = {np.dtype("<f4"): 2.0 ** -23, np.dtype("<f8"): 2.0 ** -52}


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of alternating runs, starting with a (possibly empty) False run."""
    change = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    lead = 1 if mask.size and mask[0] else 0
    edges = np.zeros(change.size + 2 + lead, np.int64)
    edges[1 + lead:-1] = change
    edges[-1] = mask.size
    if lead:  # the empty False run first
        edges[1] = 0
    return np.diff(edges)


def _mask_from_runs(runs: np.ndarray, n: int) -> np.ndarray:
    if runs.size and (runs.min() < 0 or int(runs.sum()) != n):
        raise WireFormatError(f"run lengths add up to {int(runs.sum())}, not {n} points")
    values = np.arange(runs.size) % 2 == 1
    return np.repeat(values, runs)


def _mix(bits: np.ndarray, factor: int, shift: int) -> np.ndarray:
    h = bits * np.uint64(factor)
    h ^= h >> np.uint64(shift)
    return h


def _find_duplicates(points: np.ndarray) -> np.ndarray:
    """Index of the earliest identical record for each record (itself if none)."""
    n = points.size
    src = np.arange(n)
    if n < 2:
        return src
    # astype() copies the strided fields straight into contiguous arrays
    x = points["x"].astype(np.float64).view(np.uint64)
    y = points["y"].astype(np.float64).view(np.uint64)
    z = points["z"].astype(np.float64).view(np.uint64)
    # Each axis is mixed with its own shift: with a plain product per axis,
    # points mirrored through the z axis (x, y -> -x, -y) shared a hash.
    h = _mix(x, 0x9E3779B97F4A7C15, 31)
    h ^= _mix(y, 0xC2B2AE3D27D4EB4F, 29)
    h ^= _mix(z, 0x165667B19E3779F9, 27)
    # the other scalar fields too: placeholder points that differ only in
    # their ring would otherwise share a hash (nuScenes: 3469 of them)
    others = [name for name in points.dtype.names
              if name not in ("x", "y", "z") and not points.dtype[name].shape
              and points.dtype[name].kind in "iuf"]
    for k, name in enumerate(others):
        v = points[name]
        bits = (v.astype(np.float64) if v.dtype.kind == "f" else v.astype(np.int64)).view(np.uint64)
        h ^= _mix(bits, 0xD6E8FEB86659FD93 + 2 * k, 23 + 2 * (k % 8))
    # Sorting the hashes alone is three times faster than an argsort and
    # settles the common case, a cloud without copies: first their top
    # halves (distinct halves, distinct hashes; 32-bit keys sort faster).
    for key in ((h >> np.uint64(32)).astype(np.uint32), h):
        key = np.sort(key)
        if (key[1:] != key[:-1]).all():
            return src
    # An unstable sort is several times faster; the earliest record of each
    # equal-hash group is then found with a minimum over the group.
    order = np.argsort(h)
    hs = h[order]
    new_group = np.r_[True, hs[1:] != hs[:-1]]
    if new_group.all():
        return src
    group = np.cumsum(new_group) - 1
    earliest = np.minimum.reduceat(order, np.flatnonzero(new_group))[group]
    later = order != earliest
    cand = order[later]
    first = earliest[later]
    # records compared bytewise, a word per column: the widest unsigned
    # integer that divides the record size (a few columns, ANDed in turn)
    size = points.dtype.itemsize
    word = next(w for w in (8, 4, 2, 1) if size % w == 0)
    rec = np.ascontiguousarray(points).view(np.dtype(f"<u{word}")).reshape(n, -1)
    equal = rec[cand, 0] == rec[first, 0]
    for col in range(1, rec.shape[1]):
        equal &= rec[cand, col] == rec[first, col]
    src[cand[equal]] = first[equal]
    return src


def _plus_origin(recon: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """A plan's reconstruction plus the origin, as the decoder adds them, in
    place (every plan builds its own array, used for this check only)."""
    if origin.any():
        recon += origin
    return recon


def _outside_bound(recon: np.ndarray, xyz: np.ndarray, dtypes, bound: np.ndarray) -> np.ndarray:
    """Points whose reconstruction, rounded to the output float types, is
    farther than ``bound`` from the original."""
    if dtypes[0] == dtypes[1] == dtypes[2]:  # the usual layout: whole-array steps
        d = np.subtract(recon.astype(dtypes[0]), xyz, dtype=np.float64)
        d *= d
        sq = d[:, 0] + d[:, 1]
        sq += d[:, 2]
    else:
        sq = np.zeros(xyz.shape[0])
        for k in range(3):
            d = np.subtract(recon[:, k].astype(dtypes[k]), xyz[:, k], dtype=np.float64)
            d *= d
            sq += d
    return np.sqrt(sq, out=sq) > bound


@register_codec
class RangeCodeLidar(Codec):
    name = "rangecode"
    error_bound_setting = "bound"
    modalities = frozenset({Modality.LIDAR})
    lossless = False
    description = ("Bounded-error lidar: every point within `bound` metres; beams, predictive "
                   "residuals and a learned context model (constriction range coder)")
    params = (
        Param("bound", float, 0.01,
              "Euclidean error bound per point, metres (not in semantic mode, where the class "
              "table sets every bound, its default_bound included)", min=1e-4, max=10.0),
        Param("intensity_step", float, 0.01,
              "quantisation step of intensity-like float fields (0 = bit-exact)", min=0.0, max=1e6),
        Param("time_step", float, 0.0,
              "quantisation step of time-like float fields (0 = bit-exact)", min=0.0, max=1e6),
        Param("field_step", float, 0.0,
              "quantisation step of other float fields (0 = bit-exact)", min=0.0, max=1e6),
        Param("dedup", bool, True, "code records identical to an earlier record as copies"),
        Param("geometry", str, "auto",
              "geometry coding: 'beams' (range image), 'sequence' (grid + reference point "
              "in scan order, for clouds without beam structure), 'spherical' (the same "
              "reference coding on the range-image integers) or 'auto' (the smallest "
              "estimate, per frame)", choices=("auto", "beams", "sequence", "spherical")),
        Param("order", str, "keep",
              "point order of the decoded cloud: 'keep' (the input's order and layout) or "
              "'sorted' (the encoder may reorder points, all fields with them, and returns "
              "the cheaper of the input order with copies next to their originals and an "
              "elevation-band/azimuth order; the decoded cloud is unorganised, the count kept, "
              "and the permutation is the encoder's last_permutation)",
              choices=ORDERS),
        Param("origin", str, "auto",
              "sensor origin the geometry is coded around: 'auto' (estimated per frame from "
              "the sharpness of the elevation histogram, used when at least 1 cm from "
              "(0, 0, 0)) or 'zero'", choices=("auto", "zero")),
        Param("semantic", bool, False,
              f"per-point bound from the {CLASS_FIELD!r} field and the class bound table"),
        Param("semantic_table", str, "",
              "YAML class bound table ('' = config/lidar_semantic_bounds.yaml)"),
    )

    def __init__(self, model: ContextModel | None = None, **settings) -> None:
        super().__init__(**settings)
        default_bound = next(p.default for p in self.params if p.name == "bound")
        if self.settings["semantic"] and self.settings["bound"] != default_bound:
            # Refused rather than ignored: the table alone sets semantic-mode bounds.
            raise ConfigError(
                f"rangecode bound={self.settings['bound']} has no effect with semantic=true: "
                "the class bound table sets every bound (its default_bound for points "
                "outside the camera view and unlisted classes); edit the table "
                "(semantic_table) or drop the bound setting")
        self._model = model
        self.trace: list | None = None  # training hook: collects geometry streams
        self.last_estimates: dict[str, float] = {}  # auto mode's figures, for benchmarks
        # order = sorted: decoded point i is input point last_permutation[i]
        self.last_permutation: np.ndarray | None = None

    @property
    def model(self) -> ContextModel:
        if self._model is None:
            self._model = default_model()
        return self._model

    @property
    def model_id(self) -> str:
        return self.model.model_id

    # --- encode ---------------------------------------------------------------

    def _encode(self, frame: PointCloudFrame):
        if self.settings["order"] == "keep":
            self.last_permutation = None
            meta, sections = self._encode_in_order(frame)
            return meta, sections
        best = None
        origin = None
        if self.settings["origin"] == "auto" and frame.points.size:
            xyz = np.stack([frame.points[a].astype(np.float64) for a in ("x", "y", "z")], axis=1)
            origin = estimate_origin(xyz)
        for scheme, order_of in (("scan", scan_order),
                                 ("elevation_azimuth", elevation_azimuth_order)):
            perm = order_of(frame.points, origin)
            identity = perm.size == 0 or (perm[0] == 0 and (np.diff(perm) == 1).all())
            permuted = PointCloudFrame(frame.points if identity else frame.points[perm],
                                       frame.modality, 1, perm.size, frame.stamp_ns,
                                       frame.frame_id)
            meta, sections = self._encode_in_order(permuted, origin)
            size = sum(len(s) for s in sections)
            if best is None or size < best[0]:
                meta["order"], meta["order_scheme"] = "sorted", scheme
                best = (size, meta, sections, perm, dict(self.last_estimates))
            if scheme == "scan" and meta["geometry_mode"] == "beams" and in_scan_order(
                    frame.points, origin):
                break  # the input is a scan with its beams found: no re-sort needed
        _, meta, sections, self.last_permutation, self.last_estimates = best
        return meta, sections

    def _encode_in_order(self, frame: PointCloudFrame, origin: np.ndarray | None = None):
        pts = frame.points
        dtypes = [pts.dtype[a] for a in ("x", "y", "z")]
        for axis, dt in zip("xyz", dtypes):
            if dt.shape or dt.newbyteorder("<") not in _EPS:
                raise InvalidFrameError(
                    f"rangecode needs float32 or float64 scalar x/y/z, field {axis!r} is {dt}; "
                    "use the lossless 'zstd' codec for this layout")
        eps = max(_EPS[dt.newbyteorder("<")] for dt in dtypes)
        meta = point_layout_meta(frame)
        n = pts.size
        bound = self.settings["bound"]
        writer, side = StreamWriter(), SideWriter()
        raw_parts: list[bytes] = []

        # 1. exact copies of earlier records
        src = _find_duplicates(pts) if self.settings["dedup"] else np.arange(n)
        dup = src != np.arange(n)
        runs = _runs(dup)
        meta["dup_runs"] = int(runs.size)
        write_int_sequence(writer, side, runs)
        write_int_sequence(writer, side, (np.arange(n) - src)[dup])
        uniq = np.flatnonzero(~dup)
        u = pts[uniq] if dup.any() else pts

        # 2. per-point bounds
        class_bounds = None
        if self.settings["semantic"]:
            if CLASS_FIELD not in pts.dtype.names:
                raise InvalidFrameError(
                    f"semantic mode needs a {CLASS_FIELD!r} field (see "
                    "sensor_codec.pointcloud.semantic.with_class_field)")
            default, table, _ = load_class_bounds(self.settings["semantic_table"] or None)
            class_bounds = [[int(k), float(v)] for k, v in sorted(table.items())]
            meta["semantic_bounds"] = class_bounds
            meta["semantic_default"] = default
            bound = default
        meta["bound"] = bound
        min_bound = min([bound] + [b for _, b in (class_bounds or [])])

        # 3. which points are coded on the grid, which verbatim
        xyz = np.empty((u.size, 3))
        for k, axis in enumerate(("x", "y", "z")):
            xyz[:, k] = u[axis]
        # per-axis column operations: reductions over a 3-wide axis are slow
        finite = np.isfinite(xyz[:, 0]) & np.isfinite(xyz[:, 1]) & np.isfinite(xyz[:, 2])
        maxabs = np.maximum(np.maximum(np.abs(xyz[:, 0]), np.abs(xyz[:, 1])), np.abs(xyz[:, 2]))
        all_finite = bool(finite.all())
        if not all_finite:
            maxabs[~finite] = 0
        limit_exp = int(np.floor(np.log2(0.1 * min_bound / eps)))
        if finite.any():
            top = maxabs.max() if all_finite else maxabs[finite].max()
            limit_exp = min(limit_exp, int(np.floor(np.log2(max(top, 1.0)))) + 1)
        meta["coord_limit_exp"] = limit_exp
        limit = 2.0 ** limit_exp
        regular = finite & (maxabs < limit)
        # geometry is coded around the sensor's origin (integer millimetres
        # in the metadata; absent = (0, 0, 0), the layout before this option)
        if origin is None:
            origin = np.zeros(3)
            if self.settings["origin"] == "auto":
                origin = estimate_origin(xyz if regular.all() else xyz[regular])
        origin_mm = np.round(np.asarray(origin) * 1000).astype(np.int64)
        if np.abs(origin_mm).max() < ORIGIN_MIN_MM:
            origin_mm[:] = 0
        origin = origin_mm * 1e-3
        if origin_mm.any():
            meta["origin_mm"] = origin_mm.tolist()

        # 4. other fields (decoded before geometry: the ring and class fields steer it)
        plans = []
        for name in pts.dtype.names:
            if name in ("x", "y", "z"):
                continue
            plans.append(self._encode_field(name, u[name], writer, side, raw_parts))
        meta["field_plan"] = plans

        # 5. geometry of the regular points: beams (range image) or sequence mode
        q0 = float(predict.grid_step(bound, limit, eps))
        q = self._point_steps(u, regular, bound, class_bounds, meta, limit, eps)
        idx = np.flatnonzero(regular)
        point_bound = q_to_bound(q, bound, class_bounds, u, idx)
        xo = xyz if idx.size == xyz.shape[0] else xyz.take(idx, axis=0)  # the regular points
        xr = xo - origin if origin_mm.any() else xo  # ... seen from the origin
        mode = self.settings["geometry"]
        ring = ring_field(pts)
        beams_plan = seq_plan = None
        if mode == "auto" and ring and rings_label_lasers(
                u[ring] if idx.size == u.size else u[ring][idx], xr):
            # cheap evidence first: a ring field whose labels are the lasers
            # makes the range image the choice without the cost estimates
            # (nuScenes: their ~3 ms are a sixth of the encode)
            mode = "beams"
            self.last_estimates = {}
        if mode == "auto":
            quick = sequence.quick_sequence_bits(xr, q)
            # give_up_above: estimated beam labels alone dearer than the quick
            # sequence estimate (a column-ordered scan) end the beam plan early
            beams_plan = self._plan_beams(xr, q, q0, u, idx, ring, estimate=True,
                                          give_up_above=quick)
            beams_bits = beams_plan["estimate"] if beams_plan else float("inf")
            self.last_estimates = {"beams": beams_bits, "quick sequence": quick}
            mode = "beams"
            # Coding samples of the two sequence layers costs time; a clear
            # win of the range image (KITTI, nuScenes) skips it.
            if beams_bits > BEAMS_CLEAR_WIN * quick:
                costs = sequence.sampled_cost_bits(xr, q, q0)
                self.last_estimates.update(costs)
                costs["beams"] = beams_bits
                mode = min(("beams", "sequence", "spherical"), key=costs.__getitem__)
        if mode == "beams" and beams_plan is None:
            beams_plan = self._plan_beams(xr, q, q0, u, idx, ring)
        if mode == "sequence":
            seq_plan = self._plan_sequence(xr, q)
        if mode == "spherical":
            seq_plan = self._plan_spherical(xr, q, q0)
        meta["geometry_mode"] = mode
        plan = beams_plan if mode == "beams" else seq_plan
        bad = _outside_bound(_plus_origin(plan["recon"], origin), xo, dtypes, point_bound)
        while bad.any():  # float corner cases: keep those points exact instead
            regular[idx[bad]] = False
            keep = ~bad
            idx, q, xr, xo = idx[keep], q[keep], xr[keep], xo[keep]
            point_bound = point_bound[keep]
            # per-frame choices (azimuth step, grid of the finest bound) may
            # move with the set of points: check the new plan again
            plan = (self._plan_beams(xr, q, q0, u, idx, ring) if mode == "beams"
                    else self._plan_sequence(xr, q) if mode == "sequence"
                    else self._plan_spherical(xr, q, q0))
            bad = _outside_bound(_plus_origin(plan["recon"], origin), xo, dtypes, point_bound)
        vruns = _runs(~regular)
        meta["verbatim_runs"] = int(vruns.size)
        write_int_sequence(writer, side, vruns)
        verbatim = np.flatnonzero(~regular)
        for axis in ("x", "y", "z"):
            raw_parts.append(byte_shuffle(u[axis][verbatim]))

        if mode == "sequence":
            meta["beam_source"] = ""
            sequence.encode_sequence(writer, side, plan["G"], plan["lags"])
        elif mode == "spherical":
            meta["beam_source"] = ""
            meta["azimuth_ref"] = plan["az_ref"]
            sequence.encode_spherical(writer, side, plan["V"], plan["C"], plan["lags"], q, q0)
        else:
            meta["beam_source"] = ring or ""
            meta["azimuth_ref"] = plan["az_ref"]
            near_runs = _runs(plan["near_in_mask_order"])
            meta["near_runs"] = int(near_runs.size)
            write_int_sequence(writer, side, near_runs)
            beams = plan["beams"]
            if not ring:
                write_int_sequence(writer, side, beams, INT_PERIODS, plan["label_choice"])
            Ro, Ao, Elo, Co = plan["RAEC_coded"]
            predict.encode_geometry(writer, side, Ro, Ao, Elo, Co, plan["q_coded"], q0,
                                    plan["beams_coded"], self.model, scale_index(bound),
                                    self.trace, plan["streams"], plan["symbols"])
            near_plan = plan["near_plan"]
            sequence.encode_sequence(writer, side, near_plan["G"], near_plan["lags"])
        raw = b"".join(raw_parts)
        meta["raw_bytes"] = len(raw)
        sections = [side.getvalue(), writer.finish(),
                    zstandard.ZstdCompressor(level=3).compress(raw) if raw else b""]
        return meta, sections

    def _plan_beams(self, xyz, q, q0, u, idx, ring, estimate: bool = False,
                    give_up_above: float = float("inf")) -> dict | None:
        # Points within NEAR_RANGE of the sensor (no-return placeholders,
        # the car's own body) have no usable azimuth or elevation: they
        # leave the range image and go to the sequence coder.
        near = (xyz[:, 0] ** 2 + xyz[:, 1] ** 2 + xyz[:, 2] ** 2) < NEAR_RANGE ** 2
        far = np.flatnonzero(~near)
        if far.size == near.size:  # the common case: no copies needed
            xf, qf = xyz, q
        else:
            # take(): several times faster than indexing rows with an array
            xf, qf = xyz.take(far, axis=0), q[far]
        polar = spherical(xf)
        label_bits = 0.0
        label_choice = None
        if ring:
            rings = (u[ring] if idx.size == u.size else u[ring][idx]).astype(np.int64)
            # the near-point mask is coded in ring order (no-return
            # placeholders cluster on a few rings), else as stored
            mask_order = coded_order(rings)
            near_in_mask_order = near[mask_order]
            if far.size == near.size:
                beams, order = rings, mask_order
            else:
                # the stable sort by ring of every point, restricted to the
                # far ones, is their coded order: no second sort
                beams = rings[far]
                order = (np.cumsum(~near) - 1)[mask_order[~near_in_mask_order]]
        else:
            near_in_mask_order = near
            beams = estimate_beams(polar[1], polar[2])
            label_choice = choose_period(beams, INT_PERIODS)
            if estimate:
                label_bits = label_choice[1]
            order = coded_order(beams)
        first = segment_starts(beams[order])
        az_ref = predict.choose_azimuth_ref(polar[1], order, first, q0)
        RA = predict.range_azimuth(polar, q0, az_ref)
        if label_bits and np.isfinite(give_up_above):
            # the along-beam range and azimuth costs alone may end the plan
            # before the rest of the quantisation
            partial = label_bits + sum(estimate_bits(predict.along_beam_residual(v[order], first))
                                       for v in RA[::-1])
            if partial > give_up_above:
                return None
        R, A, El, C, p1 = predict.quantise(xf, qf, q0, az_ref=az_ref, polar=polar, RA=RA)
        Ro, Ao = R[order], A[order]
        Elo, Co = El[order], C.take(order, axis=0)
        q_coded, beams_coded = qf[order], beams[order]
        streams = predict.geometry_streams(Ro, Ao, Elo, Co, q_coded, q0, beams_coded)
        symbols = predict.stream_symbols(streams[0])
        near_index = np.flatnonzero(near)
        near_plan = self._plan_sequence(xyz.take(near_index, axis=0), q[near_index],
                                        NEAR_MAX_LAG)
        recon = predict.reconstruct(R, A, El, C, qf, q0, p1, az_ref)
        if far.size != near.size:
            far_recon, recon = recon, np.empty_like(xyz)
            for k in range(3):  # a column at a time: faster than rows
                column = recon[:, k]
                column[far] = far_recon[:, k]
                column[near_index] = near_plan["recon"][:, k]
        plan = {"RAEC_coded": (Ro, Ao, Elo, Co), "q_coded": q_coded, "beams_coded": beams_coded,
                "beams": beams, "label_choice": label_choice, "order": order, "streams": streams,
                "az_ref": az_ref,
                "symbols": symbols, "recon": recon, "near": near, "far": far,
                "near_in_mask_order": near_in_mask_order,
                "near_plan": near_plan}
        if estimate:
            plan["estimate"] = (label_bits + predict.estimate_geometry_bits(streams[0], symbols)
                                + estimate_int_sequence_bits(
                                    _runs(near_in_mask_order))
                                + sequence.estimate_sequence_bits(near_plan["G"],
                                                                  near_plan["lags"]))
        return plan

    @staticmethod
    def _sequence_grid(xyz, q):
        step = float(q.min()) if q.size else 1.0  # one grid: the finest bound's
        return np.round(xyz / step).astype(np.int64), step

    @staticmethod
    def _plan_spherical(xyz, q, q0) -> dict:
        az_ref = sequence.choose_spherical_azimuth_ref(xyz, q, q0)
        V, C, recon = sequence.spherical_integers(xyz, q, q0, az_ref)
        return {"V": V, "C": C, "lags": sequence.spherical_lags(V), "recon": recon,
                "az_ref": az_ref}

    def _plan_sequence(self, xyz, q, max_lag: int = sequence.MAX_LAG) -> dict:
        G, step = self._sequence_grid(xyz, q)
        return {"G": G, "lags": sequence.choose_lags(G, max_lag), "recon": G * step}

    @staticmethod
    def _azimuth_ref(meta: dict) -> float:
        az_ref = float(meta_get(meta, "azimuth_ref", (int, float)))
        if az_ref not in predict.AZIMUTH_REFS:
            raise WireFormatError(f"azimuth step ref {az_ref} is not one of "
                                  f"{predict.AZIMUTH_REFS}")
        return az_ref

    def _point_steps(self, u, regular, bound, class_bounds, meta, limit, eps):
        if class_bounds is None:
            return np.full(int(regular.sum()), predict.grid_step(bound, limit, eps))
        sel = u[regular] if u.size else u
        per_point = bounds_for_classes(sel[CLASS_FIELD], bound, dict(class_bounds))
        return predict.grid_step(per_point, limit, eps)

    def _step_for(self, name: str) -> float:
        low = name.lower()
        if low in INTENSITY_NAMES:
            return self.settings["intensity_step"]
        if low in TIME_NAMES:
            return self.settings["time_step"]
        return self.settings["field_step"]

    def _encode_field(self, name, values, writer, side, raw_parts) -> list:
        dt = values.dtype
        if not dt.shape and values.size:
            if np.issubdtype(dt, np.integer):
                v = values.astype(np.int64)
                if dt.itemsize < 8 or (np.abs(values.astype(np.float64)) < MAX_INT_FIELD).all():
                    # up to 32-bit integers lie within the limit (2**45)
                    if dt.itemsize <= 4 or (np.abs(v) < MAX_INT_FIELD).all():
                        write_int_sequence(writer, side, v, INT_PERIODS)
                        return [name, "int", 0.0, 1]
            elif np.issubdtype(dt, np.floating):
                f = values.astype(np.float64)
                if np.isfinite(f).all():
                    if (f == np.round(f)).all() and (np.abs(f) < 2 ** 31).all() and not (
                            np.signbit(f) & (f == 0)).any():
                        write_int_sequence(writer, side, f.astype(np.int64), INT_PERIODS)
                        return [name, "int", 0.0, 1]
                    step = self._step_for(name)
                    if step > 0:
                        # The decoder stores k * step in the field's type: shrink the
                        # step by what that rounding can add (half an ulp of the value),
                        # so that |error| <= step / 2 holds after it too.
                        margin = 2.0 * (float(np.abs(f).max()) + step) * float(np.finfo(dt).eps)
                        step = step - margin if margin < step / 2 else 0.0
                    if step > 0 and (np.abs(f) / step < MAX_QUANT).all():
                        k = np.round(f / step).astype(np.int64)
                        g = int(np.gcd.reduce(k)) if k.any() else 1
                        g = max(g, 1)
                        write_int_sequence(writer, side, k // g, INT_PERIODS)
                        return [name, "quant", step, g]
        raw_parts.append(byte_shuffle(values))
        return [name, "raw", 0.0, 1]

    # --- decode ---------------------------------------------------------------

    def _decode(self, c: Container) -> PointCloudFrame:
        if len(c.sections) != 3:
            raise WireFormatError(f"rangecode payload needs 3 sections, has {len(c.sections)}")
        records, height, width = empty_cloud_from_meta(c.metadata, c.modality)
        meta = c.metadata
        order = meta.get("order", "keep")
        if order not in ORDERS:
            raise WireFormatError(f"unknown point order {order!r} (this decoder knows {ORDERS})")
        n = records.size
        dtypes = [records.dtype[a] for a in ("x", "y", "z")]
        for dt in dtypes:
            if dt.shape or dt.newbyteorder("<") not in _EPS:
                raise WireFormatError(f"rangecode payload has x/y/z of type {dt}")
        eps = max(_EPS[dt.newbyteorder("<")] for dt in dtypes)
        side = SideReader(c.sections[0])
        reader = StreamReader(c.sections[1])
        raw_len = meta_get(meta, "raw_bytes")
        raw = b""
        if raw_len:
            raw = zstd_decompress_exact(c.sections[2], raw_len, "raw section")
        raw_pos = 0

        def take_raw(dtype, count):
            nonlocal raw_pos
            size = dtype.itemsize * count
            if raw_pos + size > len(raw):
                raise WireFormatError("raw section ends early")
            out = byte_unshuffle(raw[raw_pos:raw_pos + size], dtype, count)
            raw_pos += size
            return out

        dup_runs = read_int_sequence(reader, side, meta_get(meta, "dup_runs"))
        dup = _mask_from_runs(dup_runs, n)
        lags = read_int_sequence(reader, side, int(dup.sum()))
        uniq = np.flatnonzero(~dup)
        m = uniq.size
        u = np.zeros(m, records.dtype)

        bound = float(meta_get(meta, "bound", (int, float)))
        class_bounds = meta.get("semantic_bounds")
        limit_exp = meta_get(meta, "coord_limit_exp")
        limit = 2.0 ** limit_exp

        plans = meta_get(meta, "field_plan", list)
        for plan in plans:
            if not (isinstance(plan, list) and len(plan) == 4 and plan[0] in records.dtype.names):
                raise WireFormatError(f"bad field plan {plan!r}")
            name, kind, step, g = plan
            dt = records.dtype[name]
            if kind == "int":
                u[name] = read_int_sequence(reader, side, m).astype(dt)
            elif kind == "quant":
                k = read_int_sequence(reader, side, m)
                u[name] = (k * int(g) * float(step)).astype(dt)
            elif kind == "raw":
                u[name] = take_raw(dt.base if dt.shape else dt, m * max(1, int(np.prod(dt.shape)))
                                   ).reshape((m,) + dt.shape)
            else:
                raise WireFormatError(f"unknown field coding {kind!r} for {name!r}")

        vruns = read_int_sequence(reader, side, meta_get(meta, "verbatim_runs"))
        verbatim_mask = _mask_from_runs(vruns, m)
        verbatim = np.flatnonzero(verbatim_mask)
        idx = np.flatnonzero(~verbatim_mask)
        for axis in ("x", "y", "z"):
            dt = records.dtype[axis]
            u[axis][verbatim] = take_raw(dt, verbatim.size)

        if class_bounds is not None:
            if CLASS_FIELD not in records.dtype.names:
                raise WireFormatError("semantic payload without a class field")
            bound = float(meta_get(meta, "semantic_default", (int, float)))
            per_point = bounds_for_classes(u[CLASS_FIELD][idx], bound,
                                           {int(k): float(v) for k, v in class_bounds})
            q = predict.grid_step(per_point, limit, eps)
        else:
            q = np.full(idx.size, predict.grid_step(bound, limit, eps))
        q0 = float(predict.grid_step(bound, limit, eps))

        mode = meta.get("geometry_mode", "beams")
        if mode == "sequence":
            step = float(q.min()) if q.size else 1.0
            recon = sequence.decode_sequence(reader, side, idx.size, sequence.MAX_LAG) * step
        elif mode == "spherical":
            recon = sequence.decode_spherical(reader, side, q, q0, self._azimuth_ref(meta))
        elif mode == "beams":
            source = meta.get("beam_source", "")
            if source and source not in records.dtype.names:
                raise WireFormatError(f"beam source field {source!r} is not in the layout")
            in_order = _mask_from_runs(
                read_int_sequence(reader, side, meta_get(meta, "near_runs")), idx.size)
            near = np.empty_like(in_order)
            if source:
                rings = (u[source] if idx.size == m else u[source][idx]).astype(np.int64)
                mask_order = coded_order(rings)
                near[mask_order] = in_order
                # the stable sort by ring of every point, restricted to the
                # far ones, is their coded order: no second sort
                far_coded = mask_order[~in_order]
                beams_coded = rings[far_coded]
            else:
                near[:] = in_order
                far = np.flatnonzero(~near)
                beams = read_int_sequence(reader, side, far.size)
                order = coded_order(beams)
                far_coded, beams_coded = far[order], beams[order]
            q_coded = q[far_coded]
            az_ref = self._azimuth_ref(meta)
            R, A, El, C = predict.decode_geometry(reader, side, q_coded, q0, beams_coded,
                                                  self.model, scale_index(bound))
            # the two parts go straight to their points (no interleaved copy)
            parts = [(far_coded, predict.reconstruct(R, A, El, C, q_coded, q0, None, az_ref))]
            qn = q[near]
            step = float(qn.min()) if qn.size else 1.0
            parts.append((np.flatnonzero(near), sequence.decode_sequence(
                reader, side, qn.size, sequence.MAX_LAG) * step))
        else:
            raise WireFormatError(f"unknown geometry mode {mode!r} (this decoder knows "
                                  "'beams', 'sequence' and 'spherical')")
        origin_mm = meta.get("origin_mm", [0, 0, 0])
        if not (isinstance(origin_mm, list) and len(origin_mm) == 3
                and all(isinstance(v, int) and abs(v) < 2 ** 40 for v in origin_mm)):
            raise WireFormatError(f"bad origin_mm {origin_mm!r}: three integers expected")
        origin = np.asarray(origin_mm, np.int64) * 1e-3
        if mode != "beams":
            parts = [(slice(None), recon)]
        # every point on the grid (the common case): no index through idx
        parts = [(where if idx.size == m else idx[where], rec) for where, rec in parts]
        for k, axis in enumerate(("x", "y", "z")):
            column = u[axis]
            for where, rec in parts:
                column[where] = rec[:, k] + origin[k]

        if m == n:  # no copies: the unique records are the cloud
            records = u
        else:
            records[uniq] = u
        if dup.any():
            src = np.flatnonzero(dup) - lags
            if (lags < 1).any() or (src < 0).any():
                raise WireFormatError("duplicate record refers outside the cloud")
            # Sources are earlier records; a source may itself be a copy, so
            # resolve in order (chains are short: copies point to a first record).
            for _ in range(64):
                records[np.flatnonzero(dup)] = records[src]
                if not dup[src].any():
                    break
        return PointCloudFrame(records, c.modality, height, width, c.stamp_ns, c.frame_id)


def in_scan_order(points: np.ndarray, origin: np.ndarray | None = None) -> bool:
    """True when consecutive points are mostly neighbours in azimuth (median
    step below ``SCAN_ORDER_MAX_STEP`` degrees over up to ``SCAN_ORDER_SAMPLE``
    consecutive points from the middle of the cloud), as in a sensor's own
    order (KITTI 0.18, nuScenes 0.09, View-of-Delft 2.9 degrees; a shuffled
    cloud about 100)."""
    start = max(0, (points.size - SCAN_ORDER_SAMPLE) // 2)
    points = points[start:start + SCAN_ORDER_SAMPLE]
    xyz = np.stack([points[a].astype(np.float64) for a in ("x", "y", "z")], axis=1)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if xyz.shape[0] < 3:
        return True
    if origin is not None:
        xyz -= np.asarray(origin, np.float64)
    step = np.abs(np.diff(np.arctan2(xyz[:, 1], xyz[:, 0])))
    step = np.minimum(step, 2 * np.pi - step)
    return bool(np.degrees(np.median(step)) < SCAN_ORDER_MAX_STEP)


def sorted_orders(points: np.ndarray, origin: np.ndarray | None = None
                  ) -> list[tuple[str, np.ndarray]]:
    """Candidate orders of ``order = sorted`` as (scheme, permutation):
    decoded point i is input point ``perm[i]``; elevation and azimuth are
    seen from ``origin`` (default (0, 0, 0))."""
    return [("scan", scan_order(points, origin)),
            ("elevation_azimuth", elevation_azimuth_order(points, origin))]


def scan_order(points: np.ndarray, origin: np.ndarray | None = None) -> np.ndarray:
    """The input order with each exact copy of a record right behind its
    first occurrence (``origin`` is not used)."""
    index = np.arange(points.size)
    first = _find_duplicates(points)
    return np.lexsort((index, first)) if (first != index).any() else index


def elevation_azimuth_order(points: np.ndarray, origin: np.ndarray | None = None
                            ) -> np.ndarray:
    """Finite points by elevation band, then azimuth (both seen from
    ``origin``), then input order; non-finite points last, in input order."""
    n = points.size
    index = np.arange(n)
    xyz = np.empty((n, 3))
    for k, axis in enumerate(("x", "y", "z")):
        xyz[:, k] = points[axis]
    finite = np.isfinite(xyz[:, 0]) & np.isfinite(xyz[:, 1]) & np.isfinite(xyz[:, 2])
    if origin is not None:
        xyz -= np.asarray(origin, np.float64)
    _, azimuth, elevation = spherical(np.where(finite[:, None], xyz, 0.0))
    band = np.floor(np.degrees(elevation) / SORT_ELEVATION_BAND).astype(np.int64)
    # non-finite points after every band, in input order
    band[~finite] = int(band[finite].max()) + 1 if finite.any() else 0
    azimuth[~finite] = 0.0
    return np.lexsort((index, azimuth, band))


def q_to_bound(q, bound, class_bounds, u, idx) -> np.ndarray:
    """Per-point Euclidean bound the encoder verifies against."""
    if class_bounds is None:
        return np.full(idx.size, bound)
    return bounds_for_classes(u[CLASS_FIELD][idx], bound, dict(class_bounds))
