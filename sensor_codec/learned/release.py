"""Released models: files named by weight hash, a manifest per model, defaults.

A release ``<kind>-<sha256[:12]>`` lives in a models folder as::

    <id>.safetensors        weights (+ frozen entropy tables for codecs)
    <id>.onnx / <id>-<graph>.onnx   the ONNX graphs
    <id>.json               manifest: kind, id, full weight hash, graphs, metrics
    <id>.md                 model card

``defaults.json`` names the release each kind uses by default. The shipped
folder is ``sensor_codec/models``; ``SENSOR_CODEC_MODELS`` overrides it.
The id is a hash of the tensors (names, dtypes, shapes, bytes), so it does not
change when only file metadata changes, and a payload's model id names
exactly the weights that made it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, UnknownModelError

SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULTS_FILE = "defaults.json"


def models_dir(path: str | Path | None = None) -> Path:
    if path:
        return Path(path)
    return Path(os.environ.get("SENSOR_CODEC_MODELS", SHIPPED_MODELS))


def tensor_hash(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, little-endian bytes) in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def model_id_for(kind: str, tensors: dict[str, np.ndarray]) -> str:
    return f"{kind}-{tensor_hash(tensors)[:12]}"


@dataclass(frozen=True)
class ModelRelease:
    """One released model as found on disk."""

    model_id: str
    kind: str
    folder: Path
    manifest: dict

    @property
    def weights_path(self) -> Path:
        return self.folder / f"{self.model_id}.safetensors"

    def graph_path(self, graph: str) -> Path:
        name = self.manifest.get("graphs", {}).get(graph)
        if name is None:
            raise ConfigError(f"model {self.model_id} has no ONNX graph {graph!r}; "
                              f"it has {sorted(self.manifest.get('graphs', {}))}")
        return self.folder / name

    def load_tensors(self, verify: bool = True) -> dict[str, np.ndarray]:
        """The weights as numpy arrays, checked against the id's hash."""
        from safetensors.numpy import load_file

        if not self.weights_path.is_file():
            raise UnknownModelError(f"model {self.model_id}: weights file {self.weights_path} is missing")
        tensors = load_file(str(self.weights_path))
        if verify:
            full = tensor_hash(tensors)
            if full != self.manifest.get("sha256"):
                raise ConfigError(f"{self.weights_path} does not match its manifest hash "
                                  f"({full[:12]} != {str(self.manifest.get('sha256'))[:12]}); "
                                  "re-export the model")
        return tensors


def held_models(kind: str | None = None, folder: str | Path | None = None) -> list[str]:
    """Ids of the releases (of ``kind``) in the models folder."""
    root = models_dir(folder)
    if not root.is_dir():
        return []
    ids = []
    for manifest in sorted(root.glob("*.json")):
        if manifest.name == DEFAULTS_FILE:
            continue
        try:
            info = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(info, dict) and "id" in info and (kind is None or info.get("kind") == kind):
            ids.append(info["id"])
    return ids


def find_release(model_id: str, folder: str | Path | None = None) -> ModelRelease:
    """The release called ``model_id``; UnknownModelError names the held ones if absent."""
    root = models_dir(folder)
    path = root / f"{model_id}.json"
    if "/" in model_id or "\\" in model_id or not path.is_file():
        kind = model_id.split("-", 1)[0]
        raise UnknownModelError(f"model {model_id!r} is not held in {root}; this decoder has "
                                f"{held_models(kind, root) or 'no ' + kind + ' models'}")
    manifest = json.loads(path.read_text())
    return ModelRelease(model_id=model_id, kind=manifest["kind"], folder=root, manifest=manifest)


def default_release(kind: str, folder: str | Path | None = None) -> ModelRelease:
    root = models_dir(folder)
    defaults_path = root / DEFAULTS_FILE
    defaults = json.loads(defaults_path.read_text()) if defaults_path.is_file() else {}
    if kind not in defaults:
        raise UnknownModelError(f"no default {kind} model in {root} ({DEFAULTS_FILE} names "
                                f"{sorted(defaults) or 'none'}); run 'sensor-codec export {kind}'")
    return find_release(defaults[kind], root)


def resolve_release(kind: str, model: str | None = None, folder: str | Path | None = None) -> ModelRelease:
    """``model`` may be empty/'default', a model id, or a path to a manifest .json."""
    if not model or model == "default":
        return default_release(kind, folder)
    if model.endswith(".json") and Path(model).is_file():
        return find_release(Path(model).stem, Path(model).parent)
    return find_release(model, folder)


def set_default(kind: str, model_id: str, folder: str | Path) -> None:
    path = Path(folder) / DEFAULTS_FILE
    defaults = json.loads(path.read_text()) if path.is_file() else {}
    defaults[kind] = model_id
    path.write_text(json.dumps(defaults, indent=2, sort_keys=True) + "\n")
