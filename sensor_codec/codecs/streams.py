"""Bounded zstd decompression for decoders that distrust their input."""

from __future__ import annotations

import zstandard

from ..errors import WireFormatError


def zstd_decompress_exact(data: bytes, expected: int, what: str) -> bytes:
    """Decompress ``data``, which must hold exactly ``expected`` bytes.

    ``max_output_size`` alone is no guard: python-zstandard ignores it and
    allocates whatever size the frame header declares, so a forged header
    could demand terabytes. The declared size is checked first.
    """
    try:
        declared = zstandard.get_frame_parameters(data).content_size
        if declared not in (expected, zstandard.CONTENTSIZE_UNKNOWN):
            raise WireFormatError(f"{what} declares {declared} bytes, the payload needs "
                                  f"{expected}")
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=expected)
    except zstandard.ZstdError as exc:
        raise WireFormatError(f"{what} is not a valid zstd stream: {exc}") from None
    if len(raw) != expected:
        raise WireFormatError(f"{what} holds {len(raw)} bytes, the payload needs {expected}")
    return raw
