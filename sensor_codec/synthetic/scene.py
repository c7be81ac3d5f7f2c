"""The procedural street scene of the synthetic drive.

World frame (REP-103): x along the road (the ego drives towards +x), y to
the left, z up, metres; the road surface is the plane z = 0. Right-hand
traffic: lanes of 3.5 m at y in [-3.5, 0] (ego lane, centre -1.75) and
[0, 3.5] (oncoming), parking lanes out to |y| = 6, then a 15 cm kerb and
pavement, a row of buildings from |y| ~ 10.5 and a backdrop row further
back so gaps between buildings never show an empty horizon.

Everything is an analytic primitive (see :mod:`.raycast`) with a semantic
class (CamVid ids, :class:`Label`) and a material: textures for the camera
(RGB) and lidar (reflectivity in the alpha channel), and a radar cross
section. Dynamic objects (cars, cyclists, pedestrians) move on straight
lines at constant speed, so the state at any time is exact and
time-consistent for every sensor. The same seed gives the same scene.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .raycast import BOX, CYLINDER, ELLIPSOID, PrimitiveSet, SurfaceHits


class Label(enum.IntEnum):
    """Semantic classes, numbered as CamVid's 11 classes (11 = void)."""

    SKY = 0
    BUILDING = 1
    POLE = 2
    ROAD = 3
    PAVEMENT = 4
    TREE = 5
    SIGN_SYMBOL = 6
    FENCE = 7
    CAR = 8
    PEDESTRIAN = 9
    BICYCLIST = 10


# Road cross-section (metres, world y).
LANE_WIDTH = 3.5
EGO_LANE_Y = -1.75
ONCOMING_LANE_Y = 1.75
PARKING_LANE_Y = 4.75
KERB_Y = 6.0
KERB_HEIGHT = 0.15
BUILDING_Y = 10.5
BACKDROP_Y = 32.0
MARKING_HALF_WIDTH = 0.075


# --------------------------------------------------------------------------
# Textures


class Texture:
    """An RGBA texture with its mip pyramid, sampled by nearest texel at the
    mip level matching the footprint of a pixel (or lidar beam).

    RGB is linear albedo, A is lidar reflectivity, all stored as uint8.
    ``tile`` is the size in metres one repeat covers, or ``None`` for a
    texture stretched once over a whole face ("fit", clamped at the edges).
    Images are indexed ``[v, u]`` with v = 0 at the bottom.
    """

    def __init__(self, name: str, image: np.ndarray, tile: float | None):
        size = image.shape[0]
        if image.shape != (size, size, 4) or size & (size - 1):
            raise ConfigError(f"texture {name!r} must be square RGBA with a power-of-two "
                              f"side, got shape {image.shape}")
        self.name = name
        self.tile = tile
        levels = [np.clip(image, 0.0, 1.0).astype(np.float32)]
        while levels[-1].shape[0] > 4:
            a = levels[-1]
            levels.append(0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]))
        self.sizes = np.array([lv.shape[0] for lv in levels], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes ** 2)[:-1]]).astype(np.int64)
        # One uint32 per texel (R, G, B, A bytes, little-endian) so a lookup
        # is a single gather.
        rgba8 = np.concatenate([np.round(lv * 255).astype(np.uint8).reshape(-1, 4)
                                for lv in levels])
        self.flat = np.ascontiguousarray(rgba8).view("<u4").reshape(-1)
        self.mean = levels[-1].reshape(-1, 4).mean(axis=0)

    def sample(self, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Packed RGBA texels (n,) uint32 at texture coordinates in tile units
        (fractions of the tile or of the face), ``footprint`` in the same
        units. :func:`unpack_rgba` turns them into planar floats."""
        top = np.float32(self.sizes[0])
        level = np.log2(np.maximum(np.asarray(footprint, np.float32) * top, np.float32(1e-9)))
        level += np.float32(0.5)
        np.clip(level, 0, len(self.sizes) - 1, out=level)
        level = level.astype(np.int64)
        size = self.sizes[level]
        iu = np.floor(np.asarray(u, np.float32) * size).astype(np.int64)
        iv = np.floor(np.asarray(v, np.float32) * size).astype(np.int64)
        if self.tile is None:
            np.clip(iu, 0, size - 1, out=iu)
            np.clip(iv, 0, size - 1, out=iv)
        else:
            iu %= size
            iv %= size
        return self.flat[self.offsets[level] + iv * size + iu]


def unpack_rgba(texels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Packed uint32 texels -> (4, n) float32 in [0, 1] (planar)."""
    if out is None:
        out = np.empty((4, len(texels)), dtype=np.float32)
    for channel in range(4):
        np.multiply((texels >> (8 * channel)) & 255, np.float32(1 / 255), out=out[channel],
                    casting="unsafe")
    return out


def _grid(size: int, width: float, height: float | None = None):
    """Texel-centre coordinates (u, v) in metres, indexed [v, u]."""
    height = width if height is None else height
    u = (np.arange(size) + 0.5) / size * width
    v = (np.arange(size) + 0.5) / size * height
    return np.meshgrid(u, v)


def _fractal(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Tileable fractal noise (power spectrum 1/f^beta), zero mean, unit std."""
    white = rng.standard_normal((size, size))
    spectrum = np.fft.rfft2(white)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    spectrum *= f ** (-beta / 2)
    spectrum[0, 0] = 0.0
    noise = np.fft.irfft2(spectrum, s=(size, size))
    return (noise - noise.mean()) / noise.std()


def _rgba(rgb, alpha) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    shape = np.broadcast_shapes(rgb.shape[:-1], alpha.shape)
    out = np.empty(shape + (4,))
    out[..., :3] = np.broadcast_to(rgb, shape + (3,))
    out[..., 3] = np.broadcast_to(alpha, shape)
    return out


def _cells(u, v, w, h):
    """Integer cell indices and position inside cells of size w x h."""
    iu, iv = np.floor(u / w), np.floor(v / h)
    return iu, iv, u - iu * w, v - iv * h


def _cell_random(rng, iu, iv, n=64):
    """A random value per cell, looked up from a small periodic table."""
    table = rng.random((n, n))
    return table[iv.astype(np.int64) % n, iu.astype(np.int64) % n]


def _asphalt(rng):
    s = 1024
    fine = _fractal(rng, s, 0.6)
    mid = _fractal(rng, s, 1.6)
    patches = _fractal(rng, s, 3.2)
    grey = 0.17 + 0.018 * fine + 0.02 * mid - 0.03 * (patches > 1.1)
    specks = rng.random((s, s)) < 0.015
    grey = grey + 0.08 * specks
    rgb = grey[..., None] * np.array([1.0, 1.0, 1.03])
    return _rgba(rgb, 0.11 + 0.02 * mid + 0.05 * specks)


def _pavement(rng):
    s = 512
    u, v = _grid(s, 3.0)
    iu, iv, fu, fv = _cells(u, v, 0.5, 0.5)
    joint = (fu < 0.015) | (fv < 0.015)
    tone = _cell_random(rng, iu, iv) - 0.5
    grey = 0.45 + 0.06 * tone + 0.025 * _fractal(rng, s, 1.0) - 0.18 * joint
    rgb = grey[..., None] * np.array([1.0, 0.97, 0.92])
    return _rgba(rgb, 0.32 + 0.05 * tone - 0.1 * joint)


def _windows(u, v, spacing, floor_h, x0, x1, z0, z1, frame):
    """Masks (window, frame) of a regular window grid, positions in metres
    inside each spacing x floor_h cell."""
    _, _, fu, fv = _cells(u, v, spacing, floor_h)
    inside = (fu > x0) & (fu < x1) & (fv > z0) & (fv < z1)
    glass = (fu > x0 + frame) & (fu < x1 - frame) & (fv > z0 + frame) & (fv < z1 - frame)
    return glass, inside & ~glass, fu, fv


def _glass_colour(rng, u, v, spacing, floor_h, z0, z1):
    iu, iv, _, fv = _cells(u, v, spacing, floor_h)
    variant = _cell_random(rng, iu, iv)
    height = np.clip((fv - z0) / (z1 - z0), 0, 1)
    base = 0.05 + 0.07 * height + 0.05 * variant
    rgb = base[..., None] * np.array([0.9, 1.0, 1.15])
    curtains = ((variant > 0.75) * (1 - 0.4 * height))[..., None] * np.array([0.25, 0.22, 0.18])
    return rgb + curtains


def _brick_facade(rng):
    s = 1024
    u, v = _grid(s, 12.0)
    row = np.floor(v / 0.075)
    shifted = u + 0.125 * (row % 2)
    iu, _, fu, fv = _cells(shifted, v, 0.25, 0.075)
    mortar = (fu < 0.012) | (fv < 0.012)
    brick_tone = _cell_random(rng, iu, row, 128)
    brick = np.array([0.42, 0.19, 0.12]) * (0.8 + 0.4 * brick_tone)[..., None]
    rgb = np.where(mortar[..., None], np.array([0.55, 0.53, 0.48]), brick)
    rgb = rgb * (1 + 0.06 * _fractal(rng, s, 1.2))[..., None]
    glass, frame, _, fv = _windows(u, v, 3.0, 3.0, 0.9, 2.1, 0.9, 2.5, 0.07)
    centred = np.abs(_cells(u, v, 3.0, 3.0)[2] - 1.5) < 0.7
    lintel = (~glass & ~frame) & (fv > 2.5) & (fv < 2.7) & centred
    rgb = np.where(lintel[..., None], np.array([0.6, 0.58, 0.52]), rgb)
    rgb = np.where(frame[..., None], np.array([0.8, 0.8, 0.78]), rgb)
    rgb = np.where(glass[..., None], _glass_colour(rng, u, v, 3.0, 3.0, 0.9, 2.5), rgb)
    alpha = np.where(glass, 0.04, np.where(frame, 0.55, 0.3))
    return _rgba(rgb, alpha)


def _plaster_facade(rng):
    s = 1024
    u, v = _grid(s, 12.0)
    rgb = np.array([0.78, 0.75, 0.68]) * (1 + 0.035 * _fractal(rng, s, 1.8))[..., None]
    band = (_cells(u, v, 12.0, 3.0)[3] < 0.12)
    rgb = np.where(band[..., None], rgb * 0.85, rgb)
    glass, frame, fu, fv = _windows(u, v, 2.4, 3.0, 0.65, 1.75, 0.8, 2.6, 0.06)
    sill = (fv > 0.68) & (fv < 0.8) & (fu > 0.55) & (fu < 1.85)
    rgb = np.where(sill[..., None], np.array([0.9, 0.9, 0.88]), rgb)
    rgb = np.where(frame[..., None], np.array([0.92, 0.92, 0.9]), rgb)
    rgb = np.where(glass[..., None], _glass_colour(rng, u, v, 2.4, 3.0, 0.8, 2.6), rgb)
    alpha = np.where(glass, 0.04, 0.5)
    return _rgba(rgb, alpha)


def _glass_facade(rng):
    s = 512
    u, v = _grid(s, 6.0)
    iu, iv, fu, fv = _cells(u, v, 1.5, 3.0)
    mullion = (fu < 0.06) | (fv < 0.1)
    panel = _cell_random(rng, iu, iv)
    gradient = fv / 3.0
    glass = (0.12 + 0.1 * panel + 0.08 * gradient)[..., None] * np.array([0.8, 1.0, 1.2])
    rgb = np.where(mullion[..., None], np.array([0.22, 0.23, 0.25]), glass)
    return _rgba(rgb, np.where(mullion, 0.4, 0.06))


def _roof(rng):
    grey = 0.16 + 0.02 * _fractal(rng, 256, 0.8)
    return _rgba(grey[..., None] * np.ones(3), 0.15)


def _metal(rng):
    grey = 0.5 + 0.03 * _fractal(rng, 256, 1.0)
    return _rgba(grey[..., None] * np.array([1.0, 1.0, 1.04]), 0.45)


def _bark(rng):
    s = 256
    streaks = _fractal(rng, s, 2.0)
    streaks = 0.5 * streaks + 0.5 * np.roll(streaks, 3, axis=0)
    grey = 0.22 + 0.05 * streaks + 0.03 * _fractal(rng, s, 0.8)
    return _rgba(grey[..., None] * np.array([1.0, 0.78, 0.55]), 0.25)


def _leaves(rng):
    s = 512
    clumps = _fractal(rng, s, 1.4)
    fine = rng.random((s, s))
    shade = 0.65 + 0.25 * np.tanh(clumps) + 0.25 * (fine - 0.5)
    hue = _fractal(rng, s, 2.5)
    green = np.array([0.13, 0.26, 0.07]) + 0.03 * hue[..., None] * np.array([1.0, 0.4, -0.2])
    rgb = shade[..., None] * green
    gaps = (clumps < -1.4)[..., None]
    rgb = np.where(gaps, rgb * 0.35, rgb)
    return _rgba(rgb, 0.28 + 0.05 * np.tanh(clumps))


def _fence(rng):
    s = 512
    u, v = _grid(s, 2.0)
    iu, _, fu, _ = _cells(u, v, 0.12, 2.0)
    gap = fu > 0.1
    tone = _cell_random(rng, iu, iu * 0)
    wood = np.array([0.4, 0.29, 0.18]) * (0.85 + 0.3 * tone)[..., None]
    wood = wood * (1 + 0.08 * _fractal(rng, s, 1.5))[..., None]
    rgb = np.where(gap[..., None], np.array([0.05, 0.05, 0.04]), wood)
    return _rgba(rgb, np.where(gap, 0.05, 0.3))


def _seven_segment(u, v, digit, x, y, w, h, stroke):
    """Mask of one digit drawn with seven straight segments."""
    segments = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd",
                6: "afgedc", 7: "abc", 8: "abcdefg", 9: "abcdfg"}[digit]
    boxes = {"a": (x, y + h - stroke, w, stroke), "g": (x, y + h / 2 - stroke / 2, w, stroke),
             "d": (x, y, w, stroke), "f": (x, y + h / 2, stroke, h / 2),
             "b": (x + w - stroke, y + h / 2, stroke, h / 2), "e": (x, y, stroke, h / 2),
             "c": (x + w - stroke, y, stroke, h / 2)}
    mask = np.zeros(u.shape, dtype=bool)
    for name in segments:
        bx, by, bw, bh = boxes[name]
        mask |= (u >= bx) & (u <= bx + bw) & (v >= by) & (v <= by + bh)
    return mask


def _sign_round(rng, digits=(5, 0)):
    u, v = _grid(256, 1.0)
    r = np.hypot(u - 0.5, v - 0.5)
    rgb = np.broadcast_to(np.array([0.45, 0.45, 0.47]), u.shape + (3,)).copy()
    rgb[r < 0.49] = (0.7, 0.05, 0.04)
    rgb[r < 0.38] = (0.85, 0.85, 0.83)
    text = (_seven_segment(u, v, digits[0], 0.27, 0.32, 0.2, 0.36, 0.05)
            | _seven_segment(u, v, digits[1], 0.53, 0.32, 0.2, 0.36, 0.05))
    rgb[text & (r < 0.38)] = (0.04, 0.04, 0.04)
    return _rgba(rgb, np.where(r < 0.49, 0.95, 0.45))


def _sign_parking(rng):
    u, v = _grid(256, 1.0)
    border = (np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v)) < 0.06)
    rgb = np.broadcast_to(np.array([0.03, 0.18, 0.55]), u.shape + (3,)).copy()
    rgb[border] = (0.85, 0.85, 0.85)
    stem = (u > 0.32) & (u < 0.44) & (v > 0.18) & (v < 0.82)
    bowl = np.hypot((u - 0.47) / 1.2, v - 0.62)
    ring = (bowl < 0.2) & (bowl > 0.09) & (u > 0.38)
    rgb[stem | ring] = (0.85, 0.85, 0.85)
    return _rgba(rgb, 0.92)


def _paint(rng):
    grey = 0.7 + 0.01 * _fractal(rng, 64, 1.0)
    return _rgba(grey[..., None] * np.ones(3), 0.45)


def _car_side(rng):
    """Body side in face-normalised coordinates (u along the car, v up)."""
    u, v = _grid(512, 1.0)
    rgb = np.broadcast_to(np.array([0.7, 0.7, 0.7]), u.shape + (3,)).copy()
    alpha = np.full(u.shape, 0.45)
    seam = ((np.abs(u - 0.42) < 0.002) | (np.abs(u - 0.64) < 0.002)) & (v > 0.3)
    rgb[seam] *= 0.4
    sill = v < 0.2
    rgb[sill] = (0.08, 0.08, 0.08)
    for wheel_u in (0.18, 0.8):
        d = np.hypot((u - wheel_u) / 0.078, (v - 0.22) / 0.4)
        rgb[d < 1.15] = (0.03, 0.03, 0.03)
        rgb[d < 0.9] = (0.04, 0.04, 0.04)
        rgb[d < 0.55] = (0.45, 0.45, 0.47)
        alpha[d < 1.15] = 0.08
    handle = ((np.abs(u - 0.47) < 0.02) | (np.abs(u - 0.69) < 0.02)) & (np.abs(v - 0.78) < 0.02)
    rgb[handle] = (0.2, 0.2, 0.2)
    return _rgba(rgb, alpha)


def _car_end(rng, front: bool):
    u, v = _grid(256, 1.0)
    rgb = np.broadcast_to(np.array([0.7, 0.7, 0.7]), u.shape + (3,)).copy()
    alpha = np.full(u.shape, 0.45)
    bumper = v < 0.28
    rgb[bumper] = (0.08, 0.08, 0.08)
    lamp = ((np.abs(u - 0.16) < 0.1) | (np.abs(u - 0.84) < 0.1)) & (np.abs(v - 0.68) < 0.09)
    if front:
        grille = (np.abs(u - 0.5) < 0.22) & (np.abs(v - 0.5) < 0.1)
        rgb[grille] = (0.05, 0.05, 0.05)
        rgb[lamp] = (0.92, 0.92, 0.88)
    else:
        rgb[lamp] = (0.75, 0.04, 0.03)
    plate = (np.abs(u - 0.5) < 0.12) & (np.abs(v - 0.38) < 0.06)
    rgb[plate] = (0.9, 0.9, 0.85)
    alpha[lamp | plate] = 0.9
    return _rgba(rgb, alpha)


def _cabin(rng, side: bool):
    u, v = _grid(256, 1.0)
    rgb = np.broadcast_to(np.array([0.7, 0.7, 0.7]), u.shape + (3,)).copy()
    if side:
        glass = (v > 0.08) & (v < 0.9) & (np.abs(u - 0.5) > 0.025) & (u > 0.06) & (u < 0.94)
    else:
        glass = (v > 0.06) & (v < 0.9) & (u > 0.06) & (u < 0.94)
    shade = (0.05 + 0.06 * v)[..., None] * np.array([0.9, 1.0, 1.1])
    rgb = np.where(glass[..., None], shade, rgb)
    return _rgba(rgb, np.where(glass, 0.05, 0.45))


def _cloth(rng):
    s = 256
    weave = _fractal(rng, s, 0.5)
    folds = _fractal(rng, s, 2.5)
    grey = 0.6 * (1 + 0.05 * weave + 0.15 * np.tanh(folds))
    return _rgba(grey[..., None] * np.ones(3), 0.3)


def _person(rng):
    """A standing person wrapped round a cylinder (u around, v up, normalised):
    trousers, a shirt with arm seams, a belt; the tint colours the clothes."""
    u, v = _grid(256, 1.0)
    cloth = 0.6 * (1 + 0.05 * _fractal(rng, 256, 0.5) + 0.12 * np.tanh(_fractal(rng, 256, 2.5)))
    rgb = cloth[..., None] * np.ones(3)
    legs = v < 0.47
    rgb[legs] = rgb[legs] * np.array([0.28, 0.3, 0.38])
    gap = legs & (np.minimum(np.abs(u - 0.25), np.abs(u - 0.75)) < 0.015)
    rgb[gap] *= 0.4
    rgb[np.abs(v - 0.48) < 0.012] = (0.05, 0.04, 0.03)
    arms = (v > 0.5) & (np.minimum(np.abs(u - 0.0), np.abs(u - 0.5)) < 0.03)
    rgb[arms] *= 0.75
    rgb[v < 0.04] = (0.05, 0.05, 0.05)  # shoes
    return _rgba(rgb, 0.3)


def _skin(rng):
    grey = 1 + 0.03 * _fractal(rng, 64, 1.0)
    return _rgba(grey[..., None] * np.array([0.62, 0.45, 0.36]), 0.3)


def _clouds(rng):
    """Cumulus-like cover: thresholded fractal noise (R = cover 0..1)."""
    noise = _fractal(rng, 512, 2.6)
    cover = np.clip((noise - 0.3) * 0.8, 0.0, 1.0)
    return _rgba(cover[..., None] * np.ones(3), 0.0)


def _dark(rng):
    grey = 0.06 + 0.01 * _fractal(rng, 64, 1.0)
    return _rgba(grey[..., None] * np.ones(3), 0.1)


# name -> (painter, tile metres or None for "fit")
_TEXTURES = {
    "asphalt": (_asphalt, 8.0),
    "pavement": (_pavement, 3.0),
    "brick": (_brick_facade, 12.0),
    "plaster": (_plaster_facade, 12.0),
    "glass_facade": (_glass_facade, 6.0),
    "roof": (_roof, 4.0),
    "metal": (_metal, 1.0),
    "bark": (_bark, 1.0),
    "leaves": (_leaves, 2.0),
    "fence": (_fence, 2.0),
    "sign_round": (_sign_round, None),
    "sign_parking": (_sign_parking, None),
    "paint": (_paint, 1.0),
    "car_side": (_car_side, None),
    "car_front": (lambda rng: _car_end(rng, True), None),
    "car_rear": (lambda rng: _car_end(rng, False), None),
    "cabin_side": (lambda rng: _cabin(rng, True), None),
    "cabin_end": (lambda rng: _cabin(rng, False), None),
    "cloth": (_cloth, 1.0),
    "skin": (_skin, 1.0),
    "person": (_person, None),
    "dark": (_dark, 1.0),
    "clouds": (_clouds, 1.0),
}


@functools.lru_cache(maxsize=4)
def _textures(seed: int) -> dict[str, Texture]:
    """The texture set of a seed (cached: painting them takes about a second)."""
    rng = np.random.default_rng([seed, 2])
    return {name: Texture(name, painter(rng), tile) for name, (painter, tile) in _TEXTURES.items()}


# --------------------------------------------------------------------------
# Materials


@dataclass(frozen=True)
class Material:
    """How a surface looks to each sensor.

    ``faces`` names the texture of each face (+x, -x, +y, -y, +z, -z in the
    primitive's local frame; cylinders use the first for their side and the
    last two for their caps). Radar: mean RCS of one detection in dBsm and
    the chance that a resolution cell on the surface yields a detection.
    """

    name: str
    label: Label
    faces: tuple[str, str, str, str, str, str]
    rcs_dbsm: float
    radar_p: float


def _all(tex: str) -> tuple[str, ...]:
    return (tex,) * 6


MATERIALS: tuple[Material, ...] = (
    Material("road", Label.ROAD, _all("asphalt"), -18.0, 0.004),
    Material("pavement", Label.PAVEMENT, _all("pavement"), -12.0, 0.02),
    Material("brick", Label.BUILDING, ("brick",) * 4 + ("roof", "roof"), 8.0, 0.25),
    Material("plaster", Label.BUILDING, ("plaster",) * 4 + ("roof", "roof"), 6.0, 0.2),
    Material("glass_facade", Label.BUILDING, ("glass_facade",) * 4 + ("roof", "roof"), 10.0, 0.3),
    Material("pole", Label.POLE, _all("metal"), 4.0, 0.85),
    Material("sign_round", Label.SIGN_SYMBOL, ("metal", "sign_round") + ("metal",) * 4, 10.0, 0.9),
    Material("sign_parking", Label.SIGN_SYMBOL, ("metal", "sign_parking") + ("metal",) * 4,
             10.0, 0.9),
    Material("car_body", Label.CAR,
             ("car_front", "car_rear", "car_side", "car_side", "paint", "dark"), 10.0, 0.9),
    Material("car_cabin", Label.CAR, ("cabin_end", "cabin_end", "cabin_side", "cabin_side",
                                      "paint", "dark"), 6.0, 0.6),
    Material("tree_trunk", Label.TREE, _all("bark"), -2.0, 0.4),
    Material("tree_crown", Label.TREE, _all("leaves"), -6.0, 0.15),
    Material("fence", Label.FENCE, _all("fence"), 0.0, 0.35),
    Material("pedestrian", Label.PEDESTRIAN, ("person",) + ("cloth",) * 5, -8.0, 0.6),
    Material("head", Label.PEDESTRIAN, _all("skin"), -12.0, 0.3),
    Material("bicycle", Label.BICYCLIST, _all("dark"), -3.0, 0.7),
    Material("rider", Label.BICYCLIST, _all("cloth"), -7.0, 0.6),
)
MATERIAL_INDEX = {m.name: i for i, m in enumerate(MATERIALS)}


# --------------------------------------------------------------------------
# Ego motion


@dataclass(frozen=True)
class EgoMotion:
    """The ego vehicle drives along the ego lane with a gently varying speed:
    x(t) = x0 + v t + (a / w) (1 - cos w t), so v(t) = v + a sin w t."""

    speed: float = 8.0
    speed_swing: float = 1.5
    period_s: float = 25.0
    x0: float = 0.0
    y: float = EGO_LANE_Y

    def position(self, t: float | np.ndarray) -> np.ndarray:
        """Position (3,) at time t, or (n, 3) for an array of times."""
        t = np.asarray(t, dtype=np.float64)
        w = 2 * np.pi / self.period_s
        x = self.x0 + self.speed * t + self.speed_swing / w * (1 - np.cos(w * t))
        return np.stack([x, np.full_like(x, self.y), np.zeros_like(x)], axis=-1)

    def velocity(self, t: float | np.ndarray) -> np.ndarray:
        """Velocity (3,) at time t, or (n, 3) for an array of times."""
        t = np.asarray(t, dtype=np.float64)
        w = 2 * np.pi / self.period_s
        vx = self.speed + self.speed_swing * np.sin(w * t)
        return np.stack([vx, np.zeros_like(vx), np.zeros_like(vx)], axis=-1)


# --------------------------------------------------------------------------
# Scene


def _yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class _Builder:
    """Collects primitives while the scene is generated."""

    def __init__(self):
        self.rows: list[tuple] = []
        self.next_object = 0

    def new_object(self) -> int:
        self.next_object += 1
        return self.next_object - 1

    def add(self, kind, center, half, material, *, rotation=None, velocity=(0, 0, 0),
            tint=(1, 1, 1), obj=None):
        obj = self.new_object() if obj is None else obj
        rotation = np.eye(3) if rotation is None else rotation
        self.rows.append((kind, np.asarray(center, float), rotation,
                          np.asarray(half, float), np.asarray(velocity, float),
                          MATERIAL_INDEX[material], MATERIALS[MATERIAL_INDEX[material]].label,
                          np.asarray(tint, float), obj))
        return obj

    def build(self) -> PrimitiveSet:
        cols = list(zip(*self.rows))
        return PrimitiveSet(
            kind=np.array(cols[0], dtype=np.int8), center=np.stack(cols[1]),
            rotation=np.stack(cols[2]), half=np.stack(cols[3]), velocity=np.stack(cols[4]),
            material=np.array(cols[5], dtype=np.int16), label=np.array(cols[6], dtype=np.uint8),
            tint=np.stack(cols[7]).astype(np.float32), object_id=np.array(cols[8], dtype=np.int32))


CAR_COLOURS = np.array([
    [0.85, 0.85, 0.85], [0.08, 0.08, 0.09], [0.45, 0.46, 0.48], [0.6, 0.08, 0.06],
    [0.1, 0.2, 0.5], [0.75, 0.75, 0.78], [0.2, 0.3, 0.22], [0.8, 0.6, 0.2], [0.3, 0.3, 0.32]])


class Scene:
    """A seeded street scene around the ego route.

    ``duration_s`` sizes the scene so that the ego's route plus sensor
    range ahead and behind is always covered, and so that oncoming traffic
    keeps arriving for the whole drive.
    """

    def __init__(self, seed: int = 0, duration_s: float = 10.0, *, ego: EgoMotion | None = None,
                 ahead_m: float = 350.0, behind_m: float = 150.0):
        if duration_s <= 0 or not np.isfinite(duration_s):
            raise ConfigError(
                f"duration_s must be a positive number of seconds, got {duration_s!r}")
        self.seed = int(seed)
        self.duration_s = float(duration_s)
        self.ego = ego or EgoMotion()
        route_end = float(self.ego.position(duration_s)[0])
        self.x_min = self.ego.x0 - behind_m
        self.x_max = route_end + ahead_m
        rng = np.random.default_rng([self.seed, 1])
        self.textures = self._make_textures(self.seed)
        self.crossings = self._crossings(rng)
        builder = _Builder()
        self._pavements(builder)
        for side in (-1, 1):
            self._buildings(builder, rng, side, BUILDING_Y, 0.3, 12.0)
            self._buildings(builder, rng, side, BACKDROP_Y, 0.0, 20.0, backdrop=True)
            self._street_furniture(builder, rng, side)
            self._parked_cars(builder, rng, side)
            self._pedestrians(builder, rng, side)
        self._traffic(builder, rng)
        self.prims = builder.build()
        self.materials = MATERIALS
        # Per material, the texture object of each face.
        self._face_textures = [[self.textures[name] for name in m.faces] for m in MATERIALS]
        self.pavement_ids = np.flatnonzero(self.prims.material == MATERIAL_INDEX["pavement"])
        self.material_rcs = np.array([m.rcs_dbsm for m in MATERIALS])
        self.material_radar_p = np.array([m.radar_p for m in MATERIALS])

    # -- generation -------------------------------------------------------

    @staticmethod
    def _make_textures(seed: int) -> dict[str, Texture]:
        return _textures(seed)

    def _crossings(self, rng) -> np.ndarray:
        xs, x = [], self.ego.x0 + rng.uniform(60, 120)
        while x < self.x_max:
            xs.append(x)
            x += rng.uniform(120, 200)
        return np.array(xs)

    def _near_crossing(self, x0, x1, margin=4.0) -> bool:
        return bool(np.any((self.crossings > x0 - margin - 2) & (self.crossings < x1 + margin + 2)))

    def _pavements(self, b: _Builder):
        length = self.x_max - self.x_min
        for side in (-1, 1):
            # One long kerb-and-pavement slab per side, reaching under the buildings.
            b.add(BOX, [self.x_min + length / 2, side * (KERB_Y + 30.0), (KERB_HEIGHT - 0.3) / 2],
                  [length / 2, 30.0, (KERB_HEIGHT + 0.3) / 2], "pavement")

    def _buildings(self, b: _Builder, rng, side, front_y, setback, depth, backdrop=False):
        x = self.x_min
        while x < self.x_max:
            width = rng.uniform(12, 35) if backdrop else rng.uniform(8, 26)
            height = rng.uniform(14, 30) if backdrop else rng.uniform(6, 24)
            y0 = front_y + rng.uniform(0, setback)
            style = rng.choice(["brick", "plaster", "glass_facade"], p=[0.45, 0.4, 0.15])
            if style == "plaster":
                tint = rng.uniform(0.75, 1.15, 3)
            else:
                tint = rng.uniform(0.85, 1.1) * rng.uniform(0.95, 1.05, 3)
            b.add(BOX, [x + width / 2, side * (y0 + depth / 2), height / 2],
                  [width / 2, depth / 2, height / 2], str(style), tint=tint)
            x += width
            if not backdrop and rng.random() < 0.3:
                gap = rng.uniform(4, 12)
                if rng.random() < 0.7:  # a fence closes the gap along the pavement
                    fence_h = rng.uniform(1.0, 1.8)
                    b.add(BOX, [x + gap / 2, side * (front_y + 0.3), fence_h / 2 + KERB_HEIGHT],
                          [gap / 2, 0.03, fence_h / 2], "fence", tint=rng.uniform(0.8, 1.2, 3))
                x += gap

    def _street_furniture(self, b: _Builder, rng, side):
        # Street lights: a tall pole with an arm over the road.
        x = self.x_min + rng.uniform(0, 30) + (15 if side > 0 else 0)
        while x < self.x_max:
            height = rng.uniform(7.0, 9.0)
            y = side * 6.5
            obj = b.new_object()
            top = KERB_HEIGHT + height
            b.add(CYLINDER, [x, y, top - height / 2], [0.09, 0.09, height / 2], "pole", obj=obj)
            b.add(BOX, [x, y - side * 0.9, top - 0.1], [0.08, 0.9, 0.05], "pole", obj=obj)
            b.add(BOX, [x, y - side * 1.7, KERB_HEIGHT + height - 0.2], [0.25, 0.12, 0.08], "pole",
                  obj=obj, tint=(0.6, 0.6, 0.6))
            x += rng.uniform(26, 36)
        # Traffic signs: the front of the plate faces the traffic of that side.
        x = self.x_min + rng.uniform(5, 40)
        while x < self.x_max:
            y = side * 6.7
            obj = b.new_object()
            b.add(CYLINDER, [x, y, KERB_HEIGHT + 1.1], [0.04, 0.04, 1.1], "pole", obj=obj)
            material = "sign_round" if rng.random() < 0.6 else "sign_parking"
            size = rng.uniform(0.3, 0.4)
            b.add(BOX, [x, y, KERB_HEIGHT + 2.2 + size], [0.02, size, size], material,
                  rotation=None if side < 0 else _yaw(np.pi), obj=obj)
            x += rng.uniform(35, 70)
        # Trees along the back of the pavement.
        x = self.x_min + rng.uniform(0, 10)
        while x < self.x_max:
            if rng.random() < 0.75:
                trunk_h = rng.uniform(2.0, 3.2)
                radius = rng.uniform(1.4, 2.3)
                y = side * rng.uniform(8.9, 9.4)
                obj = b.new_object()
                b.add(CYLINDER, [x, y, KERB_HEIGHT + trunk_h / 2],
                      [rng.uniform(0.12, 0.22)] * 2 + [trunk_h / 2], "tree_trunk", obj=obj)
                b.add(ELLIPSOID, [x, y, KERB_HEIGHT + trunk_h + 0.7 * radius],
                      [radius, radius * rng.uniform(0.85, 1.0), radius * rng.uniform(0.9, 1.3)],
                      "tree_crown", obj=obj, tint=rng.uniform(0.8, 1.2, 3))
            x += rng.uniform(10, 22)

    def _car(self, b: _Builder, rng, x, y, heading, velocity=(0, 0, 0)):
        length = rng.uniform(3.9, 4.9)
        width = rng.uniform(1.7, 1.9)
        body_h = rng.uniform(0.75, 0.9)
        cabin_h = rng.uniform(0.42, 0.55)
        colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))] / 0.7
        rotation = _yaw(heading)
        forward = rotation[:, 0]
        obj = b.new_object()
        clearance = 0.12
        b.add(BOX, [x, y, clearance + body_h / 2], [length / 2, width / 2, body_h / 2], "car_body",
              rotation=rotation, velocity=velocity, tint=colour, obj=obj)
        cabin_len = length * rng.uniform(0.48, 0.58)
        shift = -0.1 * length
        cabin_z = clearance + body_h + cabin_h / 2
        b.add(BOX, [x + shift * forward[0], y + shift * forward[1], cabin_z],
              [cabin_len / 2, width * 0.43, cabin_h / 2], "car_cabin",
              rotation=rotation, velocity=velocity, tint=colour, obj=obj)
        return length

    def _parked_cars(self, b: _Builder, rng, side):
        x = self.x_min + rng.uniform(0, 8)
        while x < self.x_max:
            if rng.random() < 0.2:
                x += rng.uniform(8, 25)
                continue
            length_guess = 5.0
            if self._near_crossing(x, x + length_guess):
                x += 6.0
                continue
            heading = (0.0 if side < 0 else np.pi) + rng.normal(0, 0.02)
            y = side * (PARKING_LANE_Y + rng.uniform(-0.2, 0.2))
            length = self._car(b, rng, x + 2.5, y, heading)
            x += max(length, 3.9) + rng.uniform(1.0, 5.0) + (length_guess - length)

    def _pedestrians(self, b: _Builder, rng, side):
        x = self.x_min + rng.uniform(0, 20)
        while x < self.x_max:
            speed = rng.uniform(0.9, 1.6) * rng.choice([-1, 1])
            y = side * rng.uniform(7.2, 8.4)
            height = rng.uniform(1.45, 1.65)
            obj = b.new_object()
            tint = rng.uniform(0.2, 1.4, 3)
            b.add(CYLINDER, [x, y, KERB_HEIGHT + height / 2], [0.22, 0.22, height / 2],
                  "pedestrian",
                  velocity=[speed, 0, 0], tint=tint, obj=obj)
            b.add(ELLIPSOID, [x, y, KERB_HEIGHT + height + 0.11], [0.1, 0.1, 0.12], "head",
                  velocity=[speed, 0, 0], obj=obj, tint=rng.uniform(0.7, 1.3) * np.ones(3))
            x += rng.uniform(12, 40)

    def _traffic(self, b: _Builder, rng):
        ego = self.ego
        # Cars ahead in the ego lane, faster than the ego's top speed so they
        # never collide with it; one behind at the ego's mean speed (the ego
        # is never behind its mean trajectory, so it cannot be rear-ended).
        for gap, extra in ((18.0, 2.5), (55.0, 3.5)):
            speed = ego.speed + ego.speed_swing + extra
            self._car(b, rng, ego.x0 + gap, EGO_LANE_Y, 0.0, velocity=(speed, 0, 0))
        self._car(b, rng, ego.x0 - 16.0, EGO_LANE_Y, 0.0, velocity=(ego.speed, 0, 0))
        # Oncoming traffic at one common speed (no overtaking in one lane),
        # placed far enough ahead to keep arriving during the whole drive.
        oncoming = -10.5
        x = ego.x0 + rng.uniform(15, 40)
        x_last = self.x_max - oncoming * self.duration_s
        while x < x_last:
            self._car(b, rng, x, ONCOMING_LANE_Y, np.pi, velocity=(oncoming, 0, 0))
            x += rng.uniform(30, 80)
        # Cyclists along the lane edges (clear of the car lanes' envelopes).
        for y, speed, start in ((-3.05, 4.5, 35.0), (3.05, -4.0, 90.0)):
            x = ego.x0 + start
            while x < x_last:
                heading = 0.0 if speed > 0 else np.pi
                rotation = _yaw(heading)
                obj = b.new_object()
                b.add(BOX, [x, y, 0.5], [0.85, 0.06, 0.38], "bicycle", rotation=rotation,
                      velocity=[speed, 0, 0], obj=obj)
                b.add(CYLINDER, [x - 0.1 * np.sign(speed), y, 1.3], [0.2, 0.2, 0.42], "rider",
                      velocity=[speed, 0, 0], tint=rng.uniform(0.3, 1.4, 3), obj=obj)
                b.add(ELLIPSOID, [x - 0.05 * np.sign(speed), y, 1.84], [0.13, 0.13, 0.14], "rider",
                      velocity=[speed, 0, 0], tint=(0.9, 0.1, 0.1), obj=obj)
                x += rng.uniform(150, 300)

    # -- appearance -------------------------------------------------------

    def ground_markings(self, x: np.ndarray, y: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Coverage (0..1) of white road paint at world (x, y): a dashed centre
        line, solid lines between travel and parking lanes, zebra crossings.
        Coverage is smoothed over ``footprint`` metres to limit aliasing."""
        soft = np.maximum(footprint, 1e-3)

        def line(distance, half_width):
            return np.clip((half_width - distance) / soft + 0.5, 0.0, 1.0)

        dashes = line(np.abs(np.mod(x, 9.0) - 1.5), 1.5)
        paint = line(np.abs(y), MARKING_HALF_WIDTH) * dashes
        paint = np.maximum(paint, line(np.abs(np.abs(y) - LANE_WIDTH), MARKING_HALF_WIDTH))
        if len(self.crossings):
            count = len(self.crossings)
            after = np.searchsorted(self.crossings, x)
            before_x = self.crossings[np.clip(after, 1, count) - 1]
            after_x = self.crossings[np.clip(after, 0, count - 1)]
            dx = np.minimum(np.abs(x - before_x), np.abs(x - after_x))
            on_road = np.abs(y) < KERB_Y - 0.3
            stripes = line(np.abs(np.mod(y, 1.0) - 0.5), 0.25) * line(dx, 2.0) * on_road
            paint = np.maximum(paint, stripes)
        return paint

    def ground_rgba(self, x: np.ndarray, y: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Albedo and lidar reflectivity of the road surface, (4, n) float32."""
        tex = self.textures["asphalt"]
        scale = np.float32(1 / tex.tile)
        rgba = unpack_rgba(tex.sample(x * scale, y * scale, footprint * scale))
        paint = self.ground_markings(x, y, footprint).astype(np.float32)
        keep = 1 - paint
        for channel, white in enumerate((0.75, 0.75, 0.72, 0.75)):
            rgba[channel] *= keep
            rgba[channel] += np.float32(white) * paint
        return rgba

    def surface_rgba(self, k: int, hits: SurfaceHits, footprint: np.ndarray) -> np.ndarray:
        """Albedo (tinted) and reflectivity where rays hit primitive ``k``, (4, n) float32."""
        textures = self._face_textures[self.prims.material[k]]
        faces = np.unique(hits.face) if len(hits.face) else ()
        used = {id(textures[f]) for f in faces}
        texels = np.empty(len(footprint), dtype=np.uint32)
        for face in faces:
            tex = textures[face]
            if len(used) == 1:
                sel = slice(None)
            else:
                sel = hits.face == face
            u, v, fp = hits.uv[0][sel], hits.uv[1][sel], footprint[sel]
            if tex.tile is None:
                w, h = hits.face_size[0][sel], hits.face_size[1][sel]
                texels[sel] = tex.sample(u / w, v / h, fp / np.maximum(w, h))
            else:
                scale = np.float32(1 / tex.tile)
                texels[sel] = tex.sample(u * scale, v * scale, fp * scale)
            if len(used) == 1:
                break
        rgba = unpack_rgba(texels)
        tint = self.prims.tint[k]
        for channel in range(3):
            rgba[channel] *= tint[channel]
        np.clip(rgba, 0.0, 1.0, out=rgba)
        return rgba
