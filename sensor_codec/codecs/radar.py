"""Reference radar codec ``radar_quant``.

A radar frame is a few hundred detections with position, radial velocity
and radar cross-section; there is no scan order to exploit, so the gain is
in quantising each quantity to a resolution below the sensor's own (often
0.1-0.2 m in range, 0.1 m/s in velocity) and zstd-coding the integers
(``pointquant``). Every float field is quantised to the resolution that
``resolutions`` names for it, or ``default_resolution``; a resolution of 0
keeps the field exact. Each finite value comes back within half its
resolution (also after rounding to float32); NaN and infinite values, and
integer fields, come back exactly.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..frames import Modality, PointCloudFrame
from ..wire import Container
from .base import Codec, Param, register_codec
from .pointquant import ZSTD_LEVEL_PARAM, decode_cloud, encode_cloud

DEFAULT_RESOLUTIONS = "x=0.01,y=0.01,z=0.01,rcs=0.1,v_r=0.01,v_r_compensated=0.01"


def parse_resolutions(text: str) -> dict[str, float]:
    """``"x=0.01,rcs=0.1"`` -> ``{"x": 0.01, "rcs": 0.1}``; raises ConfigError."""
    resolutions: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not name:
            raise ConfigError(f"radar resolution {item!r} is not of the form field=metres, "
                              f"e.g. {DEFAULT_RESOLUTIONS!r}")
        try:
            resolution = float(value)
        except ValueError:
            raise ConfigError(f"radar resolution of {name!r} must be a number, got {value!r}") \
                from None
        if not math.isfinite(resolution) or resolution < 0:
            raise ConfigError(f"radar resolution of {name!r} must be finite and >= 0 "
                              f"(0 keeps the field exact), got {value!r}")
        if name in resolutions:
            raise ConfigError(f"radar resolution of {name!r} is given twice in {text!r}")
        resolutions[name] = resolution
    return resolutions


@register_codec
class RadarQuantCodec(Codec):
    name = "radar_quant"
    modalities = frozenset({Modality.RADAR})
    description = "Per-field quantisation (max error resolution/2) + zstd of radar detections"
    params = (
        Param("resolutions", str, DEFAULT_RESOLUTIONS,
              "comma-separated field=resolution; each value is kept within resolution/2 "
              "(0 keeps a field exact)"),
        Param("default_resolution", float, 0.01,
              "resolution of float fields not named in resolutions (0 keeps them exact)",
              min=0.0, max=1e6),
        ZSTD_LEVEL_PARAM,
    )

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        # Parsed once here, so a bad string fails when the codec is made.
        self.resolutions = parse_resolutions(self.settings["resolutions"])

    def resolution(self, field_name: str) -> float:
        return self.resolutions.get(field_name, self.settings["default_resolution"])

    def _encode(self, frame: PointCloudFrame):
        max_errors = {name: self.resolution(name) / 2 for name in frame.points.dtype.names}
        return encode_cloud(frame, max_errors, self.settings["zstd_level"])

    def _decode(self, c: Container):
        return decode_cloud(c)
