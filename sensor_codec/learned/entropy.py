"""Deterministic entropy model of the learned camera codec (numpy + constriction, no torch).

Everything a decoder needs to rebuild the entropy model is computed here from
integers, so a frame encoded by ONNX Runtime decodes bit-exactly under
PyTorch (or any other backend, or machine) and the reverse:

* **Frozen probability tables.** Each of ``NUM_SCALES`` log-spaced Gaussian
  scales has an integer frequency table (sum ``2**PRECISION``) computed once at
  export and stored in the release; nobody evaluates ``erf`` at run time.
  Symbols outside a table's support are coded as an escape symbol and sent
  raw in a separate section.
* **Fixed-point hyper-synthesis.** The hyper decoder maps the transmitted
  integers ``z`` to the means and scale indices of ``y`` with integer weights
  and integer activations. It is evaluated in float64, but every product and
  every partial sum is an integer far below 2**53 (bounds in
  ``hyper_synthesis_int``), so the result is exact whatever the summation
  order, BLAS library or CPU. Means are multiples of ``2**-FRAC_ACT``; scale
  indices come from an integer shift.
* **constriction** receives identical float64 probability arrays (exact small
  integers) on both sides and quantises them with its own deterministic
  integer code; the constriction version is recorded in the model manifest.

The float parts (analysis and synthesis transforms) only decide *which*
integers the encoder sends and how good the decoded picture looks; they cannot
desynchronise the decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CodecError, TruncatedPayloadError, WireFormatError

NUM_SCALES = 64
SCALE_MIN = 0.11
SCALE_MAX = 64.0
PRECISION = 16           # table frequencies sum to 2**16
TAIL_STDS = 6.0          # support half-width in standard deviations
MAX_HALF_SUPPORT = 255
FRAC_ACT = 4             # fractional bits of hyper-synthesis activations
FRAC_WEIGHT = 10         # fractional bits of hyper-synthesis weights
ACT_LIMIT = 2 ** 16 - 1  # activation clamp (integer units)
WEIGHT_LIMIT = 2 ** 15   # |integer weight| bound
Z_LIMIT = 63             # |z| is clamped to this before coding


def scale_table() -> np.ndarray:
    """The NUM_SCALES Gaussian standard deviations, log-spaced SCALE_MIN..SCALE_MAX."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), NUM_SCALES))


def build_frequency_tables() -> tuple[np.ndarray, np.ndarray]:
    """(freqs (NUM_SCALES, 2*MAX_HALF_SUPPORT+2) int32, half_support (NUM_SCALES,) int32).

    Row k covers symbols -L..L (index v+L) plus an escape symbol at index 2L+1.
    Run at export only; the result is frozen into the release.
    """
    from scipy.special import ndtr

    width = 2 * MAX_HALF_SUPPORT + 2
    freqs = np.zeros((NUM_SCALES, width), dtype=np.int32)
    halves = np.zeros(NUM_SCALES, dtype=np.int32)
    total = 1 << PRECISION
    for k, sigma in enumerate(scale_table()):
        half = int(min(MAX_HALF_SUPPORT, max(1, math.ceil(TAIL_STDS * sigma))))
        values = np.arange(-half, half + 1, dtype=np.float64)
        pmf = ndtr((values + 0.5) / sigma) - ndtr((values - 0.5) / sigma)
        escape = max(0.0, 1.0 - pmf.sum())
        probs = np.append(pmf, escape)
        counts = np.maximum(1, np.round(probs * total)).astype(np.int64)
        counts[half] += total - counts.sum()  # the mode absorbs the rounding error
        if counts[half] < 1:
            raise CodecError(f"frequency table for sigma={sigma} cannot be normalised")
        freqs[k, :2 * half + 2] = counts
        halves[k] = half
    return freqs, halves


@dataclass
class HyperLayer:
    weight: np.ndarray   # (out, in, 3, 3) integer values, float64 storage
    bias: np.ndarray     # (out,) integer values at FRAC_ACT + FRAC_WEIGHT bits
    upsample: bool       # nearest x2 before the convolution
    relu: bool


def quantise_hyper_layer(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float conv weights -> the integers the fixed-point hyper-synthesis uses."""
    w = np.clip(np.round(weight.astype(np.float64) * 2 ** FRAC_WEIGHT), -WEIGHT_LIMIT, WEIGHT_LIMIT)
    b = np.round(bias.astype(np.float64) * 2 ** (FRAC_WEIGHT + FRAC_ACT))
    return w.astype(np.int32), b.astype(np.int64)


def _conv3x3_exact(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """3x3 'same' convolution of (C,H,W) by (O,C,3,3); inputs hold integers, so the
    float64 result is exact (all partial sums < 2**53, checked by the caller)."""
    channels, height, width = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    cols = windows.transpose(1, 2, 0, 3, 4).reshape(height * width, channels * 9)
    out = cols @ weight.reshape(weight.shape[0], -1).T
    return out.T.reshape(weight.shape[0], height, width)


def hyper_synthesis_int(z: np.ndarray, layers: list[HyperLayer], latent_channels: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Integer hyper-synthesis: z (Cz, h, w) ints -> (mean, scale_index) of y.

    mean is float64 holding exact multiples of 2**-FRAC_ACT; scale_index int32.
    Exactness bound: |activation| <= 2**16, |weight| <= 2**15, <= 9*256 terms per
    sum -> |partial sum| < 2**43 (+ bias), far below 2**53.
    """
    if np.abs(z).max(initial=0) > Z_LIMIT:
        raise CodecError(f"hyper latent outside +-{Z_LIMIT}; the encoder must clamp it")
    act = z.astype(np.float64) * 2 ** FRAC_ACT
    half_unit = 2.0 ** (FRAC_WEIGHT - 1)
    for layer in layers:
        if layer.weight.shape[1] * 9 > 2 ** 11:
            raise CodecError("hyper-synthesis layer too wide for exact float64 evaluation")
        if layer.upsample:
            act = act.repeat(2, axis=1).repeat(2, axis=2)
        acc = _conv3x3_exact(act, layer.weight) + layer.bias[:, None, None]
        act = np.floor((acc + half_unit) / 2.0 ** FRAC_WEIGHT)
        if layer.relu:
            act = np.clip(act, 0.0, ACT_LIMIT)
        else:
            act = np.clip(act, -ACT_LIMIT, ACT_LIMIT)
    mean = act[:latent_channels] / 2.0 ** FRAC_ACT
    scale_index = np.clip(np.floor((act[latent_channels:2 * latent_channels] + 2 ** (FRAC_ACT - 1))
                                   / 2 ** FRAC_ACT), 0, NUM_SCALES - 1).astype(np.int32)
    return mean, scale_index


class TableCoder:
    """Codes integer symbols with the frozen tables through constriction's ANS coder."""

    def __init__(self, freqs: np.ndarray, halves: np.ndarray) -> None:
        import constriction  # local: only the learned codec needs it

        self._constriction = constriction
        self.freqs = np.asarray(freqs)
        self.halves = np.asarray(halves, dtype=np.int64)
        self._models: dict[int, object] = {}

    def _model(self, k: int):
        model = self._models.get(k)
        if model is None:
            n = 2 * int(self.halves[k]) + 2
            probabilities = self.freqs[k, :n].astype(np.float64)  # exact integers
            model = self._constriction.stream.model.Categorical(probabilities, perfect=False)
            self._models[k] = model
        return model

    def encode(self, values: np.ndarray, indices: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(ANS words as bytes, escaped values int32) for ``values`` coded with table
        ``indices`` (same shape). Symbols are grouped by table in ascending order."""
        values = values.reshape(-1).astype(np.int64)
        indices = indices.reshape(-1).astype(np.int64)
        halves = self.halves[indices]
        escaped = np.abs(values) > halves
        symbols = np.where(escaped, 2 * halves + 1, values + halves).astype(np.int32)
        coder = self._constriction.stream.stack.AnsCoder()
        used = np.unique(indices)
        # ANS is a stack: encode the last group first so decoding runs in ascending order.
        for k in used[::-1]:
            coder.encode_reverse(symbols[indices == k], self._model(int(k)))
        escapes = values[escaped].astype(np.int32)
        # Escapes are listed in the decoder's order: by table, then raster order.
        order = np.argsort(indices[escaped], kind="stable")
        return coder.get_compressed().astype("<u4").tobytes(), escapes[order]

    def decode(self, data: bytes, indices: np.ndarray, escapes: np.ndarray) -> np.ndarray:
        if len(data) % 4:
            raise WireFormatError(f"entropy-coded section of {len(data)} bytes is not whole 32-bit words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        coder = self._constriction.stream.stack.AnsCoder(words)
        flat = indices.reshape(-1).astype(np.int64)
        values = np.zeros(flat.shape, dtype=np.int64)
        escape_pos = 0
        for k in np.unique(flat):
            where = np.flatnonzero(flat == k)
            try:
                symbols = np.asarray(coder.decode(self._model(int(k)), len(where)), dtype=np.int64)
            except (ValueError, RuntimeError, AssertionError) as exc:
                # constriction reports data no model could have produced with an AssertionError
                raise WireFormatError(f"entropy decoding failed in table {int(k)}: {exc}") from exc
            half = int(self.halves[k])
            group = symbols - half
            is_escape = symbols == 2 * half + 1
            count = int(is_escape.sum())
            if escape_pos + count > len(escapes):
                raise TruncatedPayloadError(
                    f"payload declares {len(escapes)} escaped values but decoding needs more")
            group[is_escape] = escapes[escape_pos:escape_pos + count]
            escape_pos += count
            values[where] = group
        if escape_pos != len(escapes):
            raise WireFormatError(f"{len(escapes) - escape_pos} escaped values left over after decoding")
        if not coder.is_empty():
            # An exact decode returns the ANS coder to its initial state; anything
            # left means the declared shape does not match the coded stream.
            raise WireFormatError("entropy-coded section holds more data than the declared "
                                  "image size needs")
        return values.reshape(indices.shape)
