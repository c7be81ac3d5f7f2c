"""Pinhole camera renderer: RGB, semantic labels (CamVid ids) and depth.

One ray per pixel centre, cast against every primitive inside its screen
rectangle (see :mod:`.raycast`). Shading is Lambert with a sun and a sky
fill, procedural textures with mip-mapping, distance haze, a mild optical
blur and signal-dependent sensor noise, so that compressors see content
with realistic statistics (texture, edges, noise) rather than flat colour.

Conventions: the camera frame is the ROS optical frame (x right, y down,
z forward); pixel (u, v) has its centre at integer coordinates, so a point
at camera coordinates (x, y, z) lands on pixel
``(round(fx x / z + cx), round(fy y / z + cy))``. Depth is z in metres,
``inf`` for the sky.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .raycast import (BOX, CYLINDER, ELLIPSOID, RayGrid, box_hit, cast, cylinder_hit,
                      ellipsoid_hit, surface_hits)
from .scene import KERB_HEIGHT, Label, Scene, unpack_rgba

SUN_DIRECTION = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])
SUN_RGB = np.array([1.0, 0.96, 0.88], dtype=np.float32) * 0.95
SKY_FILL_RGB = np.array([0.55, 0.62, 0.75], dtype=np.float32) * 0.5
HAZE_RGB = np.array([0.72, 0.78, 0.86], dtype=np.float32)
HAZE_DISTANCE_M = 700.0
NEAR_M = 0.05

# 12 edges of a box given its 8 corners indexed by bits (x, y, z).
_BOX_EDGES = np.array([(a, a | bit) for bit in (1, 2, 4) for a in range(8) if not a & bit])


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of a distortion-free pinhole camera."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self):
        if self.width < 2 or self.height < 2:
            raise ConfigError(f"camera size must be at least 2x2, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ConfigError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float = 70.0) -> "PinholeCamera":
        if not 1.0 < horizontal_fov_deg < 170.0:
            raise ConfigError(f"horizontal field of view must be in (1, 170) degrees, "
                              f"got {horizontal_fov_deg}")
        f = (width / 2) / np.tan(np.radians(horizontal_fov_deg) / 2)
        return cls(int(width), int(height), float(f), float(f), (width - 1) / 2, (height - 1) / 2)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """(n, 3) optical-frame points -> (n, 2) pixel coordinates (u, v)."""
        z = points_cam[:, 2]
        return np.stack([self.fx * points_cam[:, 0] / z + self.cx,
                         self.fy * points_cam[:, 1] / z + self.cy], axis=1)


def optical_to_body(pitch_down_rad: float) -> np.ndarray:
    """Rotation taking optical-frame vectors to a body frame (x forward,
    y left, z up) for a camera looking forward, pitched down by the angle."""
    c, s = np.cos(pitch_down_rad), np.sin(pitch_down_rad)
    x_opt = [0.0, -1.0, 0.0]
    z_opt = [c, 0.0, -s]
    y_opt = np.cross(z_opt, x_opt)
    return np.stack([x_opt, y_opt, z_opt], axis=1)


@dataclass
class CameraImage:
    rgb: np.ndarray      # H x W x 3 uint8
    labels: np.ndarray   # H x W uint8, CamVid ids
    depth: np.ndarray    # H x W float32, metres along the optical axis (inf: sky)
    ids: np.ndarray      # H x W int32 primitive index (-1 sky, -2 ground)


class CameraRenderer:
    """Renders the scene from a camera rigidly mounted on the ego.

    ``rotation`` maps optical-frame vectors to world vectors (the ego does
    not turn on its straight road, so it is fixed); ``offset`` is the
    camera position relative to the ego's reference point, in world axes.
    """

    def __init__(self, scene: Scene, camera: PinholeCamera, rotation: np.ndarray,
                 offset: np.ndarray, *, far_m: float = 400.0, noise: bool = True,
                 blur: bool = True):
        self.scene = scene
        self.camera = camera
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.offset = np.asarray(offset, dtype=np.float64)
        self.far_m = float(far_m)
        self.noise = noise
        self.blur = blur
        w, h = camera.width, camera.height
        u = (np.arange(w, dtype=np.float64) - camera.cx) / camera.fx
        v = (np.arange(h, dtype=np.float64) - camera.cy) / camera.fy
        r = self.rotation
        # World-oriented ray directions with unit optical z: t is the depth.
        dirs = [(r[i, 0] * u[None, :] + r[i, 1] * v[:, None] + r[i, 2]).astype(np.float32)
                for i in range(3)]
        zero = np.zeros((1, 1), dtype=np.float32)
        self.grid = RayGrid(zero, zero, zero, *dirs)
        self.dirs_flat = np.stack([d.reshape(-1) for d in dirs])  # (3, H*W)
        self.ray_length = np.sqrt(np.sum(self.dirs_flat ** 2, axis=0))
        self.sky = self._sky(self.dirs_flat / self.ray_length)

    def _sky(self, unit: np.ndarray) -> np.ndarray:
        """Sky colour per ray, (3, n) linear RGB: a zenith-to-horizon gradient
        with soft clouds fixed to directions (the sky does not move with the
        ego)."""
        elevation = np.clip(unit[2], 0.0, 1.0)
        grad = np.sqrt(elevation)
        zenith = np.array([0.18, 0.32, 0.62], dtype=np.float32)[:, None]
        horizon = np.array([0.62, 0.70, 0.82], dtype=np.float32)[:, None]
        colour = horizon * (1 - grad) + zenith * grad
        # Clouds on a plane high above: tile coordinates are the direction's
        # intersection with it, so they shrink in perspective to the horizon.
        clouds = self.scene.textures["clouds"]
        up = np.maximum(unit[2], 0.02)
        scale = 0.12
        footprint = scale / (self.camera.fx * up * up)
        cover = unpack_rgba(clouds.sample(scale * unit[0] / up, scale * unit[1] / up,
                                          footprint))[0]
        cover *= np.clip((unit[2] - 0.01) * 20.0, 0.0, 1.0)  # fade out into the haze
        white = np.array([0.92, 0.92, 0.94], dtype=np.float32)[:, None]
        shade = 1.0 - 0.25 * cover  # thick clouds are greyer underneath
        return (colour * (1 - 0.85 * cover) + white * shade * 0.85 * cover).astype(np.float32)

    def position(self, t: float) -> np.ndarray:
        return self.scene.ego.position(t) + self.offset

    def blocks(self, centers_rel: np.ndarray):
        """Screen rectangle of every primitive that can be visible, as
        ``(index, row0, row1, col0, col1)``."""
        lo, hi = self.scene.prims.aabb(centers_rel)
        return self.screen_rects(lo, hi)

    def screen_rects(self, lo: np.ndarray, hi: np.ndarray, candidates: np.ndarray | None = None):
        """Screen rectangles of axis-aligned boxes (camera-centred world
        coordinates): the projection of each box clipped at the near plane, so
        boxes beside or partly behind the camera still get an exact bound."""
        nearest = np.linalg.norm(np.clip(0.0, lo, hi), axis=1)
        keep = nearest < self.far_m
        if candidates is not None:
            keep &= candidates
        keep = np.flatnonzero(keep)
        lo, hi = lo[keep], hi[keep]
        bits = np.arange(8)
        corners = np.stack([np.where(bits & 1, hi[:, None, 0], lo[:, None, 0]),
                            np.where(bits & 2, hi[:, None, 1], lo[:, None, 1]),
                            np.where(bits & 4, hi[:, None, 2], lo[:, None, 2])], axis=2)
        cam = corners @ self.rotation  # world -> optical
        a, b = cam[:, _BOX_EDGES[:, 0]], cam[:, _BOX_EDGES[:, 1]]
        za, zb = a[..., 2], b[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (NEAR_M - za) / (zb - za)
            cut = a + s[..., None] * (b - a)
        points = np.concatenate([a, b, cut], axis=1)
        valid = np.concatenate([za > NEAR_M, zb > NEAR_M, (za > NEAR_M) != (zb > NEAR_M)], axis=1)
        z = np.where(valid, np.maximum(points[..., 2], NEAR_M), 1.0)
        c = self.camera
        u = c.fx * points[..., 0] / z + c.cx
        v = c.fy * points[..., 1] / z + c.cy
        big = np.inf
        u0 = np.where(valid, u, big).min(axis=1)
        u1 = np.where(valid, u, -big).max(axis=1)
        v0 = np.where(valid, v, big).min(axis=1)
        v1 = np.where(valid, v, -big).max(axis=1)
        any_valid = valid.any(axis=1)
        w, h = c.width, c.height
        col0 = np.clip(np.floor(u0), 0, w).astype(np.int64)
        col1 = np.clip(np.ceil(u1) + 1, 0, w).astype(np.int64)
        row0 = np.clip(np.floor(v0), 0, h).astype(np.int64)
        row1 = np.clip(np.ceil(v1) + 1, 0, h).astype(np.int64)
        ok = any_valid & (col1 > col0) & (row1 > row0)
        return [(int(k), int(r0), int(r1), int(c0), int(c1)) for k, r0, r1, c0, c1
                in zip(keep[ok], row0[ok], row1[ok], col0[ok], col1[ok])]

    def render(self, t: float, noise_seed: int | tuple = 0) -> CameraImage:
        """Render the scene at time ``t`` (seconds since the drive start)."""
        scene = self.scene
        prims = scene.prims
        cam_pos = self.position(t)
        centers_rel = prims.centers_at(t) - cam_pos
        blocks = self.blocks(centers_rel)
        depth, ids = cast(self.grid, prims, centers_rel, blocks, ground_z=-cam_pos[2],
                          max_t=self.far_m)
        h, w = ids.shape
        flat_ids = ids.reshape(-1)
        flat_t = depth.reshape(-1)
        colour = np.empty((3, h * w), dtype=np.float32)
        labels = np.zeros(h * w, dtype=np.uint8)

        order = np.argsort(flat_ids, kind="stable")
        counts = np.bincount(flat_ids + 2, minlength=len(prims) + 2)
        starts = np.concatenate([[0], np.cumsum(counts)])
        inv_f = np.float32(1.0 / self.camera.fx)
        sunlit = self._ground_sunlight(centers_rel, cam_pos, flat_ids, flat_t, order, starts)

        sky = order[starts[1]:starts[2]]
        colour[:, sky] = self.sky[:, sky]

        ground = order[starts[0]:starts[1]]
        if len(ground):
            d = self.dirs_flat[:, ground]
            tg = flat_t[ground]
            length = self.ray_length[ground]
            rng_m = tg * length
            cos_inc = np.maximum(np.abs(d[2]) / length, np.float32(0.02))
            footprint = rng_m * inv_f / cos_inc
            x = cam_pos[0] + tg * d[0]
            y = cam_pos[1] + tg * d[1]
            rgba = scene.ground_rgba(x, y, footprint)
            colour[:, ground] = self._shade(rgba, _UP, rng_m, sunlit[ground])
            labels[ground] = Label.ROAD

        for k in np.flatnonzero(counts[2:]):
            pix = order[starts[k + 2]:starts[k + 3]]
            d = self.dirs_flat[:, pix]
            tk = flat_t[pix]
            hits = surface_hits(prims, int(k), centers_rel[k], None, d, tk)
            length = self.ray_length[pix]
            rng_m = tk * length
            n = hits.normal
            cos_inc = np.abs(n[0] * d[0] + n[1] * d[1] + n[2] * d[2]) / length
            footprint = rng_m * inv_f / np.maximum(cos_inc, np.float32(0.05))
            rgba = scene.surface_rgba(int(k), hits, footprint)
            colour[:, pix] = self._shade(rgba, n, rng_m, sunlit[pix])
            labels[pix] = prims.label[k]

        image = colour.reshape(3, h, w)
        if self.blur:
            image = _blur121(image)
        rgb = self._to_uint8(image, noise_seed)
        return CameraImage(rgb=rgb, labels=labels.reshape(h, w), depth=depth, ids=ids)

    def _ground_sunlight(self, centers_rel, cam_pos, flat_ids, flat_t, order, starts):
        """1 where a pixel sees sunlight, 0 where a shadow falls on it.

        Shadows are cast on the road and pavement tops only (where they
        matter most for the look of a street): each such pixel sends a ray
        towards the sun, tested against the primitives whose shadow can
        reach the pixel's screen area. All shadow rays share one direction,
        so the same slab and quadric tests as for camera rays apply.
        """
        scene, prims = self.scene, self.scene.prims
        h, w = self.camera.height, self.camera.width
        sunlit = np.ones(h * w, dtype=np.float32)
        receivers = np.full((3, h * w), np.nan, dtype=np.float32)
        pieces = [order[starts[0]:starts[1]]]
        for k in scene.pavement_ids:
            pix = order[starts[k + 2]:starts[k + 3]]
            z = flat_t[pix] * self.dirs_flat[2, pix]
            pieces.append(pix[np.abs(z + np.float32(cam_pos[2] - KERB_HEIGHT)) < 2e-3])
        pix = np.concatenate(pieces)
        if not len(pix):
            return sunlit
        receivers[:, pix] = self.dirs_flat[:, pix] * flat_t[pix]
        receivers = receivers.reshape(3, h, w)
        # Casters: everything but the pavement, whose shadow region (from
        # the ground up to kerb height) can hold receivers.
        sun = SUN_DIRECTION
        lo, hi = prims.aabb(centers_rel)
        ground = -cam_pos[2]
        reach = np.maximum(hi[:, 2] - ground, 0.0) / sun[2]
        shadow_lo = np.stack([lo[:, 0] + np.minimum(0.0, -reach * sun[0]),
                              lo[:, 1] + np.minimum(0.0, -reach * sun[1]),
                              np.full(len(lo), ground)], axis=1)
        shadow_hi = np.stack([hi[:, 0] + np.maximum(0.0, -reach * sun[0]),
                              hi[:, 1] + np.maximum(0.0, -reach * sun[1]),
                              np.full(len(lo), ground + KERB_HEIGHT + 0.01)], axis=1)
        casters = np.ones(len(prims), dtype=bool)
        casters[scene.pavement_ids] = False
        shadow = np.zeros((h, w), dtype=bool)
        sun32 = sun.astype(np.float32)
        for k, r0, r1, c0, c1 in self.screen_rects(shadow_lo, shadow_hi, casters):
            block = receivers[:, r0:r1, c0:c1]
            center = centers_rel[k].astype(np.float32)
            o = [block[i] - center[i] for i in range(3)]
            d = list(sun32)
            if not prims.axis_aligned[k]:
                rt = prims.rotation[k].T.astype(np.float32)
                o = [rt[i, 0] * o[0] + rt[i, 1] * o[1] + rt[i, 2] * o[2] for i in range(3)]
                d = list(rt @ sun32)
            t = _SHADOW_TESTS[prims.kind[k]](o, d, prims.half[k].astype(np.float32))
            shadow[r0:r1, c0:c1] |= t < np.inf
        sunlit[shadow.reshape(-1)] = 0.0
        return sunlit

    @staticmethod
    def _shade(rgba: np.ndarray, normal: np.ndarray, distance: np.ndarray,
               sunlit: np.ndarray) -> np.ndarray:
        """Lit, hazy colour (3, n) from albedo rows of ``rgba`` and (3, n) normals."""
        sun = normal[0] * np.float32(SUN_DIRECTION[0])
        sun += normal[1] * np.float32(SUN_DIRECTION[1])
        sun += normal[2] * np.float32(SUN_DIRECTION[2])
        sun = np.maximum(sun, 0) * sunlit
        sky = np.float32(0.55) + np.float32(0.45) * normal[2]
        fog = np.exp(distance.astype(np.float32) * np.float32(-1 / HAZE_DISTANCE_M))
        out = np.empty((3, len(distance)), dtype=np.float32)
        for c in range(3):
            light = sun * SUN_RGB[c] + sky * SKY_FILL_RGB[c]
            np.multiply(rgba[c], light, out=out[c])
            out[c] *= fog
            out[c] += HAZE_RGB[c] * (1 - fog)
        return out

    def _to_uint8(self, image: np.ndarray, noise_seed) -> np.ndarray:
        """Tone-map planar linear RGB (3, H, W) to interleaved 8-bit (H, W, 3)
        sRGB-like values (gamma 2.2, through a lookup table), adding sensor
        noise: a floor plus a shot-noise term that grows with brightness.
        The noise is the sum of two uniforms (triangular), which is cheap to
        draw and close enough to Gaussian for a sensor model."""
        index = np.clip(image, 0.0, 1.0)
        index *= np.float32(_TONE_STEPS - 1)
        index += np.float32(0.5)
        index = index.astype(np.uint16)
        value = _TONE_VALUE[index]
        if self.noise:
            rng = np.random.default_rng(np.atleast_1d(noise_seed).tolist() + [3])
            noise = rng.random(value.shape, dtype=np.float32)
            noise += rng.random(value.shape, dtype=np.float32)
            noise -= np.float32(1.0)
            # Shot noise grows with the square root of the signal.
            sigma = np.sqrt(value)
            sigma *= _SHOT_NOISE
            sigma += _NOISE_FLOOR
            noise *= sigma
            value += noise
        value += np.float32(0.5)
        np.clip(value, 0, 255, out=value)
        return np.ascontiguousarray(value.astype(np.uint8).transpose(1, 2, 0))


_SHADOW_TESTS = {BOX: box_hit, CYLINDER: cylinder_hit, ELLIPSOID: ellipsoid_hit}
_TONE_STEPS = 4096
_TONE_VALUE = (np.power(np.linspace(0.0, 1.0, _TONE_STEPS), 1 / 2.2) * 255.0).astype(np.float32)
# Noise standard deviation 1 + 0.12 sqrt(value) grey levels, scaled for
# triangular noise (the sum of two uniforms minus 1 has variance 1/6).
_NOISE_FLOOR = np.float32(1.0 * np.sqrt(6.0))
_SHOT_NOISE = np.float32(0.12 * np.sqrt(6.0))
_UP = np.array([[0.0], [0.0], [1.0]], dtype=np.float32)


def _blur121(image: np.ndarray) -> np.ndarray:
    """Separable [1 2 1]/4 blur (optics) of a planar (C, H, W) image, edges
    replicated: (a + 2b + c) / 4 computed as ((a + b) + (b + c)) / 4 from one
    array of neighbour sums per axis."""
    return _blur_axis(_blur_axis(image, 1), 2)


def _blur_axis(x: np.ndarray, axis: int) -> np.ndarray:
    x = np.moveaxis(x, axis, 0)
    quarter = np.float32(0.25)
    pair = x[:-1] + x[1:]
    out = np.empty_like(x)
    np.add(pair[:-1], pair[1:], out=out[1:-1])
    out[1:-1] *= quarter
    out[0] = np.float32(0.75) * x[0] + quarter * x[1]
    out[-1] = np.float32(0.75) * x[-1] + quarter * x[-2]
    return np.moveaxis(out, 0, axis)
