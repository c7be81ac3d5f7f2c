"""``x265``: HEVC all-intra coding of one camera frame, the BPG-style anchor.

BPG (Bellard's "Better Portable Graphics") is an HEVC intra frame in a small
wrapper; this codec is its stand-in for rate-distortion comparisons: one
frame, coded as an IDR picture by libx265 through PyAV, in full-range
BT.601 YCbCr 4:4:4 (no chroma subsampling, like ``bpgenc -f 444``).

Rate control is constant QP by default (``qp``, 0..51, the knob BPG exposes;
``ipratio=1`` makes it the QP of the intra slice itself, not of an imaginary
P slice). Setting ``crf`` >= 0 switches to constant rate factor instead.

Reproducibility: one frame thread, a one-thread pool and no wall-clock
dependent decisions, so the same input and settings give the same bytes on
a given libx265 build. Bytes may differ between libx265 versions; decoding
any of them is standard HEVC.

The colour conversion is done here in numpy (JPEG/JFIF full-range BT.601
equations), not by swscale, so that it is exact, documented and identical
on encode and decode. Odd sizes need no padding in 4:4:4 (x265 pads to its
coding-unit size internally and signals a conformance window), but libx265
refuses pictures under 16 pixels a side: those are padded by repeating the
last row/column and cropped back after decoding.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..errors import CodecError, InvalidFrameError, WireFormatError
from ..frames import IMAGE_ENCODINGS, CameraFrame, Modality
from ..wire import Container, check_image_shape, meta_get
from .base import Codec, Param, camera_meta, register_codec

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
           "slower", "veryslow")
TUNES = ("psnr", "ssim", "none")
# Encodings this codec carries: colour in 4:4:4, grey as a luma-only picture.
_COLOUR = ("rgb8", "bgr8")
_GREY = ("mono8",)
MIN_SIDE = 16  # libx265 refuses smaller pictures


def _coded_size(height: int, width: int) -> tuple[int, int]:
    return max(height, MIN_SIDE), max(width, MIN_SIDE)


def _max_decoder_pixels(height: int, width: int) -> int:
    """Bound the decoder's allocation by the declared size (its buffers are
    aligned to 64-pixel coding tree blocks, plus a margin)."""
    h, w = _coded_size(height, width)
    return (-(-h // 64) * 64 + 64) * (-(-w // 64) * 64 + 64)

# Full-range BT.601 (JFIF) RGB -> YCbCr, as rows of a 3x3 matrix plus offsets.
_RGB_TO_YCC = np.array([[0.299, 0.587, 0.114],
                        [-0.168735892, -0.331264108, 0.5],
                        [0.5, -0.418687589, -0.081312411]])
_YCC_OFFSET = np.array([0.0, 128.0, 128.0])
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> 3 x H x W uint8 planes (Y, Cb, Cr), full range."""
    ycc = rgb.astype(np.float64) @ _RGB_TO_YCC.T + _YCC_OFFSET
    return np.ascontiguousarray(np.clip(np.rint(ycc), 0, 255).astype(np.uint8).transpose(2, 0, 1))


def ycbcr_to_rgb(planes: np.ndarray) -> np.ndarray:
    """3 x H x W uint8 (Y, Cb, Cr) planes -> H x W x 3 uint8 RGB."""
    ycc = planes.transpose(1, 2, 0).astype(np.float64) - _YCC_OFFSET
    return np.clip(np.rint(ycc @ _YCC_TO_RGB.T), 0, 255).astype(np.uint8)


def _import_av():
    try:
        import av
    except ImportError as exc:  # PyAV is an optional dependency of the library
        raise CodecError(f"codec 'x265' needs PyAV with libx265 (pip install av): {exc}") from None
    return av


@register_codec
class X265Codec(Codec):
    name = "x265"
    modalities = frozenset({Modality.CAMERA})
    description = "HEVC all-intra (libx265 via PyAV), YCbCr 4:4:4: the BPG anchor"
    params = (
        Param("qp", int, 27, "constant quantisation parameter of the intra slice "
              "(lower = better quality, more bytes)", min=0, max=51),
        Param("crf", float, -1.0, "constant rate factor; when >= 0 it replaces qp",
              min=-1.0, max=51.0),
        Param("preset", str, "medium", "x265 speed preset", choices=PRESETS),
        Param("tune", str, "psnr", "x265 tuning: psnr/ssim switch off psycho-visual "
              "optimisations that hurt the objective metric; none keeps x265's defaults",
              choices=TUNES),
    )

    def _x265_params(self) -> str:
        s = self.settings
        rate = f"crf={s['crf']:g}" if s["crf"] >= 0 else f"qp={s['qp']}"
        # keyint=1: every frame an IDR picture; frame-threads/pools=1 and no
        # info SEI (it embeds the encoder's version string) for reproducible bytes.
        return (f"{rate}:ipratio=1:keyint=1:min-keyint=1:frame-threads=1:pools=1:"
                "info=0:log-level=error:range=full:colormatrix=bt470bg")

    def _encode(self, frame: CameraFrame):
        if frame.encoding in _COLOUR:
            planes, pix_fmt = rgb_to_ycbcr(frame.to_rgb8()), "yuv444p"
        elif frame.encoding in _GREY:
            planes, pix_fmt = frame.pixels, "gray"
        else:
            raise InvalidFrameError(
                f"codec 'x265' codes 8-bit rgb8/bgr8/mono8 images, not {frame.encoding}; "
                "use 'png' (lossless, keeps alpha and 16 bits) or 'jpegxl'")
        coded_h, coded_w = _coded_size(frame.height, frame.width)
        if (coded_h, coded_w) != (frame.height, frame.width):
            pad = [(0, coded_h - frame.height), (0, coded_w - frame.width)]
            planes = np.pad(planes, ([(0, 0)] if planes.ndim == 3 else []) + pad, mode="edge")
        av = _import_av()
        ctx = av.CodecContext.create("libx265", "w")
        ctx.width, ctx.height = coded_w, coded_h
        ctx.pix_fmt = pix_fmt
        ctx.time_base = Fraction(1, 1)
        options = {"preset": self.settings["preset"], "x265-params": self._x265_params()}
        if self.settings["tune"] != "none":
            options["tune"] = self.settings["tune"]
        ctx.options = options
        picture = av.VideoFrame.from_ndarray(planes, format=pix_fmt)
        try:
            packets = ctx.encode(picture) + ctx.encode(None)
        except av.error.FFmpegError as exc:
            raise CodecError(f"libx265 failed to encode a {frame.width}x{frame.height} "
                             f"image: {exc}") from None
        stream = b"".join(bytes(p) for p in packets)
        if not stream:
            raise CodecError("libx265 produced no bitstream for a single frame")
        meta = camera_meta(frame)
        meta["colour"] = "ycbcr601full444" if pix_fmt == "yuv444p" else "grey"
        return meta, [stream]

    def _decode(self, c: Container) -> CameraFrame:
        if len(c.sections) != 1:
            raise WireFormatError(f"x265 payload needs 1 section, has {len(c.sections)}")
        h, w = meta_get(c.metadata, "height"), meta_get(c.metadata, "width")
        enc = meta_get(c.metadata, "encoding", str)
        if enc not in _COLOUR + _GREY:
            raise WireFormatError(f"x265 payload declares unsupported encoding {enc!r}")
        check_image_shape(h, w, IMAGE_ENCODINGS[enc][0])
        pix_fmt = "yuv444p" if enc in _COLOUR else "gray"
        av = _import_av()
        ctx = av.CodecContext.create("hevc", "r")
        # A stream may claim a larger picture than the metadata: refuse to allocate it.
        ctx.options = {"max_pixels": str(_max_decoder_pixels(h, w))}
        try:
            pictures = ctx.decode(av.Packet(c.sections[0])) + ctx.decode(None)
        except av.error.FFmpegError as exc:
            raise WireFormatError(f"HEVC stream does not decode as the declared {w}x{h} "
                                  f"picture (larger pictures are refused): {exc}") from None
        if len(pictures) != 1:
            raise WireFormatError(f"HEVC stream holds {len(pictures)} pictures, expected 1")
        pic = pictures[0]
        coded_h, coded_w = _coded_size(h, w)
        if (pic.height, pic.width, pic.format.name) != (coded_h, coded_w, pix_fmt):
            raise WireFormatError(
                f"HEVC picture is {pic.width}x{pic.height} {pic.format.name}, metadata says "
                f"{coded_w}x{coded_h} {pix_fmt}")
        planes = pic.to_ndarray()
        if enc in _GREY:
            grey = planes.reshape(coded_h, coded_w)[:h, :w]
            return CameraFrame(np.ascontiguousarray(grey), enc, c.stamp_ns, c.frame_id)
        rgb = ycbcr_to_rgb(planes.reshape(3, coded_h, coded_w)[:, :h, :w])
        pixels = rgb if enc == "rgb8" else np.ascontiguousarray(rgb[:, :, ::-1])
        return CameraFrame(pixels, enc, c.stamp_ns, c.frame_id)
