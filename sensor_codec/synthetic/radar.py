"""Forward-looking 3+1D automotive radar (detection list), like the ZF
FRGen21 of the View-of-Delft dataset.

The field of view is sampled by a grid of rays; each hit is a candidate
scatterer. Candidates are binned into range x azimuth x elevation
resolution cells and a cell yields at most one detection, with a
probability set by the material (metal cars, poles and signs reflect
well, foliage and people poorly) and by range and incidence. Detections
get measurement noise, a radar cross section and a Doppler velocity; a few
clutter detections (multipath ghosts, road debris) are added.

Fields, in the radar frame (x forward, y left, z up): x, y, z (m), rcs
(dBsm), v_r (m/s), v_r_compensated (m/s), time (s), all float32.
Sign convention: ``v_r`` is the range rate of the target relative to the
moving sensor, negative when the target approaches (range decreasing).
``v_r_compensated`` has the ego's own motion removed, i.e. it is the
target's velocity over ground projected on the line of sight: zero
(plus noise) for static objects. All detections of a frame come from one
measurement cycle, so ``time`` is 0 (the field is kept so that clouds
accumulated over several cycles can hold each detection's age).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..frames import Modality, PointCloudFrame
from .raycast import GROUND_HIT, NO_HIT, RayGrid, cast, sphere_window, surface_hits
from .scene import Label, Scene

RADAR_FIELDS = ("x", "y", "z", "rcs", "v_r", "v_r_compensated", "time")


@dataclass(frozen=True)
class RadarSpec:
    rate_hz: float = 13.0
    azimuth_fov_deg: float = 120.0
    elevation_fov_deg: float = 20.0
    ray_step_deg: float = 0.4
    max_range_m: float = 100.0
    range_cell_m: float = 0.4
    azimuth_cell_deg: float = 1.5
    elevation_cell_deg: float = 2.5
    range_noise_m: float = 0.05
    azimuth_noise_deg: float = 0.3
    elevation_noise_deg: float = 0.8
    velocity_noise_mps: float = 0.05
    rcs_noise_db: float = 2.0
    clutter_per_frame: float = 6.0
    max_detections: int = 500

    def __post_init__(self):
        if not 0 < self.azimuth_fov_deg < 180 or not 0 < self.elevation_fov_deg < 90:
            raise ConfigError(f"radar field of view must be below 180 x 90 degrees, got "
                              f"{self.azimuth_fov_deg} x {self.elevation_fov_deg}")
        if not self.rate_hz > 0 or not self.max_range_m > 0 or not self.ray_step_deg > 0:
            raise ConfigError("radar rate, range and ray step must be positive")


@dataclass
class RadarScan:
    frame: PointCloudFrame
    labels: np.ndarray     # per detection, CamVid id of the surface (0: clutter)
    prim_ids: np.ndarray   # per detection, primitive index (-2 ground, -1 clutter)


class RadarRenderer:
    """A radar on the ego, axes aligned with the ego's, at ``offset``."""

    def __init__(self, scene: Scene, spec: RadarSpec, offset: np.ndarray):
        self.scene = scene
        self.spec = spec
        self.offset = np.asarray(offset, dtype=np.float64)
        step = np.radians(spec.ray_step_deg)
        half_az = np.radians(spec.azimuth_fov_deg) / 2
        half_el = np.radians(spec.elevation_fov_deg) / 2
        self.azimuths = np.arange(-half_az + step / 2, half_az, step)
        self.elevations = np.arange(-half_el + step / 2, half_el, step)
        el, az = np.meshgrid(self.elevations, self.azimuths, indexing="ij")
        dirs = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))
        zero = np.zeros((1, 1), dtype=np.float32)
        self.grid = RayGrid(zero, zero, zero, *(d.astype(np.float32) for d in dirs))
        self.dirs_flat = np.stack([d.reshape(-1) for d in dirs])
        self.ray_az = az.reshape(-1)
        self.ray_el = el.reshape(-1)

    def position(self, t: float) -> np.ndarray:
        return self.scene.ego.position(t) + self.offset

    def blocks(self, lo: np.ndarray, hi: np.ndarray):
        step = np.radians(self.spec.ray_step_deg)
        az_lo, az_hi, el_lo, el_hi, full, d_min = sphere_window(lo - 0.05, hi + 0.05)
        a0 = self.azimuths[0] - step / 2
        e0 = self.elevations[0] - step / 2
        w, h = len(self.azimuths), len(self.elevations)
        c0 = np.clip(np.floor((az_lo - a0) / step) - 1, 0, w).astype(np.int64)
        c1 = np.clip(np.ceil((az_hi - a0) / step) + 1, 0, w).astype(np.int64)
        r0 = np.clip(np.floor((el_lo - e0) / step) - 1, 0, h).astype(np.int64)
        r1 = np.clip(np.ceil((el_hi - e0) / step) + 1, 0, h).astype(np.int64)
        c0 = np.where(full, 0, c0)
        c1 = np.where(full, w, c1)
        keep = (d_min <= self.spec.max_range_m) & (c1 > c0) & (r1 > r0) & (hi[:, 0] > 0)
        return [(int(k), int(r0[k]), int(r1[k]), int(c0[k]), int(c1[k]))
                for k in np.flatnonzero(keep)]

    def scan(self, t: float, *, noise_seed: int | tuple = 0, stamp_ns: int = 0,
             frame_id: str = "radar") -> RadarScan:
        spec = self.spec
        scene = self.scene
        prims = scene.prims
        rng = np.random.default_rng(np.atleast_1d(noise_seed).tolist() + [11])
        pos = self.position(t)
        ego_v = scene.ego.velocity(t)
        centers_rel = prims.centers_at(t) - pos
        lo, hi = prims.aabb(centers_rel)
        rng_t, ids = cast(self.grid, prims, centers_rel, self.blocks(lo, hi), ground_z=-pos[2],
                          max_t=spec.max_range_m)
        flat_ids = ids.reshape(-1)
        flat_t = rng_t.reshape(-1).astype(np.float64)
        hit = np.flatnonzero(flat_ids != NO_HIT)
        ids_hit = flat_ids[hit]
        ranges = flat_t[hit]
        d = self.dirs_flat[:, hit]

        # Per candidate: material, incidence and the target's velocity.
        material = np.where(ids_hit == GROUND_HIT, 0, prims.material[np.maximum(ids_hit, 0)])
        cos_inc = np.abs(d[2])  # ground normal is +z
        velocity = np.zeros((3, len(hit)))
        for k in np.unique(ids_hit[ids_hit >= 0]):
            sel = np.flatnonzero(ids_hit == k)
            hits = surface_hits(prims, int(k), centers_rel[k], None, d[:, sel], ranges[sel])
            n = hits.normal
            cos_inc[sel] = np.abs(n[0] * d[0, sel] + n[1] * d[1, sel] + n[2] * d[2, sel])
            velocity[:, sel] = prims.velocity[k][:, None]

        # One detection at most per resolution cell: keep a random candidate.
        cell = np.stack([np.floor(ranges / spec.range_cell_m),
                         np.floor(self.ray_az[hit] / np.radians(spec.azimuth_cell_deg)),
                         np.floor(self.ray_el[hit] / np.radians(spec.elevation_cell_deg))])
        key = (cell[0] * 4096 + cell[1] + 2048) * 4096 + cell[2] + 2048
        order = np.lexsort((rng.random(len(hit)), key))
        first = order[np.concatenate([[True], np.diff(key[order]) != 0])] if len(order) else order
        p = (scene.material_radar_p[material[first]] * (0.5 + 0.5 * cos_inc[first])
             * np.clip(1.3 - ranges[first] / spec.max_range_m, 0.0, 1.0))
        chosen = first[rng.random(len(first)) < p]

        true_r = ranges[chosen]
        u = d[:, chosen]
        v_target = velocity[:, chosen]
        n = len(chosen)
        az = self.ray_az[hit][chosen] + rng.normal(0, np.radians(spec.azimuth_noise_deg), n)
        el = self.ray_el[hit][chosen] + rng.normal(0, np.radians(spec.elevation_noise_deg), n)
        r = true_r + rng.normal(0, spec.range_noise_m, n)
        rcs = (scene.material_rcs[material[chosen]] + 10 * np.log10(0.1 + cos_inc[chosen])
               + rng.normal(0, spec.rcs_noise_db, n))
        v_comp = np.einsum("in,in->n", v_target, u) + rng.normal(0, spec.velocity_noise_mps, n)
        v_r = v_comp - ego_v @ u
        labels = np.where(ids_hit[chosen] == GROUND_HIT, int(Label.ROAD),
                          prims.label[np.maximum(ids_hit[chosen], 0)])
        prim_ids = ids_hit[chosen]

        # Clutter: ghosts and debris, mostly static.
        m = rng.poisson(spec.clutter_per_frame)
        c_az = rng.uniform(self.azimuths[0], self.azimuths[-1], m)
        c_el = rng.uniform(np.radians(-2), np.radians(6), m)
        c_r = rng.uniform(3.0, 0.8 * spec.max_range_m, m)
        c_u = np.stack([np.cos(c_el) * np.cos(c_az), np.cos(c_el) * np.sin(c_az), np.sin(c_el)])
        c_comp = rng.normal(0, 0.3, m)
        az = np.concatenate([az, c_az])
        el = np.concatenate([el, c_el])
        r = np.concatenate([r, c_r])
        rcs = np.concatenate([rcs, rng.uniform(-20, -5, m)])
        v_comp = np.concatenate([v_comp, c_comp])
        v_r = np.concatenate([v_r, c_comp - ego_v @ c_u])
        labels = np.concatenate([labels, np.zeros(m, labels.dtype)]).astype(np.uint8)
        prim_ids = np.concatenate([prim_ids, np.full(m, NO_HIT)]).astype(np.int32)

        if len(r) > spec.max_detections:
            strongest = np.sort(np.argsort(-rcs, kind="stable")[:spec.max_detections])
            az, el, r, rcs, v_comp, v_r, labels, prim_ids = (
                a[strongest] for a in (az, el, r, rcs, v_comp, v_r, labels, prim_ids))
        fields = {"x": r * np.cos(el) * np.cos(az), "y": r * np.cos(el) * np.sin(az),
                  "z": r * np.sin(el), "rcs": rcs, "v_r": v_r, "v_r_compensated": v_comp,
                  "time": np.zeros(len(r))}
        fields = {k: v.astype(np.float32) for k, v in fields.items()}
        frame = PointCloudFrame.from_arrays(Modality.RADAR, stamp_ns=stamp_ns, frame_id=frame_id,
                                            **fields)
        return RadarScan(frame=frame, labels=labels, prim_ids=prim_ids)
