"""Semantic importance: per-class weights (``config/semantic_importance.yaml``) and the
block quality map the learned camera codec sends with each frame."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .backbone_meta import CLASS_NAMES, NUM_CLASSES

CONFIG_NAME = "semantic_importance.yaml"
QMAP_BLOCK = 32      # pixels per quality-map block side (two latent cells)
QMAP_LEVELS = 4


def _candidates() -> list[Path]:
    repo_config = Path(__file__).resolve().parents[2] / "config" / CONFIG_NAME
    return [repo_config, Path(sys.prefix) / "share" / "sensor_codec" / "config" / CONFIG_NAME]


@dataclass(frozen=True)
class Importance:
    weights: np.ndarray          # (NUM_CLASSES,) float32
    thresholds: tuple[float, ...]
    fraction_weight: float
    source: str

    def pixel_weights(self, semantic: np.ndarray) -> np.ndarray:
        """Per-pixel importance from a class-id map (ids >= NUM_CLASSES get weight 1)."""
        table = np.append(self.weights, np.float32(1.0)).astype(np.float32)
        return table[np.minimum(semantic, NUM_CLASSES)]

    def quality_levels(self, semantic: np.ndarray) -> np.ndarray:
        """(ceil(H/32), ceil(W/32)) uint8 levels 0..3 for an (H, W) class-id map."""
        weights = self.pixel_weights(semantic)
        height, width = weights.shape
        bh, bw = -(-height // QMAP_BLOCK), -(-width // QMAP_BLOCK)
        padded = np.pad(weights, ((0, bh * QMAP_BLOCK - height), (0, bw * QMAP_BLOCK - width)),
                        mode="edge")
        blocks = padded.reshape(bh, QMAP_BLOCK, bw, QMAP_BLOCK)
        score = np.maximum(blocks.mean(axis=(1, 3)), self.fraction_weight * blocks.max(axis=(1, 3)))
        return np.digitize(score, self.thresholds).astype(np.uint8)


def load_importance(path: str | Path | None = None) -> Importance:
    import yaml

    candidates = [Path(path)] if path else _candidates()
    for candidate in candidates:
        if candidate.is_file():
            break
    else:
        raise ConfigError(f"semantic importance table not found (looked in "
                          f"{', '.join(str(c) for c in candidates)})")
    try:
        data = yaml.safe_load(candidate.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{candidate}: not valid YAML: {exc}") from exc
    classes = data.get("classes", {})
    unknown = set(classes) - set(CLASS_NAMES)
    missing = set(CLASS_NAMES) - set(classes)
    if unknown or missing:
        raise ConfigError(f"{candidate}: classes must be exactly {list(CLASS_NAMES)}; "
                          f"unknown {sorted(unknown)}, missing {sorted(missing)}")
    weights = np.array([float(classes[name]) for name in CLASS_NAMES], dtype=np.float32)
    if not np.all(np.isfinite(weights)) or weights.min() <= 0:
        raise ConfigError(f"{candidate}: class importances must be positive numbers, got {weights.tolist()}")
    qmap = data.get("quality_map", {})
    thresholds = tuple(float(t) for t in qmap.get("thresholds", (0.45, 0.9, 1.4)))
    if len(thresholds) != QMAP_LEVELS - 1 or list(thresholds) != sorted(thresholds):
        raise ConfigError(f"{candidate}: quality_map.thresholds must be {QMAP_LEVELS - 1} increasing "
                          f"numbers, got {list(thresholds)}")
    fraction = float(qmap.get("fraction_weight", 0.6))
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"{candidate}: quality_map.fraction_weight must be in [0, 1], got {fraction}")
    return Importance(weights=weights, thresholds=thresholds, fraction_weight=fraction,
                      source=str(candidate))
