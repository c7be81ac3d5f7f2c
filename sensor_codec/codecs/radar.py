"""Reference radar codec ``radar_quant``.

A radar frame is a few hundred detections with position, radial velocity
and radar cross-section; there is no scan order to exploit, so the gain is
in quantising each quantity to a step below the sensor's own resolution
(typically 0.1-0.2 m in range and 0.1 m/s in velocity) and zstd-coding the
integers (``pointquant``; it keeps NaN and infinite values exactly).

Steps apply by field name: ``x``, ``y``, ``z`` take ``xyz_step_m``; float
fields that hold a velocity (named ``v...``, or containing ``vel`` or
``doppler``: ``v_r``, ``vx``, ``v_r_compensated``, ``velocity``) take
``velocity_step_mps``; ``rcs`` takes ``rcs_step_db``; other float fields
take ``attr_step`` (0, the default, keeps them exact). Each value comes back
within half its step.
"""

from __future__ import annotations

from ..frames import Modality, PointCloudFrame
from ..wire import Container
from .base import Codec, Param, register_codec
from .pointquant import ATTR_STEP_PARAM, XYZ, ZSTD_LEVEL_PARAM, decode_cloud, encode_cloud


def is_velocity_field(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("v") or "vel" in lowered or "doppler" in lowered


@register_codec
class RadarQuantCodec(Codec):
    name = "radar_quant"
    modalities = frozenset({Modality.RADAR})
    description = "Per-quantity fixed-step quantisation + zstd of radar detections"
    params = (
        Param("xyz_step_m", float, 0.01, "quantisation step of x, y, z in metres",
              min=1e-6, max=10.0),
        Param("velocity_step_mps", float, 0.01,
              "quantisation step of velocity fields in m/s (0 keeps them exact)",
              min=0.0, max=10.0),
        Param("rcs_step_db", float, 0.1, "quantisation step of the rcs field in dB "
              "(0 keeps it exact)", min=0.0, max=10.0),
        ATTR_STEP_PARAM,
        ZSTD_LEVEL_PARAM,
    )

    def _encode(self, frame: PointCloudFrame):
        return encode_cloud(frame, self.steps(frame), self.settings["zstd_level"])

    def _decode(self, c: Container):
        return decode_cloud(c)

    def steps(self, frame: PointCloudFrame) -> dict[str, float]:
        """The quantisation step of each field of ``frame``."""
        steps = {}
        for name in frame.points.dtype.names:
            if name in XYZ:
                steps[name] = self.settings["xyz_step_m"]
            elif name.lower() == "rcs":
                steps[name] = self.settings["rcs_step_db"]
            elif is_velocity_field(name):
                steps[name] = self.settings["velocity_step_mps"]
            else:
                steps[name] = self.settings["attr_step"]
        return steps
