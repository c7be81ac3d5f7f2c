"""The learned context model: P(residual symbol | stream, scale, context).

Each geometry stream (see ``predict.STREAMS``) has a table of shape
(scales, contexts, alphabet): a categorical distribution over the entropy
coder's symbols for every context, where the context is a small integer
made from already-decoded causal neighbours (magnitudes of the residuals of
the point on the previous beam at the same azimuth, the range, ...). The
tables are *trained* by counting symbols over real scans at several error
bounds and smoothing (an additive prior), which is the maximum-likelihood
fit of this model family; they are frozen, shipped as safetensors and
identified by a hash of their bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError, UnknownModelError
from .entropy import ALPHABET

MODEL_NAME = "lidar_ctx"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "lidar_context.safetensors"
# Error bounds (metres) the scale axis of the tables stands for: scale s
# serves bounds near BOUND_SCALES[s] (nearest in log2).
BOUND_SCALES = (0.005, 0.01, 0.02, 0.04)
PRIOR = 0.05  # additive smoothing count per symbol


def scale_index(bound: float) -> int:
    logs = np.log2(np.asarray(BOUND_SCALES))
    return int(np.argmin(np.abs(logs - np.log2(bound))))


class ContextModel:
    """Frozen probability tables for each stream, with a stable model id."""

    def __init__(self, tables: dict[str, np.ndarray]) -> None:
        for name, t in tables.items():
            if t.ndim != 3 or t.shape[2] != ALPHABET or t.shape[0] != len(BOUND_SCALES):
                raise ConfigError(f"context table {name!r} has shape {t.shape}, expected "
                                  f"({len(BOUND_SCALES)}, contexts, {ALPHABET})")
        self.tables = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tables.items()}
        digest = hashlib.sha256()
        for name in sorted(self.tables):
            digest.update(name.encode())
            digest.update(self.tables[name].tobytes())
        self.model_id = f"{MODEL_NAME}-{digest.hexdigest()[:12]}"
        # float64 rows for constriction, indexed [stream][scale] -> (contexts, alphabet)
        self._rows = {k: [v[s].astype(np.float64) for s in range(v.shape[0])]
                      for k, v in self.tables.items()}
        self._neg_log2: dict[tuple[str, int], np.ndarray] = {}

    def neg_log2(self, stream: str, scale: int) -> np.ndarray:
        """-log2 of the normalised table (floored at 2**-24): ideal code lengths."""
        key = (stream, scale)
        if key not in self._neg_log2:
            t = self.table(stream, scale)
            p = t / t.sum(axis=1, keepdims=True)
            self._neg_log2[key] = -np.log2(np.maximum(p, 2.0 ** -24))
        return self._neg_log2[key]

    def table(self, stream: str, scale: int) -> np.ndarray:
        try:
            return self._rows[stream][scale]
        except KeyError:
            raise UnknownModelError(
                f"context model {self.model_id} has no table for stream {stream!r}") from None

    @classmethod
    def from_counts(cls, counts: dict[str, np.ndarray]) -> ContextModel:
        tables = {}
        for name, c in counts.items():
            c = c.astype(np.float64) + PRIOR
            tables[name] = (c / c.sum(axis=2, keepdims=True)).astype(np.float32)
        return cls(tables)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file
        save_file(self.tables, str(path), metadata={"model_id": self.model_id})

    @classmethod
    def load(cls, path: Path | str = DEFAULT_MODEL_PATH) -> ContextModel:
        from safetensors.numpy import load_file
        path = Path(path)
        if not path.is_file():
            raise UnknownModelError(
                f"lidar context model file {path} is missing; reinstall sensor_codec or run "
                "benchmarks/train_lidar_context.py to rebuild it")
        return cls(load_file(str(path)))


_DEFAULT: ContextModel | None = None


def default_model() -> ContextModel:
    """The shipped model, loaded once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ContextModel.load()
    return _DEFAULT


def uniform_model(context_counts: dict[str, int]) -> ContextModel:
    """An untrained model (flat tables): a placeholder for training and tests."""
    return ContextModel.from_counts(
        {k: np.zeros((len(BOUND_SCALES), n, ALPHABET)) for k, n in context_counts.items()})
