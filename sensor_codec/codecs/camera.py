"""Reference image codecs: ``jpeg``, ``webp``, ``avif``, ``jpegxl`` (lossy) and ``png``
(lossless), through imagecodecs.

These are the baselines every learned camera codec is measured against, so
they share one treatment of the frame:

* colour encodings are compressed as RGB (the order the codecs' colour
  transforms assume) and turned back into the frame's channel order;
* the alpha plane of ``rgba8``/``bgra8`` is kept losslessly in a second,
  zstd-compressed section (it is nearly always constant, so it costs bytes
  only when it carries information);
* ``mono8`` is compressed as greyscale where the codec has a greyscale mode
  and otherwise as grey RGB, read back as the rounded channel mean;
* ``mono16`` is accepted only by codecs with a 16-bit mode (``png``,
  ``jpegxl``); the others refuse it rather than silently drop 8 bits.

Decoding writes into an array of the size the metadata declares, after that
size has passed the container's caps, so a stream claiming a larger image
is refused before anything of its size is allocated.
"""

from __future__ import annotations

from typing import ClassVar

import imagecodecs
import numpy as np
import zstandard

from ..errors import CodecError, InvalidFrameError, WireFormatError
from ..frames import IMAGE_ENCODINGS, CameraFrame, Modality
from ..wire import Container, check_image_shape, meta_get
from .base import Codec, Param, camera_meta, register_codec
from .streams import zstd_decompress_exact

_ALPHA_ENCODINGS = ("rgba8", "bgra8")
_BGR_ENCODINGS = ("bgr8", "bgra8")


class ImageCodec(Codec):
    """Shared frame handling of the reference image codecs.

    A subclass sets ``stream`` (the format's name, for messages), whether it
    has a greyscale mode and a 16-bit mode, and implements ``_compress_plane``
    and ``_decompress_plane``.
    """

    modalities = frozenset({Modality.CAMERA})
    stream: ClassVar[str]
    has_grey: ClassVar[bool] = True
    has_16bit: ClassVar[bool] = False

    def _compress_plane(self, plane: np.ndarray) -> bytes:
        """Compress H x W x 3 uint8 RGB, or H x W grey (uint8, or uint16 if
        ``has_16bit``)."""
        raise NotImplementedError

    def _decompress_plane(self, data: bytes, out: np.ndarray) -> np.ndarray:
        """Decode ``data`` into ``out`` (the declared shape); raise the
        library's error if the stream holds another shape."""
        raise NotImplementedError

    def _encode(self, frame: CameraFrame):
        if frame.encoding == "mono16" and not self.has_16bit:
            raise InvalidFrameError(
                f"codec {self.name!r} has no 16-bit mode and would drop the low byte of "
                f"mono16; use 'png' or 'jpegxl' (or 'zstd') for mono16 images")
        pixels = frame.pixels
        if frame.channels == 1:
            plane = pixels if self.has_grey else np.repeat(pixels[:, :, None], 3, axis=2)
        else:
            plane = pixels[:, :, 2::-1] if frame.encoding in _BGR_ENCODINGS else pixels[:, :, :3]
        try:
            sections = [self._compress_plane(np.ascontiguousarray(plane))]
        except (RuntimeError, ValueError) as exc:
            raise CodecError(f"{self.stream} encoder failed on a {frame.width}x{frame.height} "
                             f"{frame.encoding} image: {exc}") from exc
        if frame.encoding in _ALPHA_ENCODINGS:
            alpha = np.ascontiguousarray(pixels[:, :, 3])
            sections.append(zstandard.ZstdCompressor(level=19).compress(alpha.tobytes()))
        return camera_meta(frame), sections

    def _decode(self, c: Container) -> CameraFrame:
        height, width = meta_get(c.metadata, "height"), meta_get(c.metadata, "width")
        encoding = meta_get(c.metadata, "encoding", str)
        if encoding not in IMAGE_ENCODINGS:
            raise WireFormatError(f"unknown image encoding {encoding!r} in {self.name} payload")
        channels, dtype = IMAGE_ENCODINGS[encoding]
        check_image_shape(height, width, channels)
        if encoding == "mono16" and not self.has_16bit:
            raise WireFormatError(f"{self.name} payload claims a mono16 image; this codec "
                                  "never writes one (it has no 16-bit mode)")
        expected_sections = 2 if encoding in _ALPHA_ENCODINGS else 1
        if len(c.sections) != expected_sections:
            raise WireFormatError(f"{self.name} payload of a {encoding} image needs "
                                  f"{expected_sections} section(s), has {len(c.sections)}")
        if channels == 1 and self.has_grey:
            out = np.empty((height, width), dtype=dtype)
        else:
            out = np.empty((height, width, 3), dtype=np.uint8)
        try:
            plane = self._decompress_plane(c.sections[0], out)
        except (RuntimeError, ValueError) as exc:
            raise WireFormatError(
                f"{self.stream} stream does not decode to the declared {width}x{height} "
                f"{encoding} image: {exc}") from None
        if channels == 1:
            pixels = plane if plane.ndim == 2 else _grey_from_rgb(plane)
        else:
            rgb = plane[:, :, ::-1] if encoding in _BGR_ENCODINGS else plane
            if encoding in _ALPHA_ENCODINGS:
                alpha = _decompress_alpha(c.sections[1], height * width)
                pixels = np.concatenate([rgb, alpha.reshape(height, width, 1)], axis=2)
            else:
                pixels = rgb
        return CameraFrame(np.ascontiguousarray(pixels), encoding, c.stamp_ns, c.frame_id)


def _grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    # A grey image coded as RGB decodes to near-equal channels; their mean is
    # the best estimate of the original grey level.
    return np.rint(rgb.mean(axis=2)).astype(np.uint8)


def _decompress_alpha(data: bytes, expected: int) -> np.ndarray:
    return np.frombuffer(zstd_decompress_exact(data, expected, "alpha section"), dtype=np.uint8)


_QUALITY_HELP = "0 (smallest) .. 100 (best quality)"


@register_codec
class JpegCodec(ImageCodec):
    name = "jpeg"
    stream = "JPEG"
    description = "Baseline JPEG (libjpeg-turbo), the camera reference"
    params = (
        Param("quality", int, 90, f"JPEG quality, {_QUALITY_HELP}", min=0, max=100),
        Param("subsampling", str, "420", "chroma subsampling", choices=("444", "422", "420")),
    )

    def _compress_plane(self, plane):
        kwargs = {} if plane.ndim == 2 else {"subsampling": self.settings["subsampling"]}
        return imagecodecs.jpeg8_encode(plane, level=self.settings["quality"], **kwargs)

    def _decompress_plane(self, data, out):
        return imagecodecs.jpeg8_decode(data, out=out)


@register_codec
class PngCodec(ImageCodec):
    name = "png"
    stream = "PNG"
    lossless = True
    has_16bit = True
    description = "Lossless PNG (deflate), every encoding including mono16"
    params = (Param("level", int, 6, "deflate level, 0 (fastest) .. 9 (smallest)", min=0, max=9),)

    def _compress_plane(self, plane):
        return imagecodecs.png_encode(plane, level=self.settings["level"])

    def _decompress_plane(self, data, out):
        return imagecodecs.png_decode(data, out=out)


@register_codec
class WebpCodec(ImageCodec):
    name = "webp"
    stream = "WebP"
    has_grey = False  # libwebp takes only RGB(A)
    description = "Lossy WebP (VP8 intra)"
    params = (
        Param("quality", int, 80, f"WebP quality, {_QUALITY_HELP}", min=0, max=100),
        Param("method", int, 4, "encoder effort, 0 (fastest) .. 6 (smallest)", min=0, max=6),
    )

    def _compress_plane(self, plane):
        # imagecodecs defaults WebP to lossless; this codec is the lossy baseline.
        return imagecodecs.webp_encode(plane, level=self.settings["quality"], lossless=False,
                                       method=self.settings["method"])

    def _decompress_plane(self, data, out):
        return imagecodecs.webp_decode(data, out=out)


@register_codec
class AvifCodec(ImageCodec):
    name = "avif"
    stream = "AVIF"
    # imagecodecs codes greyscale AVIF losslessly whatever the quality, so
    # grey images go through the RGB path to honour the quality setting.
    has_grey = False
    description = "Lossy AVIF (AV1 intra, libavif)"
    params = (
        # libavif turns lossless at 100, so the lossy baseline stops at 99.
        Param("quality", int, 60, "AVIF quality, 0 (smallest) .. 99 (best quality)",
              min=0, max=99),
        Param("speed", int, 8, "encoder speed, 0 (slowest, smallest) .. 10 (fastest)",
              min=0, max=10),
    )

    def _compress_plane(self, plane):
        return imagecodecs.avif_encode(plane, level=self.settings["quality"],
                                       speed=self.settings["speed"], numthreads=1)

    def _decompress_plane(self, data, out):
        return imagecodecs.avif_decode(data, out=out, numthreads=1)


@register_codec
class JpegXlCodec(ImageCodec):
    name = "jpegxl"
    stream = "JPEG XL"
    has_16bit = True
    description = "Lossy JPEG XL (libjxl VarDCT), 8- and 16-bit"
    params = (
        Param("quality", int, 90, f"JPEG XL quality, {_QUALITY_HELP}", min=0, max=100),
        Param("effort", int, 3, "encoder effort, 1 (fastest) .. 9 (smallest)", min=1, max=9),
    )

    def _compress_plane(self, plane):
        return imagecodecs.jpegxl_encode(plane, level=self.settings["quality"],
                                         effort=self.settings["effort"], numthreads=1)

    def _decompress_plane(self, data, out):
        return imagecodecs.jpegxl_decode(data, out=out, numthreads=1)
