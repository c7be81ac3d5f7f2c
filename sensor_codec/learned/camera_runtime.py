"""Compress / decompress with a released learned camera codec, on any backend.

``LearnedCameraRuntime.compress(rgb, level)`` returns the byte sections and the
small metadata dict; ``decompress(sections, metadata)`` returns the decoded
RGB frame and the semantic map the decoder regenerates from it (the backbone
run on the decoded picture, published as ``mono8``).

Sections (all little-endian)::

    0  z   : ANS words (uint32) of the hyper latent, frozen per-channel tables
    1  y   : ANS words of round(y - mean), tables chosen by the integer hyper-synthesis
    2  qmap: ANS words of the 32x32-block quality levels (uniform table)
    3  escapes: int32 values outside table support, z's first (count in metadata "ze")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import CodecError, ConfigError, InvalidFrameError, WireFormatError
from ..wire import check_image_shape
from .backbone_meta import TAP_STRIDE
from .entropy import Z_LIMIT, HyperLayer, TableCoder, hyper_synthesis_int
from .int_synthesis import input_integers
from .importance import QMAP_BLOCK, QMAP_LEVELS, Importance, load_importance
from .release import ModelRelease, resolve_release
from .runtime import Backend, BackboneRunner, make_backend

CPU_BACKENDS = ("onnxruntime", "torch")

log = logging.getLogger(__name__)

PAD_MULTIPLE = 64
LATENT_STRIDE = 16
HYPER_STRIDE = 64
NEUTRAL_QMAP_LEVEL = 2


@dataclass
class Compressed:
    sections: list[bytes]
    metadata: dict
    semantic: np.ndarray  # the encoder-side semantic map (H, W) uint8


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-pad the last two axes up to (height, width)."""
    pads = [(0, 0)] * (array.ndim - 2) + [(0, height - array.shape[-2]), (0, width - array.shape[-1])]
    return np.pad(array, pads, mode="edge")


class LearnedCameraRuntime:
    """A released camera codec + its backbone on one backend ("auto", "onnxruntime", "torch")."""

    def __init__(self, model: str | None = None, backend: str = "auto", *, threads: int = 0,
                 models: str | None = None, release: ModelRelease | None = None,
                 importance: Importance | None = None) -> None:
        self.release = release or resolve_release("camera", model, models)
        manifest = self.release.manifest
        self.backbone = BackboneRunner(manifest["backbone"], backend, threads=threads,
                                       models=str(self.release.folder))
        self.backend = make_backend(self.release, backend, threads)
        self.backend_name = self.backend.name
        self.threads = threads
        # GPU backends: the backbone and the camera branch run as one fused engine, and each
        # decoder input shape is checked once against the CPU reference (see _decoder_for).
        self.on_gpu = self.backend_name not in CPU_BACKENDS
        self._backend_spec = backend if backend != "auto" else self.backend_name
        self._fused = None
        self._decoder_checked: dict[tuple, Backend] = {}
        self._cpu_reference: Backend | None = None
        tensors = self.release.load_tensors()
        self.latent_channels = int(manifest["latent_channels"])
        self.layers = []
        i = 0
        while f"entropy.hs{i}.weight" in tensors:
            flags = tensors[f"entropy.hs{i}.flags"]
            self.layers.append(HyperLayer(weight=tensors[f"entropy.hs{i}.weight"].astype(np.float64),
                                          bias=tensors[f"entropy.hs{i}.bias"].astype(np.float64),
                                          upsample=bool(flags[0]), relu=bool(flags[1])))
            i += 1
        self.gain = tensors["entropy.gain"]
        self.inv_gain = tensors["entropy.inv_gain"]
        self.qmap_gains = tensors["entropy.qmap_gains"]
        self.z_scale_index = tensors["entropy.z_scale_index"].astype(np.int64)
        self.coder = TableCoder(tensors["entropy.freqs"], tensors["entropy.halves"])
        self.importance = importance or load_importance()
        self.levels = int(self.gain.shape[0])
        if "synthesis.input_exp" not in tensors:
            raise ConfigError(f"camera model {self.release.model_id} has no integer synthesis "
                              "(released before format 2); re-export it")
        self.synthesis_input_exp = float(tensors["synthesis.input_exp"])

    @property
    def model_id(self) -> str:
        return self.release.model_id

    # ------------------------------------------------------------------ helpers
    def _gain_maps(self, level: int, qmap: np.ndarray, inverse: bool) -> np.ndarray:
        """(1, M, h16, w16) float32 gain (or inverse gain) map for a (h32, w32) level map."""
        spatial = self.qmap_gains[qmap].repeat(2, axis=0).repeat(2, axis=1)
        vector = self.inv_gain[level] if inverse else self.gain[level]
        if inverse:
            return (vector[:, None, None] / spatial[None])[None].astype(np.float32)
        return (vector[:, None, None] * spatial[None])[None].astype(np.float32)

    def _qmap_model(self):
        import constriction

        return constriction.stream.model.Categorical(np.ones(QMAP_LEVELS, dtype=np.float64), perfect=False)

    def _encode_qmap(self, qmap: np.ndarray) -> bytes:
        import constriction

        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(qmap.reshape(-1).astype(np.int32), self._qmap_model())
        return coder.get_compressed().astype("<u4").tobytes()

    def _decode_qmap(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        import constriction

        if len(data) % 4:
            raise WireFormatError(f"quality-map section of {len(data)} bytes is not whole 32-bit words")
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        return np.asarray(coder.decode(self._qmap_model(), shape[0] * shape[1]),
                          dtype=np.int64).reshape(shape)

    def _fused_encoder(self):
        if self._fused is None:
            from ..engines.fused import FusedEncoder

            self._fused = FusedEncoder.for_runtime(self, self._backend_spec, self.threads)
        return self._fused

    def _decoder_for(self, shape: tuple) -> Backend:
        """The backend that decodes grids of ``shape``: this runtime's own, unless it is a GPU
        backend whose kernels for that shape do not reproduce the CPU reference exactly.

        The integer synthesis is exact only with strict fp32 sums; a GPU library that picks
        Winograd or FFT convolutions for some shape would change pixels silently. So the
        first grid of each shape is a seeded random one decoded on both, and a mismatch
        moves that shape to the CPU (logged), keeping every decoder's pictures identical."""
        if not self.on_gpu:
            return self.backend
        if shape not in self._decoder_checked:
            if self._cpu_reference is None:
                self._cpu_reference = make_backend(self.release, "onnxruntime", self.threads)
            probe = np.random.default_rng(0).integers(-64, 65, shape).astype(np.float32)
            (gpu,) = self.backend.run("decoder", {"grid": probe})
            (cpu,) = self._cpu_reference.run("decoder", {"grid": probe})
            exact = np.array_equal(gpu, cpu)
            if not exact:
                log.error("%s decodes %s grids differently from the CPU reference (%d pixels differ): "
                          "decoding them on the CPU", self.backend_name, shape[2:],
                          int(np.count_nonzero(gpu != cpu)))
            self._decoder_checked[shape] = self.backend if exact else self._cpu_reference
        return self._decoder_checked[shape]

    @staticmethod
    def padded_shape(height: int, width: int) -> tuple[int, int]:
        return (-(-height // PAD_MULTIPLE) * PAD_MULTIPLE, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE)

    # ------------------------------------------------------------------ API
    def compress(self, rgb: np.ndarray, level: int, *, semantic_allocation: bool = True) -> Compressed:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InvalidFrameError(f"learned camera codec takes HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
        if not 0 <= level < self.levels:
            raise InvalidFrameError(f"quality level {level} outside 0..{self.levels - 1}")
        height, width = rgb.shape[:2]
        if height < 16 or width < 16:
            raise InvalidFrameError(f"image {width}x{height} is too small; the learned codec needs >= 16x16")
        if self.on_gpu:
            return self._fused_encoder().compress(rgb, level, semantic_allocation=semantic_allocation)
        hp, wp = self.padded_shape(height, width)
        seg = self.backbone.segment(rgb)
        image = _pad_to(rgb.transpose(2, 0, 1), hp, wp)[None].astype(np.float32) / np.float32(255.0)
        tap = _pad_to(seg.tap, hp // TAP_STRIDE, wp // TAP_STRIDE)[None].astype(np.float32)
        if semantic_allocation:
            qmap = _pad_to(self.importance.quality_levels(seg.semantic), hp // QMAP_BLOCK, wp // QMAP_BLOCK)
        else:
            qmap = np.full((hp // QMAP_BLOCK, wp // QMAP_BLOCK), NEUTRAL_QMAP_LEVEL, dtype=np.uint8)
        y, z = self.backend.run("encoder", {"image": image, "tap": tap,
                                            "gain": self._gain_maps(level, qmap, inverse=False)})
        return self.entropy_code(y[0], z[0], qmap, seg.semantic, height, width, level,
                                 semantic_allocation)

    def entropy_code(self, y: np.ndarray, z: np.ndarray, qmap: np.ndarray, semantic: np.ndarray,
                     height: int, width: int, level: int, semantic_allocation: bool) -> Compressed:
        """The integer part of encoding, shared by every graph that yields the latents."""
        z_int = np.clip(np.rint(z), -Z_LIMIT, Z_LIMIT).astype(np.int64)
        z_tables = np.broadcast_to(self.z_scale_index[:, None, None], z_int.shape)
        z_words, z_escapes = self.coder.encode(z_int, z_tables)
        mean, scale_index = hyper_synthesis_int(z_int, self.layers, self.latent_channels)
        symbols = np.rint(y.astype(np.float64) - mean).astype(np.int64)
        y_words, y_escapes = self.coder.encode(symbols, scale_index)
        escapes = np.concatenate([z_escapes, y_escapes]).astype("<i4")
        metadata = {"height": height, "width": width, "q": level, "ze": int(len(z_escapes)),
                    "sa": int(semantic_allocation)}
        sections = [z_words, y_words, self._encode_qmap(qmap), escapes.tobytes()]
        return Compressed(sections=sections, metadata=metadata, semantic=semantic)

    def decode_latents(self, sections: list[bytes], metadata: dict) -> tuple[np.ndarray, np.ndarray, int]:
        """(y_hat (M, h16, w16) float64, qmap (h32, w32), level): the bit-exact part of decoding."""
        if len(sections) != 4:
            raise WireFormatError(f"learned camera payload needs 4 sections, has {len(sections)}")
        height, width, level, z_escape_count = (metadata.get(k) for k in ("height", "width", "q", "ze"))
        for key, value in (("height", height), ("width", width), ("q", level), ("ze", z_escape_count)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise WireFormatError(f"metadata {key!r} must be a non-negative integer, got {value!r}")
        check_image_shape(height, width, 3)
        if height < 16 or width < 16:
            raise WireFormatError(f"image size {width}x{height} is below the codec's 16x16 minimum")
        if level >= self.levels:
            raise WireFormatError(f"quality level {level} outside 0..{self.levels - 1}")
        if len(sections[3]) % 4:
            raise WireFormatError(f"escape section of {len(sections[3])} bytes is not whole int32 values")
        escapes = np.frombuffer(sections[3], dtype="<i4").astype(np.int64)
        if z_escape_count > len(escapes):
            raise WireFormatError(f"metadata claims {z_escape_count} z escapes, section holds {len(escapes)}")
        hp, wp = self.padded_shape(height, width)
        z_shape = (len(self.z_scale_index), hp // HYPER_STRIDE, wp // HYPER_STRIDE)
        z_tables = np.broadcast_to(self.z_scale_index[:, None, None], z_shape)
        z_int = self.coder.decode(sections[0], z_tables, escapes[:z_escape_count])
        if np.abs(z_int).max(initial=0) > Z_LIMIT:
            raise WireFormatError(f"hyper latent outside +-{Z_LIMIT}: corrupted payload")
        mean, scale_index = hyper_synthesis_int(z_int, self.layers, self.latent_channels)
        symbols = self.coder.decode(sections[1], scale_index, escapes[z_escape_count:])
        qmap = self._decode_qmap(sections[2], (hp // QMAP_BLOCK, wp // QMAP_BLOCK))
        return symbols + mean, qmap, level

    def decompress(self, sections: list[bytes], metadata: dict, *, with_semantic: bool = True
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        y_hat, qmap, level = self.decode_latents(sections, metadata)
        # Integer-exact synthesis: its input grid is computed here in float64, its output is
        # integer pixels, so every backend reconstructs the same picture.
        grid = input_integers(y_hat[None], self._gain_maps(level, qmap, inverse=True),
                              self.synthesis_input_exp)
        (pixels,) = self._decoder_for(grid.shape).run("decoder", {"grid": grid})
        height, width = metadata["height"], metadata["width"]
        if pixels.shape[2] < height or pixels.shape[3] < width:
            raise CodecError(f"decoder produced {pixels.shape[3]}x{pixels.shape[2]} for a {width}x{height} frame")
        crop = pixels[0, :, :height, :width]
        if not np.array_equal(crop, np.clip(np.floor(crop), 0, 255)):
            # The exported graph ends in floor and clip: anything else is not that graph.
            raise CodecError(f"the {self.backend_name} decoder returned pixels off the 0..255 integer "
                             "grid: it does not run the exported integer synthesis")
        rgb = np.ascontiguousarray(crop.astype(np.uint8).transpose(1, 2, 0))
        semantic = self.backbone.segment(rgb).semantic if with_semantic else None
        return rgb, semantic
