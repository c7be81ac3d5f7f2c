"""Input shapes of each exported graph for a camera resolution, and engine profiles.

An engine is built for camera resolutions, not for tensor shapes: the caller
says ``960x720`` and this module knows that the camera encoder then sees a
frame padded to a multiple of 64 (960x768), a tap of 120x96 and gain maps of
60x48. A *fixed* build makes one optimisation profile per resolution
(min = opt = max); a *dynamic* build makes one profile spanning a smallest,
typical and largest resolution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

PAD_MULTIPLE = 64  # camera_runtime pads frames to this (kept here so no torch import is needed)
TAP_CHANNELS = 128
TAP_STRIDE = 8
LATENT_STRIDE = 16

_RESOLUTION = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Resolution:
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Resolution:
        match = _RESOLUTION.match(text)
        if not match:
            raise ConfigError(f"resolution {text!r} is not WIDTHxHEIGHT (for example 1920x1080)")
        width, height = int(match.group(1)), int(match.group(2))
        if not (16 <= width <= 16384 and 16 <= height <= 16384):
            raise ConfigError(f"resolution {text!r} outside 16..16384 pixels per side")
        return cls(width, height)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    def padded(self) -> tuple[int, int]:
        """(height, width) rounded up to the codec's padding multiple."""
        return (-(-self.height // PAD_MULTIPLE) * PAD_MULTIPLE, -(-self.width // PAD_MULTIPLE) * PAD_MULTIPLE)


def graph_input_shapes(manifest: dict, graph: str, resolution: Resolution) -> dict[str, tuple[int, ...]]:
    """{input name: shape} that ``graph`` of the release described by ``manifest``
    receives for one frame of ``resolution``."""
    height, width = resolution.height, resolution.width
    hp, wp = resolution.padded()
    latent = int(manifest.get("latent_channels", 0))
    if graph in ("encoder", "decoder", "fused_encoder") and latent <= 0:
        raise ConfigError(f"model {manifest.get('id')} does not declare latent_channels; "
                          f"cannot shape its {graph!r} graph")
    if graph == "backbone":
        shapes = {"image": (1, 3, height, width)}
    elif graph == "encoder":
        shapes = {"image": (1, 3, hp, wp), "tap": (1, TAP_CHANNELS, hp // TAP_STRIDE, wp // TAP_STRIDE),
                  "gain": (1, latent, hp // LATENT_STRIDE, wp // LATENT_STRIDE)}
    elif graph == "decoder":
        # Every decoder input is one latent-grid tensor: (y_hat, inv_gain) for float
        # synthesis releases, the integer input grid for integer-exact ones.
        names = manifest.get("inputs", {}).get("decoder") or ["y_hat", "inv_gain"]
        shapes = {name: (1, latent, hp // LATENT_STRIDE, wp // LATENT_STRIDE) for name in names}
    elif graph == "fused_encoder":
        num_classes = int(manifest.get("num_classes", 11))
        shapes = {"image": (1, 3, height, width), "gain": (1, latent, 1, 1),
                  "class_weights": (num_classes,), "thresholds": (3,), "fraction_weight": (1,)}
    else:
        raise ConfigError(f"no shape rule for graph {graph!r}; graphs with rules: "
                          "backbone, encoder, decoder, fused_encoder")
    declared = manifest.get("inputs", {}).get(graph)
    if declared is not None and sorted(declared) != sorted(shapes):
        raise ConfigError(f"model {manifest.get('id')} graph {graph!r} declares inputs {declared}, "
                          f"expected {sorted(shapes)}")
    return shapes


@dataclass(frozen=True)
class ShapePlan:
    """What an engine is built for: fixed resolutions, or one dynamic range."""

    resolutions: tuple[Resolution, ...]       # fixed: one profile each
    dynamic: tuple[Resolution, Resolution, Resolution] | None = None  # (min, opt, max)

    @classmethod
    def fixed(cls, resolutions) -> ShapePlan:
        unique = tuple(sorted(set(resolutions)))
        if not unique:
            raise ConfigError("an engine needs at least one camera resolution (--resolution WxH)")
        return cls(resolutions=unique)

    @classmethod
    def dynamic_range(cls, smallest: Resolution, typical: Resolution, largest: Resolution) -> ShapePlan:
        if not (smallest.width <= typical.width <= largest.width
                and smallest.height <= typical.height <= largest.height):
            raise ConfigError(f"dynamic shapes need min <= opt <= max per side, got "
                              f"{smallest}, {typical}, {largest}")
        return cls(resolutions=(), dynamic=(smallest, typical, largest))

    @classmethod
    def parse_dynamic(cls, text: str) -> ShapePlan:
        """``"640x480:960x720:1920x1080"`` (min:opt:max)."""
        parts = text.split(":")
        if len(parts) != 3:
            raise ConfigError(f"dynamic shape {text!r} is not MIN:OPT:MAX resolutions "
                              "(for example 640x480:960x720:1920x1080)")
        return cls.dynamic_range(*(Resolution.parse(p) for p in parts))

    @property
    def tag(self) -> str:
        """Short name for artefact files: ``960x720``, ``960x720_1920x1080``, ``dyn640x480-1920x1080``."""
        if self.dynamic:
            smallest, typical, largest = self.dynamic
            return f"dyn{smallest}-{typical}-{largest}"
        return "_".join(str(r) for r in self.resolutions)

    def profiles(self, manifest: dict, graph: str) -> list[dict[str, tuple[tuple, tuple, tuple]]]:
        """One ``{input: (min, opt, max)}`` per optimisation profile."""
        if self.dynamic:
            smallest, typical, largest = (graph_input_shapes(manifest, graph, r) for r in self.dynamic)
            return [{name: (smallest[name], typical[name], largest[name]) for name in smallest}]
        out = []
        for resolution in self.resolutions:
            shapes = graph_input_shapes(manifest, graph, resolution)
            out.append({name: (shape, shape, shape) for name, shape in shapes.items()})
        return out

    def to_json(self) -> dict:
        return {"resolutions": [str(r) for r in self.resolutions],
                "dynamic": [str(r) for r in self.dynamic] if self.dynamic else None}


def profile_index_for(profiles: list[dict], shapes: dict[str, tuple[int, ...]]) -> int | None:
    """Index of the first profile whose min..max covers every input shape, else None."""
    for index, profile in enumerate(profiles):
        covered = True
        for name, shape in shapes.items():
            if name not in profile:
                covered = False
                break
            low, _, high = profile[name]
            if len(low) != len(shape) or any(not lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
                covered = False
                break
        if covered:
            return index
    return None


def plan_from_feed_shapes(shapes: dict[str, tuple[int, ...]], manifest: dict, graph: str) -> dict:
    """A single fixed profile for exactly these input shapes (what an engine built
    on demand, for a frame size nobody planned, uses)."""
    declared = manifest.get("inputs", {}).get(graph, list(shapes))
    missing = [n for n in declared if n not in shapes]
    if missing:
        raise ConfigError(f"graph {graph!r} needs inputs {missing}")
    return {name: (tuple(shapes[name]),) * 3 for name in declared}
