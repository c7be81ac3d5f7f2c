"""The ``tensorrt`` backend: a release's graphs as TensorRT engines.

Per graph the backend asks the ``EngineCache`` for an engine covering the
feed shapes: a cached one that matches model, TensorRT and GPU is loaded; a
missing or stale one is built (and the log says which and why). Frame sizes
nobody planned for get a fixed-shape engine built on first use; plan them
with ``sensor-codec engines build`` to avoid the wait.

Inference follows TensorRT's samples: inputs are copied into pinned host
buffers, ``cudaMemcpyAsync`` to the device on the backend's own stream,
``set_input_shape`` / ``set_tensor_address`` per tensor,
``execute_async_v3(stream)``, outputs copied back asynchronously, one
``cudaStreamSynchronize``. Every CUDA failure is a ``CudaError`` with the
CUDA error name. A DLA engine is deserialised by a runtime whose ``DLA_core``
is set first (``IRuntime::setDLACore``), as TensorRT's DLA guide requires.

``import tensorrt`` appears in this module only (``import_tensorrt``), inside a
function; ``builder`` asks it for the module, so importing any of
``sensor_codec.engines`` loads neither TensorRT nor the ``cuda`` bindings.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging

import numpy as np

from ..errors import ConfigError
from ..learned.runtime import Backend
from .builder import BuildSettings, EngineCache, settings_for_graph
from .errors import BackendUnavailableError, EngineError
from .registry import gpu_reason
from .shapes import plan_from_feed_shapes, profile_index_for

log = logging.getLogger(__name__)


def import_tensorrt():
    """The ``tensorrt`` module; the one place in the package that imports it."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(
            "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer), "
            "elsewhere pip install tensorrt; the onnxruntime / torch backends run without it") from None
    return tensorrt


def tensorrt_version() -> str:
    return import_tensorrt().__version__


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


class _TensorRTLogger:
    """One ``trt.ILogger`` per process whose messages go to Python logging (it must
    outlive every builder and runtime that holds it, hence the singleton)."""

    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            trt = import_tensorrt()

            class Logger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)  # pybind11 trampolines need the explicit base call

                def log(self, severity, msg) -> None:
                    levels = trt.ILogger.Severity
                    level = {levels.INTERNAL_ERROR: logging.CRITICAL, levels.ERROR: logging.ERROR,
                             levels.WARNING: logging.WARNING, levels.INFO: logging.DEBUG}.get(
                                 severity, logging.DEBUG)
                    log.log(level, "TensorRT: %s", msg)

            cls._instance = Logger()
        return cls._instance


def trt_logger():
    return _TensorRTLogger.get()


def probe() -> tuple[bool, str]:
    """(usable, why) without importing tensorrt."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt Python package is not installed"
    if importlib.util.find_spec("cuda") is None:
        return False, "cuda-python (the cuda bindings) is not installed"
    has_gpu, found = gpu_reason()
    if not has_gpu:
        return False, found
    try:
        version = importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        version = "from the system (JetPack)"
    return True, f"TensorRT {version}, {found}"


def settings_from_options(options: dict) -> BuildSettings:
    precision = options.get("precision", "fp32")
    if options.get("fp16"):
        precision = "fp16"
    if options.get("int8"):
        precision = "int8"
    if options.get("dla_core") is not None and "precision" not in options and not options.get("fp16") \
            and not options.get("int8"):
        precision = "fp16"  # DLA runs fp16 or int8 only; fp16 is what a DLA user means by default
    # int8 needs calibration frames, a build step: at run time int8 engines are only
    # loaded (built beforehand by 'sensor-codec engines build --precision int8 ...').
    return BuildSettings(precision=precision, workspace_mib=options.get("workspace_mib", 1024),
                         dla_core=options.get("dla_core"), gpu_fallback=options.get("gpu_fallback", True),
                         device=options.get("device", 0), load_only=precision == "int8")


def on_demand_tag(shapes: dict[str, tuple[int, ...]]) -> str:
    """Shape tag of an engine built for one feed: ``at<W>x<H>`` of the spatially largest
    4-D input (the frame; a (1, M, 1, 1) gain vector must not name the engine), so
    each frame size gets its own file."""
    images = [shape for _, shape in sorted(shapes.items()) if len(shape) == 4]
    if images:
        largest = max(images, key=lambda shape: shape[2] * shape[3])
        return f"at{largest[3]}x{largest[2]}"
    return "at" + "-".join("x".join(map(str, shapes[n])) for n in sorted(shapes))


class EngineRunner:
    """One deserialised engine, its execution context and its I/O buffers."""

    def __init__(self, serialized: bytes, profiles: list[dict], stream, dla_core: int | None = None) -> None:
        from . import cuda_runtime

        trt = import_tensorrt()
        self._trt = trt
        self._runtime = trt.Runtime(trt_logger())
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)  # before deserialising (IRuntime::setDLACore)
        self.engine = self._runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise EngineError("TensorRT could not deserialise the engine (built by another TensorRT "
                              "version or for another GPU?); delete it to rebuild")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        self.profiles = profiles
        self.stream = stream
        self.profile = 0
        self.buffers = cuda_runtime.TensorBuffers()
        self.inputs, self.outputs = [], []
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
            else:
                self.outputs.append(name)

    def covers(self, shapes: dict[str, tuple[int, ...]]) -> int | None:
        return profile_index_for(self.profiles, shapes)

    def infer(self, feeds: dict[str, np.ndarray], output_order: list[str]) -> list[np.ndarray]:
        from . import cuda_runtime

        trt = self._trt
        shapes = {name: tuple(feeds[name].shape) for name in self.inputs}
        profile = self.covers(shapes)
        if profile is None:
            raise EngineError(f"engine profiles do not cover input shapes {shapes}")
        if profile != self.profile:
            # Switching profiles invalidates the input shapes; they are all set again below.
            if not self.context.set_optimization_profile_async(profile, self.stream.pointer):
                raise EngineError(f"TensorRT refused optimisation profile {profile} of "
                                  f"{self.engine.num_optimization_profiles}")
            self.profile = profile
        for name in self.inputs:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            host, device = self.buffers.get(name, shapes[name], dtype)
            np.copyto(host, feeds[name], casting="same_kind")
            if not self.context.set_input_shape(name, shapes[name]):
                raise EngineError(f"engine rejected shape {shapes[name]} for input {name!r}")
            self._bind(name, device)
            cuda_runtime.copy_to_device(device, host, self.stream)
        host_outputs = {}
        for name in self.outputs:
            # Known only once every input shape is set (TensorRT propagates them).
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"output {name!r} has unresolved shape {shape}")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            host, device = self.buffers.get(name, shape, dtype)
            self._bind(name, device)
            host_outputs[name] = (host, device)
        if not self.context.execute_async_v3(self.stream.pointer):
            raise EngineError("TensorRT execute_async_v3 failed; see the TensorRT log")
        for host, device in host_outputs.values():
            cuda_runtime.copy_to_host(host, device, self.stream)
        self.stream.synchronize()
        # Copies: the pinned buffers are reused by the next call.
        return [np.array(host_outputs[name][0], copy=True) for name in output_order]

    def _bind(self, name: str, device_pointer: int) -> None:
        if not self.context.set_tensor_address(name, device_pointer):
            raise EngineError(f"TensorRT refused the device address of tensor {name!r}")

    def close(self) -> None:
        # Context before engine before runtime, as TensorRT requires; then the buffers.
        self.context = None
        self.engine = None
        self._runtime = None
        self.buffers.free()


class TensorRTBackend(Backend):
    """Runs a release's graphs as TensorRT engines (see the module doc)."""

    name = "tensorrt"

    def __init__(self, release, threads: int = 0, options: dict | None = None) -> None:
        super().__init__(release, threads)
        from . import cuda_runtime

        options = dict(options or {})
        self.settings = settings_from_options(options)
        import_tensorrt()  # fail now, with the install hint, not on the first frame
        cuda_runtime.set_device(self.settings.device)
        self.cache = EngineCache(options.get("engines"), device=self.settings.device)
        self.force_rebuild = bool(options.get("rebuild", False))
        self.stream = cuda_runtime.Stream()
        self._runners: dict[str, list[EngineRunner]] = {}
        gpu = cuda_runtime.device_info(self.settings.device)
        log.info("tensorrt backend: %s (sm %s), %s, engines in %s", gpu["name"], gpu["compute_capability"],
                 self.settings.precision, self.cache.folder)

    def output_names(self, graph: str, runner: EngineRunner) -> list[str]:
        declared = self.release.manifest.get("outputs", {}).get(graph)
        return list(declared) if declared else list(runner.outputs)

    def _runner(self, graph: str, shapes: dict[str, tuple[int, ...]]) -> EngineRunner:
        for runner in self._runners.get(graph, []):
            if runner.covers(shapes) is not None:
                return runner
        # A planned engine (from 'engines build') whose profiles cover these shapes;
        # otherwise a fixed-shape engine for exactly this frame size, built now.
        found = None if self.force_rebuild else self.cache.find_covering(
            self.release, graph, self.settings, shapes)
        if found is not None:
            serialized, profiles = found
        else:
            profiles = [plan_from_feed_shapes(shapes, self.release.manifest, graph)]
            serialized, _ = self.cache.load_or_build(self.release, graph, self.settings, profiles,
                                                     force=self.force_rebuild, shape_tag=on_demand_tag(shapes))
        runner = EngineRunner(serialized, profiles, self.stream, settings_for_graph(graph, self.settings).dla_core)
        self._runners.setdefault(graph, []).append(runner)
        return runner

    def preload(self, graph: str, profiles: list[dict]) -> None:
        """Load (or build) an engine with these profiles before the first frame."""
        serialized, _ = self.cache.load_or_build(self.release, graph, self.settings, profiles,
                                                 force=self.force_rebuild)
        self._runners.setdefault(graph, []).append(
            EngineRunner(serialized, profiles, self.stream, settings_for_graph(graph, self.settings).dla_core))

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = self.input_names(graph)
        missing = [n for n in names if n not in feeds]
        if missing:
            raise ConfigError(f"graph {graph!r} needs inputs {missing}")
        shapes = {n: tuple(np.shape(feeds[n])) for n in names}
        runner = self._runner(graph, shapes)
        return runner.infer({n: np.asarray(feeds[n]) for n in names}, self.output_names(graph, runner))

    def close(self) -> None:
        for runners in self._runners.values():
            for runner in runners:
                runner.close()
        self._runners.clear()
        if self.stream is not None:
            self.stream.close()
            self.stream = None
