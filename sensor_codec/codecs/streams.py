"""Byte-level helpers shared by codecs: bounded zstd decompression for decoders that
distrust their input, and byte shuffling of fixed-width values."""

from __future__ import annotations

import numpy as np
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


def byte_shuffle(values: np.ndarray) -> bytes:
    """The values' bytes grouped by significance (all first bytes, then all second bytes,
    ...): a general-purpose compressor finds the slowly varying high bytes as runs."""
    if values.size == 0:
        return b""
    as_bytes = np.ascontiguousarray(values).view(np.uint8).reshape(values.size, -1)
    return np.ascontiguousarray(as_bytes.T).tobytes()


def byte_unshuffle(data: bytes, dtype: np.dtype, count: int, what: str = "shuffled values") -> np.ndarray:
    """Inverse of ``byte_shuffle`` for ``count`` values of ``dtype``."""
    dtype = np.dtype(dtype)
    if len(data) != dtype.itemsize * count:
        raise WireFormatError(f"{what} holds {len(data)} bytes, {count} values of {dtype} need "
                              f"{dtype.itemsize * count}")
    if count == 0:
        return np.zeros(0, dtype)
    planes = np.frombuffer(data, np.uint8).reshape(dtype.itemsize, count)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(count)
