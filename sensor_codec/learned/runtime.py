"""Inference backends behind one interface, and the backbone runner.

A backend runs the named graphs of a release (``backbone``; for the camera
codec ``encoder`` and ``decoder``) on numpy feeds and returns numpy outputs:

* ``onnxruntime``: ONNX Runtime CPU execution provider on the exported graphs.
* ``torch``: PyTorch eager on CPU, modules rebuilt from the safetensors weights.
* ``auto``: the best usable GPU backend from ``sensor_codec.engines.registry``
  (``tensorrt`` > ``onnxruntime-cuda`` > ``torch-cuda``), else ``onnxruntime``
  when it imports (it is the faster CPU path for these graphs), else ``torch``;
  the choice and the reason are logged.

torch and onnxruntime are imported only inside their backend, so a process
that uses one never loads the other.
"""

from __future__ import annotations

import abc
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, InvalidFrameError
from .release import ModelRelease, resolve_release

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch")

# kind -> function(tensors) -> {graph name: torch module taking the graph's inputs in order}
_TORCH_GRAPH_BUILDERS: dict[str, Callable] = {}


def register_torch_graphs(kind: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        _TORCH_GRAPH_BUILDERS[kind] = fn
        return fn
    return wrap


class Backend(abc.ABC):
    """Runs a release's graphs. ``run`` takes and returns numpy arrays."""

    name: str = ""

    def __init__(self, release: ModelRelease, threads: int = 0) -> None:
        self.release = release
        self.threads = threads

    def input_names(self, graph: str) -> list[str]:
        names = self.release.manifest.get("inputs", {}).get(graph)
        if names is None:
            raise ConfigError(f"model {self.release.model_id} declares no inputs for graph {graph!r}")
        return list(names)

    @abc.abstractmethod
    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs of ``graph`` in the order the manifest lists them."""


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, release: ModelRelease, threads: int = 0) -> None:
        super().__init__(release, threads)
        import onnxruntime  # local: only this backend needs it

        self._ort = onnxruntime
        self._sessions: dict = {}

    def _session(self, graph: str):
        if graph not in self._sessions:
            options = self._ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
            # Idle workers sleep instead of spinning: nodes run several sessions and processes
            # side by side, and spinning threads starve the others (and the numpy steps).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            path = self.release.graph_path(graph)
            if not path.is_file():
                raise ConfigError(f"ONNX graph {path} of model {self.release.model_id} is missing")
            self._sessions[graph] = self._ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"])
        return self._sessions[graph]

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._session(graph)
        return session.run(None, {name: feeds[name] for name in self.input_names(graph)})


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, release: ModelRelease, threads: int = 0) -> None:
        super().__init__(release, threads)
        # PyTorch's spinning OpenMP workers starve the numpy entropy-model step
        # that follows each graph (a 960x720 encode took 2.7 s instead of ~0.5 s);
        # passive waiting applies if torch has not started its thread pool yet.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch  # local: only this backend needs it

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        builder = _TORCH_GRAPH_BUILDERS.get(release.kind)
        if builder is None:
            _import_kind(release.kind)
            builder = _TORCH_GRAPH_BUILDERS.get(release.kind)
        if builder is None:
            raise ConfigError(f"no PyTorch graphs for model kind {release.kind!r}")
        self._modules = builder(release.load_tensors())

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        module = self._modules.get(graph)
        if module is None:
            raise ConfigError(f"model {self.release.model_id} has no graph {graph!r}")
        torch = self._torch
        with torch.inference_mode():
            outputs = module(*[torch.from_numpy(np.ascontiguousarray(feeds[n]))
                               for n in self.input_names(graph)])
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        return [o.numpy() for o in outputs]


def _import_kind(kind: str) -> None:
    modules = {"backbone": "sensor_codec.learned.backbone_graphs",
               "camera": "sensor_codec.learned.camera_codec"}
    if kind in modules:
        importlib.import_module(modules[kind])


def _gpu_backends():
    """The GPU backends' table (TensorRT, CUDA variants); a light import, see sensor_codec.engines."""
    from ..engines import registry

    return registry


def choose_backend(name: str = "auto") -> tuple[str, str]:
    """(backend name, why). GPU names may carry options: ``torch-cuda:fp16``."""
    gpu = _gpu_backends()
    if name not in BACKENDS and not gpu.is_registered(name):
        raise ConfigError(f"backend {name!r} is not one of {list(BACKENDS) + gpu.names()}")
    if name != "auto":
        gpu.parse_backend_name(name)  # unknown options fail here, before any model loads
        return name, "requested"
    best, skipped = gpu.auto_choice()
    if best is not None:
        return best, skipped
    if importlib.util.find_spec("onnxruntime") is not None:
        return "onnxruntime", f"auto: onnxruntime is installed (fastest CPU path); {skipped}"
    return "torch", f"auto: onnxruntime is not installed, falling back to PyTorch; {skipped}"


def make_backend(release: ModelRelease, name: str = "auto", threads: int = 0) -> Backend:
    chosen, why = choose_backend(name)
    log.info("model %s runs on %s (%s)", release.model_id, chosen, why)
    if _gpu_backends().is_registered(chosen):
        return _gpu_backends().create(chosen, release, threads)
    if chosen == "onnxruntime":
        return OnnxRuntimeBackend(release, threads)
    return TorchBackend(release, threads)


@dataclass
class Segmentation:
    """Backbone output for one frame."""

    semantic: np.ndarray  # (H, W) uint8 class ids, 0..10
    tap: np.ndarray       # (TAP_CHANNELS, ceil(H/8), ceil(W/8)) float32, the codec's input


def image_to_input(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> (1, 3, H, W) float32 in [0, 1] (the graphs normalise themselves)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidFrameError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


class BackboneRunner:
    """Semantic map + tap features for RGB frames, on the chosen backend."""

    def __init__(self, model: str | None = None, backend: str = "auto", *, threads: int = 0,
                 models: str | None = None, release: ModelRelease | None = None) -> None:
        self.release = release or resolve_release("backbone", model, models)
        self.backend = make_backend(self.release, backend, threads)

    @property
    def model_id(self) -> str:
        return self.release.model_id

    def segment(self, rgb: np.ndarray) -> Segmentation:
        semantic, tap = self.backend.run("backbone", {"image": image_to_input(rgb)})
        return Segmentation(semantic=semantic[0].astype(np.uint8, copy=False), tap=tap[0])
