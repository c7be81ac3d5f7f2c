"""Vectorised ray casting against analytic primitives, shared by the camera,
the lidar and the radar.

Geometry is kept as a struct of arrays (:class:`PrimitiveSet`): oriented
boxes, finite cylinders and ellipsoids, each with its own local frame, plus
one infinite horizontal ground plane. Sensors cast a *grid* of rays (rows x
columns) and hand :func:`cast` a list of blocks, one per primitive: the
sub-rectangle of the grid that the primitive can possibly cover (a screen
rectangle for the camera, an azimuth x elevation window for the lidar). The
work is then proportional to the area primitives cover, not to rays x
primitives.

Everything runs in a *sensor-centred world frame*: world axes, translated so
that a reference point (the sensor) is the origin. That keeps float32
coordinates small and lets a pinhole camera use one shared ray origin.
Ray directions need not be unit vectors; the returned ``t`` is the ray
parameter, so a camera whose rays have unit z in the optical frame gets the
depth directly and a lidar with unit rays gets the range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

BOX = 0
CYLINDER = 1
ELLIPSOID = 2
KIND_NAMES = {BOX: "box", CYLINDER: "cylinder", ELLIPSOID: "ellipsoid"}

NO_HIT = -1
GROUND_HIT = -2

# Faces: boxes 0..5 = +x, -x, +y, -y, +z, -z (local axes); cylinders use
# 0 (side), 4 (top cap), 5 (bottom cap); ellipsoids always 0.
FACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0],
                         [0, 0, 1], [0, 0, -1]], dtype=np.float64)
# Per box face: (u axis, u sign, v axis, v sign) so that u runs to the right
# and v up for a viewer outside the face (text on a sign is not mirrored).
_FACE_UV = ((1, 1, 2, 1), (1, -1, 2, 1), (0, -1, 2, 1), (0, 1, 2, 1),
            (0, 1, 1, 1), (0, 1, 1, -1))

# A hit closer than this (ray parameter) is ignored, so a surface never
# shadows its own ray origin.
EPS = 1e-4


@dataclass
class PrimitiveSet:
    """Analytic primitives in world coordinates, one row per primitive.

    ``center`` is the position at time 0; primitives move along straight
    lines: ``center + velocity * t``. ``rotation`` maps local to world
    coordinates. ``half`` is the half extents of a box, ``(radius, radius,
    half height)`` of a cylinder (axis = local z) or the radii of an
    ellipsoid. ``object_id`` groups the parts of one object (a car's body
    and cabin), ``material`` indexes the scene's material table.
    """

    kind: np.ndarray
    center: np.ndarray
    rotation: np.ndarray
    half: np.ndarray
    velocity: np.ndarray
    material: np.ndarray
    label: np.ndarray
    tint: np.ndarray
    object_id: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.kind)
        shapes = {"center": (n, 3), "rotation": (n, 3, 3), "half": (n, 3),
                  "velocity": (n, 3), "material": (n,), "label": (n,),
                  "tint": (n, 3), "object_id": (n,)}
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ConfigError(f"primitive field {name!r} has shape "
                                  f"{np.shape(getattr(self, name))}, expected {shape}")
        self.axis_aligned = np.all(np.abs(self.rotation - np.eye(3)) < 1e-12, axis=(1, 2))
        self.moving = np.any(self.velocity != 0.0, axis=1)

    def __len__(self) -> int:
        return len(self.kind)

    def centers_at(self, t: float | np.ndarray) -> np.ndarray:
        """Centres at time ``t`` (seconds; a scalar or one time per primitive)."""
        t = np.asarray(t, dtype=np.float64)
        if t.ndim == 0:
            return self.center + self.velocity * t
        return self.center + self.velocity * t[:, None]

    def aabb(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounds (lo, hi) of every primitive, given centres."""
        extent = np.einsum("nij,nj->ni", np.abs(self.rotation), self.half)
        return centers - extent, centers + extent


@dataclass
class RayGrid:
    """A rows x columns grid of rays in the sensor-centred world frame.

    ``origin`` components broadcast against the direction arrays: shape
    (1, 1) for one shared origin (camera), (1, W) for one origin per column
    (a spinning lidar moving during its sweep).
    """

    ox: np.ndarray
    oy: np.ndarray
    oz: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    dz: np.ndarray

    def __post_init__(self) -> None:
        with np.errstate(divide="ignore"):
            self.inv = (1.0 / self.dx, 1.0 / self.dy, 1.0 / self.dz)

    @property
    def shape(self) -> tuple[int, int]:
        return self.dx.shape

    def origin_block(self, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.ox.shape[1] == 1:
            return self.ox, self.oy, self.oz
        return self.ox[:, c0:c1], self.oy[:, c0:c1], self.oz[:, c0:c1]


def _local_rays(grid: RayGrid, block, center, rotation, aligned):
    """Ray origins/directions of a block in a primitive's local frame."""
    _, r0, r1, c0, c1 = block
    ox, oy, oz = grid.origin_block(c0, c1)
    lx, ly, lz = ox - center[0], oy - center[1], oz - center[2]
    dx, dy, dz = grid.dx[r0:r1, c0:c1], grid.dy[r0:r1, c0:c1], grid.dz[r0:r1, c0:c1]
    if aligned:
        inv = tuple(a[r0:r1, c0:c1] for a in grid.inv)
        return (lx, ly, lz), (dx, dy, dz), inv
    rt = rotation.T  # world -> local
    o = tuple(rt[i, 0] * lx + rt[i, 1] * ly + rt[i, 2] * lz for i in range(3))
    d = tuple(rt[i, 0] * dx + rt[i, 1] * dy + rt[i, 2] * dz for i in range(3))
    return o, d, None


def box_hit(o, d, half, inv=None) -> np.ndarray:
    """Entry parameter of rays into a box centred at the local origin
    (slab test); ``inf`` where the ray misses or starts inside."""
    if inv is None:
        with np.errstate(divide="ignore"):
            inv = tuple(1.0 / a for a in d)
    near = far = None
    with np.errstate(invalid="ignore"):
        for axis in range(3):
            t1 = (-half[axis] - o[axis]) * inv[axis]
            t2 = (half[axis] - o[axis]) * inv[axis]
            lo = np.minimum(t1, t2)
            hi = np.maximum(t1, t2, out=t2)
            if near is None:
                near, far = lo, hi
            else:
                np.maximum(near, lo, out=near)
                np.minimum(far, hi, out=far)
        hit = (near <= far) & (near > EPS)
    return np.where(hit, near, np.inf)


def cylinder_hit(o, d, half) -> np.ndarray:
    """Entry parameter of rays into a capped cylinder about the local z axis."""
    radius, half_height = half[0], half[2]
    a = d[0] * d[0] + d[1] * d[1]
    b = o[0] * d[0] + o[1] * d[1]
    c = o[0] * o[0] + o[1] * o[1] - radius * radius
    with np.errstate(invalid="ignore", divide="ignore"):
        disc = b * b - a * c
        t = (-b - np.sqrt(disc)) / a
        z = o[2] + t * d[2]
        side_ok = (disc >= 0) & (t > EPS) & (np.abs(z) <= half_height)
        t = np.where(side_ok, t, np.inf)
        # Only the cap on the origin's side can be seen (origins never lie
        # between the cap planes and inside the radius).
        oz = np.asarray(o[2])
        cap_z = np.where(oz > 0, half_height, -half_height)
        tc = (cap_z - o[2]) / d[2]
        xc, yc = o[0] + tc * d[0], o[1] + tc * d[1]
        cap_ok = (tc > EPS) & (xc * xc + yc * yc <= radius * radius) & (np.abs(oz) > half_height)
    return np.where(cap_ok & (tc < t), tc, t)


def ellipsoid_hit(o, d, half) -> np.ndarray:
    """Entry parameter of rays into an ellipsoid with radii ``half``."""
    os_ = [o[i] / half[i] for i in range(3)]
    ds = [d[i] / half[i] for i in range(3)]
    a = ds[0] * ds[0] + ds[1] * ds[1] + ds[2] * ds[2]
    b = os_[0] * ds[0] + os_[1] * ds[1] + os_[2] * ds[2]
    c = os_[0] * os_[0] + os_[1] * os_[1] + os_[2] * os_[2] - 1.0
    with np.errstate(invalid="ignore"):
        disc = b * b - a * c
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > EPS), t, np.inf)


_HIT_FUNCTIONS = {BOX: box_hit, CYLINDER: cylinder_hit, ELLIPSOID: ellipsoid_hit}


def cast(grid: RayGrid, prims: PrimitiveSet, centers: np.ndarray, blocks,
         ground_z: float | None = None, max_t: float = np.inf,
         dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every ray: (t, id) grids.

    ``centers`` are the primitives' centres in the sensor-centred frame;
    ``blocks`` is an iterable of ``(index, row0, row1, col0, col1)``. ``id`` is
    the primitive index, :data:`GROUND_HIT` for the horizontal plane
    ``z = ground_z`` or :data:`NO_HIT`; ``t`` is ``inf`` where nothing was hit
    within ``max_t``.
    """
    shape = grid.shape
    best_t = np.full(shape, max_t, dtype=dtype)
    best_id = np.full(shape, NO_HIT, dtype=np.int32)
    if ground_z is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = np.broadcast_to((ground_z - grid.oz) * grid.inv[2], shape)
        ok = (tg > EPS) & (tg < best_t)
        best_t[ok] = tg[ok]
        best_id[ok] = GROUND_HIT
    kinds = prims.kind
    for block in blocks:
        k, r0, r1, c0, c1 = block
        if r1 <= r0 or c1 <= c0:
            continue
        o, d, inv = _local_rays(grid, block, centers[k], prims.rotation[k],
                                prims.axis_aligned[k])
        kind = kinds[k]
        if kind == BOX:
            t = box_hit(o, d, prims.half[k], inv)
        else:
            t = _HIT_FUNCTIONS[kind](o, d, prims.half[k])
        bt = best_t[r0:r1, c0:c1]
        closer = t < bt
        np.copyto(bt, t, where=closer)
        np.copyto(best_id[r0:r1, c0:c1], k, where=closer)
    best_t[best_id == NO_HIT] = np.inf
    return best_t, best_id


@dataclass
class SurfaceHits:
    """Geometry at the hit points of one primitive, channel-first (planar)
    arrays so that per-component arithmetic runs on contiguous rows."""

    point: np.ndarray    # (3, n) sensor-centred world coordinates
    local: np.ndarray    # (3, n) primitive-local coordinates
    normal: np.ndarray   # (3, n) unit world normal, facing outwards
    face: np.ndarray     # (n,) int8 face id (see FACE_NORMALS)
    uv: np.ndarray       # (2, n) metres across the face from its lower-left corner
    face_size: np.ndarray  # (2, n) width and height of the face in metres


_U_SIGN = np.array([f[1] for f in _FACE_UV], dtype=np.float64)
_V_SIGN = np.array([f[3] for f in _FACE_UV], dtype=np.float64)


def surface_hits(prims: PrimitiveSet, k: int, center: np.ndarray, origin: np.ndarray | None,
                 direction: np.ndarray, t: np.ndarray) -> SurfaceHits:
    """Hit point, normal, face and texture coordinates on primitive ``k``.

    ``direction`` is (3, n), ``t`` (n,), ``origin`` (3, n), (3, 1) or None
    for rays from the sensor-centred origin. Work is done in the dtype of
    ``direction`` (float32 keeps a full camera frame fast).
    """
    dtype = direction.dtype
    point = direction * t.astype(dtype, copy=False)
    if origin is not None:
        point += origin.astype(dtype, copy=False)
    aligned = prims.axis_aligned[k]
    rotation = prims.rotation[k].astype(dtype)
    half = prims.half[k].astype(dtype)
    local = point - center.astype(dtype)[:, None]
    if not aligned:
        local = rotation.T @ local
    kind = prims.kind[k]
    n = len(t)
    if kind == BOX:
        r0, r1, r2 = (np.abs(local[i]) * (1 / half[i]) for i in range(3))
        axis = np.where(r0 >= r1, np.where(r0 >= r2, 0, 2), np.where(r1 >= r2, 1, 2))
        axis = axis.astype(np.int8)
        x_face, z_face = axis == 0, axis == 2
        along = np.where(x_face, local[0], np.where(z_face, local[2], local[1]))
        face = 2 * axis + (along < 0)
        normal_local = FACE_NORMALS.T.astype(dtype)[:, face]
        # u runs along y on x faces, else along x; v along y on z faces, else z.
        u_local = np.where(x_face, local[1], local[0])
        v_local = np.where(z_face, local[1], local[2])
        u_half = np.where(x_face, half[1], half[0])
        v_half = np.where(z_face, half[1], half[2])
        uv = np.stack([_U_SIGN.astype(dtype)[face] * u_local + u_half,
                       _V_SIGN.astype(dtype)[face] * v_local + v_half])
        size = np.stack([2 * u_half, 2 * v_half])
    elif kind == CYLINDER:
        radius, half_height = half[0], half[2]
        on_cap = np.abs(local[2]) >= half_height * (1 - 1e-4) - 1e-4
        cap_top = on_cap & (local[2] > 0)
        face = np.where(on_cap, np.where(cap_top, 4, 5), 0).astype(np.int8)
        radial_len = np.maximum(np.hypot(local[0], local[1]), 1e-9)
        normal_local = np.stack([local[0] / radial_len, local[1] / radial_len,
                                 np.zeros(n, dtype)])
        if on_cap.any():
            normal_local[:, on_cap] = FACE_NORMALS.T.astype(dtype)[:, face[on_cap]]
        angle = np.arctan2(local[1], local[0]) + np.pi
        uv = np.stack([np.where(on_cap, local[0] + radius, angle * radius),
                       np.where(on_cap, local[1] + radius, local[2] + half_height)])
        size = np.empty((2, n), dtype)
        size[0] = np.where(on_cap, 2 * radius, 2 * np.pi * radius)
        size[1] = np.where(on_cap, 2 * radius, 2 * half_height)
    else:
        face = np.zeros(n, dtype=np.int8)
        grad = local / (half * half)[:, None]
        normal_local = grad / np.sqrt(grad[0] ** 2 + grad[1] ** 2 + grad[2] ** 2)
        mean_r = float(np.mean(half[:2]))
        angle = np.arctan2(local[1], local[0]) + np.pi
        uv = np.stack([angle * mean_r, local[2] + half[2]])
        size = np.empty((2, n), dtype)
        size[0] = 2 * np.pi * mean_r
        size[1] = 2 * half[2]
    normal = normal_local if aligned else rotation @ normal_local
    return SurfaceHits(point=point, local=local, normal=normal, face=face, uv=uv,
                       face_size=size)


def sphere_window(lo: np.ndarray, hi: np.ndarray, margin: float = 0.0):
    """Azimuth and elevation bounds of axis-aligned boxes seen from the origin.

    ``lo``/``hi`` are (n, 3) box bounds in a frame centred on the sensor,
    already grown by any sensor motion. Returns (az_lo, az_hi, el_lo, el_hi,
    full_circle, d_min): the azimuth interval runs from ``az_lo`` to
    ``az_hi`` (az_hi may exceed pi: the window then wraps), ``full_circle``
    marks boxes whose footprint contains the sensor, ``d_min`` is the
    horizontal distance to the footprint. Elevation bounds are exact for the
    box, not just its corners, because the nearest point of a footprint edge
    can lie between corners.
    """
    lo = lo - margin
    hi = hi + margin
    nx = np.clip(0.0, lo[:, 0], hi[:, 0])
    ny = np.clip(0.0, lo[:, 1], hi[:, 1])
    d_min = np.hypot(nx, ny)
    fx = np.maximum(np.abs(lo[:, 0]), np.abs(hi[:, 0]))
    fy = np.maximum(np.abs(lo[:, 1]), np.abs(hi[:, 1]))
    d_max = np.hypot(fx, fy)
    full = d_min < 1e-6
    with np.errstate(divide="ignore"):
        el_hi = np.where(hi[:, 2] > 0, np.arctan2(hi[:, 2], d_min), np.arctan2(hi[:, 2], d_max))
        el_lo = np.where(lo[:, 2] < 0, np.arctan2(lo[:, 2], d_min), np.arctan2(lo[:, 2], d_max))
    cx = np.stack([lo[:, 0], hi[:, 0], lo[:, 0], hi[:, 0]], axis=1)
    cy = np.stack([lo[:, 1], lo[:, 1], hi[:, 1], hi[:, 1]], axis=1)
    corner_az = np.arctan2(cy, cx)
    mid_az = np.arctan2(0.5 * (lo[:, 1] + hi[:, 1]), 0.5 * (lo[:, 0] + hi[:, 0]))
    rel = np.angle(np.exp(1j * (corner_az - mid_az[:, None])))
    az_lo = mid_az + rel.min(axis=1)
    az_hi = mid_az + rel.max(axis=1)
    return az_lo, az_hi, el_lo, el_hi, full, d_min
