"""Spinning multi-beam lidar simulated by ray casting.

The sensor turns clockwise seen from above (azimuth decreasing), starting
and ending behind the vehicle, one full turn per sweep. Column ``c`` of
``W`` fires at ``time = c / W / rate_hz`` seconds after the sweep's stamp,
along azimuth ``pi - (c + 0.5) * 2 pi / W`` (0 = forward, +pi/2 = left).
Every beam of a column fires at once; ring ``r`` is the r-th lowest beam
(ring 0 points lowest). Points are given in the lidar frame (x forward, y
left, z up) *at their own firing time*, as a real driver's raw sweep is:
nothing is de-skewed, so the ego's motion during a sweep shows in the
cloud, and moving objects appear where they were when the beam passed.

Fields: x, y, z, intensity (float32), ring (uint16), time (float32,
seconds since the stamp). ``intensity`` is a calibrated reflectivity in
[0, 1] (retro-reflective signs and lane paint near 1, glass and dark paint
near 0), reduced at grazing incidence. Rays with no return (sky, beyond
``max_range``, too weak) are dropped, or kept as NaN x/y/z/intensity in an
organised ``beams x columns`` grid (row = ring) with ``organised=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..frames import Modality, PointCloudFrame
from .raycast import NO_HIT, RayGrid, cast, sphere_window, surface_hits
from .scene import Label, Scene


def hdl64_elevations() -> np.ndarray:
    """Velodyne HDL-64E beam elevations (degrees), lowest first: the lower
    block at 0.5 degree spacing, the upper block at 1/3 degree."""
    upper = 2.0 - np.arange(32) / 3.0
    lower = -8.83 - 0.5 * np.arange(32)
    return np.sort(np.concatenate([upper, lower]))


def default_elevations(beams: int) -> np.ndarray:
    """Beam elevations in degrees, lowest first, modelled on common sensors:
    64 beams: HDL-64E; 32: HDL-32E; 16: VLP-16; otherwise evenly spread
    over the HDL-64E's range (-24.33 to +2 degrees)."""
    if beams < 1:
        raise ConfigError(f"a lidar needs at least one beam, got {beams}")
    if beams == 64:
        return hdl64_elevations()
    if beams == 32:
        return -30.67 + np.arange(32) * (4.0 / 3.0)
    if beams == 16:
        return -15.0 + 2.0 * np.arange(16)
    if beams == 1:
        return np.array([0.0])
    return np.linspace(-24.33, 2.0, beams)


@dataclass(frozen=True)
class LidarSpec:
    """Sensor model. ``columns`` x ``beams`` rays per sweep: the default
    64 x 2048 at 10 Hz gives about 120k returns in the street scene (an
    HDL-64E gives ~2000 columns at 10 Hz)."""

    beams: int = 64
    columns: int = 2048
    rate_hz: float = 10.0
    max_range_m: float = 120.0
    min_range_m: float = 1.0
    range_noise_m: float = 0.015
    intensity_noise: float = 0.01
    beam_divergence_rad: float = 0.002
    elevations_deg: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.columns < 8:
            raise ConfigError(f"lidar columns must be at least 8, got {self.columns}")
        if not self.rate_hz > 0:
            raise ConfigError(f"lidar rate must be positive, got {self.rate_hz} Hz")
        if not 0 <= self.min_range_m < self.max_range_m:
            raise ConfigError(f"need 0 <= min_range < max_range, got {self.min_range_m}, "
                              f"{self.max_range_m}")
        elevations = self.elevations()
        if len(elevations) != self.beams:
            raise ConfigError(f"{len(elevations)} elevations given for {self.beams} beams")
        if np.any(np.diff(elevations) <= 0) or np.any(np.abs(elevations) >= 89):
            raise ConfigError("beam elevations must be strictly increasing and within +-89 degrees")

    def elevations(self) -> np.ndarray:
        if self.elevations_deg is not None:
            return np.asarray(self.elevations_deg, dtype=np.float64)
        return default_elevations(self.beams)

    def azimuths(self) -> np.ndarray:
        """Azimuth of each column in radians (pi down to -pi)."""
        return np.pi - (np.arange(self.columns) + 0.5) * (2 * np.pi / self.columns)

    def column_times(self) -> np.ndarray:
        """Firing time of each column in seconds after the sweep stamp."""
        return np.arange(self.columns) / self.columns / self.rate_hz


@dataclass
class LidarScan:
    """One sweep: the published frame plus ground truth for tests and tools."""

    frame: PointCloudFrame
    labels: np.ndarray        # per point, CamVid id of the surface hit (0 for no return)
    prim_ids: np.ndarray      # per point, primitive index (-2 ground, -1 none)
    true_range: np.ndarray    # per point, noise-free range in metres (inf: none)
    columns: np.ndarray       # per point, column index
    extras: dict = field(default_factory=dict)


# Surfaces brighter than this in the reflectivity channel are retro-reflective
# (signs, lane paint): their return barely depends on the incidence angle.
RETROREFLECTIVE = 0.7


class LidarRenderer:
    """Simulates sweeps of a lidar mounted on the ego (axes aligned with
    the ego's: x forward, y left, z up) at ``offset`` from the ego's
    reference point."""

    def __init__(self, scene: Scene, spec: LidarSpec, offset: np.ndarray):
        self.scene = scene
        self.spec = spec
        self.offset = np.asarray(offset, dtype=np.float64)
        el = np.radians(spec.elevations())
        az = spec.azimuths()
        self.elevations = el
        self.azimuths = az
        cos_el = np.cos(el)[:, None]
        self.dirs = (np.float32(cos_el * np.cos(az)[None, :]),
                     np.float32(cos_el * np.sin(az)[None, :]),
                     np.float32(np.broadcast_to(np.sin(el)[:, None], (len(el), len(az)))))
        self.dirs = tuple(np.ascontiguousarray(d, dtype=np.float32) for d in self.dirs)
        self.column_times = spec.column_times()

    def position(self, t: float) -> np.ndarray:
        return self.scene.ego.position(t) + self.offset

    def _column_of(self, azimuth: np.ndarray) -> np.ndarray:
        """Continuous column coordinate of an azimuth (inverse of azimuths())."""
        w = self.spec.columns
        return np.mod((np.pi - azimuth) / (2 * np.pi) * w - 0.5, w)

    def _object_times(self, t0: float, ref: np.ndarray) -> np.ndarray:
        """Per primitive, the time at which it is seen: moving objects are
        placed where they were when the beam swept across their centre."""
        prims = self.scene.prims
        period = 1.0 / self.spec.rate_hz
        times = np.full(len(prims), t0 + 0.5 * period)
        moving = np.flatnonzero(prims.moving)
        if len(moving):
            objects, inverse = np.unique(prims.object_id[moving], return_inverse=True)
            centres = prims.centers_at(times)[moving] - ref
            counts = np.bincount(inverse)
            mean = np.stack([np.bincount(inverse, centres[:, i]) / counts for i in range(2)],
                            axis=1)
            col = self._column_of(np.arctan2(mean[:, 1], mean[:, 0]))
            times[moving] = t0 + (col / self.spec.columns * period)[inverse]
        return times

    def blocks(self, lo: np.ndarray, hi: np.ndarray, sweep_shift: float):
        """Azimuth x elevation window of every primitive within range."""
        spec = self.spec
        w = spec.columns
        grow = np.array([sweep_shift + 0.05, 0.05, 0.05])
        az_lo, az_hi, el_lo, el_hi, full, d_min = sphere_window(lo - grow, hi + grow)
        margin = 0.003
        r0 = np.searchsorted(self.elevations, el_lo - margin, side="left")
        r1 = np.searchsorted(self.elevations, el_hi + margin, side="right")
        # Columns run with decreasing azimuth: the window's high azimuth is
        # its first column.
        c_first = np.floor((np.pi - az_hi) / (2 * np.pi) * w - 0.5 - 1).astype(np.int64)
        c_last = np.ceil((np.pi - az_lo) / (2 * np.pi) * w - 0.5 + 1).astype(np.int64) + 1
        keep = (d_min <= spec.max_range_m) & (r1 > r0)
        out = []
        for k in np.flatnonzero(keep):
            a, b = int(c_first[k]), int(c_last[k])
            if full[k] or b - a >= w:
                out.append((int(k), int(r0[k]), int(r1[k]), 0, w))
                continue
            a_mod = a % w
            end = a_mod + (b - a)
            if end <= w:
                out.append((int(k), int(r0[k]), int(r1[k]), a_mod, end))
            else:
                out.append((int(k), int(r0[k]), int(r1[k]), a_mod, w))
                out.append((int(k), int(r0[k]), int(r1[k]), 0, end - w))
        return out

    def scan(self, t0: float, *, noise_seed: int | tuple = 0, noise: bool = True,
             organised: bool = False, stamp_ns: int = 0, frame_id: str = "lidar") -> LidarScan:
        """Simulate the sweep that starts at ``t0`` seconds into the drive."""
        spec = self.spec
        scene = self.scene
        prims = scene.prims
        period = 1.0 / spec.rate_hz
        ref = self.position(t0 + 0.5 * period)
        origins = self.position(t0 + self.column_times) - ref
        ox, oy, oz = (origins[:, i].astype(np.float32)[None, :] for i in range(3))
        grid = RayGrid(ox, oy, oz, *self.dirs)
        times = self._object_times(t0, ref)
        centers_rel = prims.centers_at(times) - ref
        lo, hi = prims.aabb(centers_rel)
        sweep_shift = float(np.max(np.abs(origins[:, :2]))) if len(origins) else 0.0
        blocks = self.blocks(lo, hi, sweep_shift)
        rng_t, ids = cast(grid, prims, centers_rel, blocks, ground_z=-ref[2],
                          max_t=spec.max_range_m)
        h, w = ids.shape
        flat_ids = ids.reshape(-1)
        flat_t = rng_t.reshape(-1)
        reflect = np.zeros(h * w, dtype=np.float32)
        cos_inc = np.ones(h * w, dtype=np.float32)
        labels = np.zeros(h * w, dtype=np.uint8)
        dirs_flat = np.stack([d.reshape(-1) for d in self.dirs])
        col_index = np.tile(np.arange(w), h)
        org_flat = origins.T.astype(np.float32)  # (3, W)

        order = np.argsort(flat_ids, kind="stable")
        counts = np.bincount(flat_ids + 2, minlength=len(prims) + 2)
        starts = np.concatenate([[0], np.cumsum(counts)])
        div = np.float32(spec.beam_divergence_rad)

        ground = order[starts[0]:starts[1]]
        if len(ground):
            d = dirs_flat[:, ground]
            tg = flat_t[ground]
            o = org_flat[:, col_index[ground]]
            c = np.maximum(np.abs(d[2]), np.float32(0.01))
            x = ref[0] + o[0] + tg * d[0]
            y = ref[1] + o[1] + tg * d[1]
            rgba = scene.ground_rgba(x, y, tg * div / c)
            reflect[ground] = rgba[3]
            cos_inc[ground] = c
            labels[ground] = Label.ROAD
        for k in np.flatnonzero(counts[2:]):
            pix = order[starts[k + 2]:starts[k + 3]]
            d = dirs_flat[:, pix]
            tk = flat_t[pix]
            hits = surface_hits(prims, int(k), centers_rel[k], org_flat[:, col_index[pix]], d, tk)
            n = hits.normal
            c = np.maximum(np.abs(n[0] * d[0] + n[1] * d[1] + n[2] * d[2]), np.float32(0.01))
            rgba = scene.surface_rgba(int(k), hits, tk * div / c)
            reflect[pix] = rgba[3]
            cos_inc[pix] = c
            labels[pix] = prims.label[k]

        hit = flat_ids != NO_HIT
        retro = reflect > RETROREFLECTIVE
        intensity = np.where(retro, reflect, reflect * (0.3 + 0.7 * cos_inc)).astype(np.float32)
        measured = flat_t.astype(np.float32)
        if noise:
            rng = np.random.default_rng(np.atleast_1d(noise_seed).tolist() + [5])
            measured = measured + rng.normal(0.0, spec.range_noise_m, h * w).astype(np.float32)
            intensity = intensity + rng.normal(0.0, spec.intensity_noise, h * w).astype(np.float32)
            # Weak echoes (dark, grazing, far) are lost; a few rays drop at random.
            with np.errstate(divide="ignore"):
                p_return = np.clip(3.0 * intensity * (80.0 / flat_t) ** 2, 0.0, 1.0)
            hit &= rng.random(h * w) < np.minimum(p_return, 0.998)
        np.clip(intensity, 0.0, 1.0, out=intensity)
        hit &= (measured >= spec.min_range_m) & (measured <= spec.max_range_m)
        xyz = dirs_flat * np.where(hit, measured, np.float32(0))
        time = np.float32(self.column_times)[col_index]
        ring = np.repeat(np.arange(h, dtype=np.uint16), w)
        true_range = np.where(hit, flat_t, np.inf)
        prim_ids = np.where(hit, flat_ids, NO_HIT)
        labels = np.where(hit, labels, 0).astype(np.uint8)

        if organised:
            nan = np.float32(np.nan)
            fields = {"x": np.where(hit, xyz[0], nan), "y": np.where(hit, xyz[1], nan),
                      "z": np.where(hit, xyz[2], nan), "intensity": np.where(hit, intensity, nan),
                      "ring": ring, "time": time}
            height, select = h, slice(None)
        else:
            # Firing order: column by column, rings ascending within a column.
            firing = np.arange(h * w).reshape(h, w).T.reshape(-1)
            select = firing[hit[firing]]
            fields = {"x": xyz[0][select], "y": xyz[1][select], "z": xyz[2][select],
                      "intensity": intensity[select], "ring": ring[select], "time": time[select]}
            height = 1
        fields = {k: np.ascontiguousarray(v, dtype=np.uint16 if k == "ring" else np.float32)
                  for k, v in fields.items()}
        frame = PointCloudFrame.from_arrays(Modality.LIDAR, height=height, stamp_ns=stamp_ns,
                                            frame_id=frame_id, **fields)
        return LidarScan(frame=frame, labels=labels[select], prim_ids=prim_ids[select],
                         true_range=true_range[select], columns=col_index[select])
