"""``camera_learned``: the learned camera codec (backbone features + hyperprior, issue 3).

The codec itself is light: torch / onnxruntime / constriction load only when
the first frame is coded, inside ``sensor_codec.learned.camera_runtime``, and
one runtime per (model, backend, threads) is shared by all codec instances
of a process.

The payload names the camera model id (``camera-<weight hash>``). A decoder
decodes any camera model it holds in its models folder and otherwise raises
``UnknownModelError`` naming the id it got and the ids it has.

``decode_with_semantic`` additionally returns the semantic map the decoder
regenerates (the backbone on the decoded frame) as a ``mono8`` CameraFrame of
class ids, which the decoder node publishes for HD-map consumers.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import zstandard

from ..errors import InvalidFrameError, UnknownModelError, WireFormatError
from ..frames import CameraFrame, Modality
from ..wire import Container, unpack
from .base import Codec, Param, register_codec
from .streams import zstd_decompress_exact

_ALPHA_ENCODINGS = ("rgba8", "bgra8")
_BGR_ENCODINGS = ("bgr8", "bgra8")
_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
_RUNTIME_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _runtime(model: str, backend: str, threads: int, models: str):
    from ..learned.camera_runtime import LearnedCameraRuntime  # heavy: only when used

    return LearnedCameraRuntime(model or None, backend, threads=threads, models=models or None)


def _release_id(model: str, models: str) -> str:
    from ..learned.release import resolve_release

    return resolve_release("camera", model or None, models or None).model_id


@register_codec
class LearnedCameraCodec(Codec):
    name = "camera_learned"
    modalities = frozenset({Modality.CAMERA})
    description = ("Learned camera codec on the segmentation backbone's features, "
                   "semantic rate allocation, bit-exact across backends")
    params = (
        Param("quality", int, 5, "quality level, 0 (smallest) .. 9 (best)", min=0, max=9),
        Param("backend", str, "auto",
              "inference backend: auto (best available, logged), onnxruntime, torch, or a GPU "
              "backend (onnxruntime-cuda, torch-cuda[:fp16,...], tensorrt[:precision=fp16,...])"),
        Param("semantic_allocation", bool, True,
              "spend bits by class importance (config/semantic_importance.yaml)"),
        Param("model", str, "default", "camera model id, or 'default' for the shipped one"),
        Param("models_dir", str, "", "models folder ('' = the shipped sensor_codec/models)"),
        Param("threads", int, 0, "CPU threads for inference (0 = runtime default)", min=0, max=256),
    )

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        if self.settings["backend"] != "auto":
            from ..learned.runtime import choose_backend
            choose_backend(self.settings["backend"])  # unknown names and options: ConfigError now

    def _get_runtime(self, model: str | None = None):
        with _RUNTIME_LOCK:
            return _runtime(model or self.settings["model"], self.settings["backend"],
                            self.settings["threads"], self.settings["models_dir"])

    @functools.cached_property
    def model_id(self) -> str:  # settings are fixed per instance, so the id is too
        return _release_id(self.settings["model"], self.settings["models_dir"])

    def _encode(self, frame: CameraFrame):
        if frame.encoding not in _ENCODINGS:
            raise InvalidFrameError(f"camera_learned codes 8-bit images ({', '.join(_ENCODINGS)}), "
                                    f"not {frame.encoding}; use 'png', 'jpegxl' or 'zstd' for it")
        runtime = self._get_runtime()
        packed = runtime.compress(np.ascontiguousarray(frame.to_rgb8()), self.settings["quality"],
                                  semantic_allocation=self.settings["semantic_allocation"])
        metadata = dict(packed.metadata, encoding=frame.encoding)
        sections = list(packed.sections)
        self._encoder_semantic = packed.semantic  # for encode_with_semantic (same thread)
        if frame.encoding in _ALPHA_ENCODINGS:
            alpha = np.ascontiguousarray(frame.pixels[:, :, 3])
            sections.append(zstandard.ZstdCompressor(level=19).compress(alpha.tobytes()))
        return metadata, sections

    def encode_with_semantic(self, frame: CameraFrame) -> tuple[bytes, CameraFrame]:
        """(payload, the encoder-side semantic map as mono8 class ids): the map the
        backbone computes anyway while encoding, for perception and lidar steering."""
        payload = self.encode(frame)
        return payload, CameraFrame(self._encoder_semantic, "mono8", frame.stamp_ns,
                                    frame.frame_id)

    def decode(self, payload) -> CameraFrame:
        return self.decode_with_semantic(payload, with_semantic=False)[0]

    def decode_with_semantic(self, payload, with_semantic: bool = True
                             ) -> tuple[CameraFrame, CameraFrame | None]:
        """(decoded frame, semantic map as mono8 class ids or None)."""
        c = payload if isinstance(payload, Container) else unpack(payload)
        if c.codec != self.name:
            raise WireFormatError(f"payload was made by codec {c.codec!r}, not {self.name!r}")
        if c.modality != Modality.CAMERA:
            raise WireFormatError(f"codec {self.name!r} cannot decode modality {c.modality.label}")
        from ..learned.release import held_models, models_dir

        held = held_models("camera", self.settings["models_dir"] or None)
        if c.model_id not in held:
            raise UnknownModelError(
                f"payload needs camera model {c.model_id!r}; this decoder holds {held or 'none'} "
                f"in {models_dir(self.settings['models_dir'] or None)}")
        runtime = self._get_runtime(c.model_id)
        encoding = c.metadata.get("encoding")
        if encoding not in _ENCODINGS:
            raise WireFormatError(f"camera_learned payload has unknown encoding {encoding!r}")
        expected = 5 if encoding in _ALPHA_ENCODINGS else 4
        if len(c.sections) != expected:
            raise WireFormatError(f"camera_learned payload of a {encoding} image needs {expected} "
                                  f"sections, has {len(c.sections)}")
        rgb, semantic = runtime.decompress(c.sections[:4], c.metadata, with_semantic=with_semantic)
        height, width = rgb.shape[:2]
        if encoding == "mono8":
            pixels = np.rint(rgb.mean(axis=2)).astype(np.uint8)
        else:
            pixels = rgb[:, :, ::-1] if encoding in _BGR_ENCODINGS else rgb
            if encoding in _ALPHA_ENCODINGS:
                alpha = np.frombuffer(zstd_decompress_exact(c.sections[4], height * width, "alpha section"),
                                      dtype=np.uint8).reshape(height, width, 1)
                pixels = np.concatenate([pixels, alpha], axis=2)
        frame = CameraFrame(np.ascontiguousarray(pixels), encoding, c.stamp_ns, c.frame_id)
        semantic_frame = (CameraFrame(semantic, "mono8", c.stamp_ns, c.frame_id)
                          if semantic is not None else None)
        return frame, semantic_frame

    def _decode(self, container: Container) -> CameraFrame:  # decode() is overridden
        return self.decode(container)
