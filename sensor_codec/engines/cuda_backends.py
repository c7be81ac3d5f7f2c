"""CUDA variants of the built-in backends.

* ``onnxruntime-cuda``: the exported graphs on ONNX Runtime's CUDA execution
  provider (needs the ``onnxruntime-gpu`` wheel), CPU provider as fallback for
  any node CUDA lacks.
* ``torch-cuda``: the eager PyTorch modules on a GPU, with options
  ``fp16`` (half weights and activations; outputs come back as float32),
  ``channels_last`` (NHWC memory format, faster convolutions on tensor cores)
  and ``cuda_graphs`` (one captured graph per input shape, replayed: removes
  per-kernel launch cost, which dominates these small networks).

fp16 changes which integers the encoder sends, never whether a payload
decodes: the entropy model's inputs are integers (see learned/README.md).
The decoder graph is different: its synthesis is integer-exact in float32, so
it always runs in float32 with TF32 off (``use_tf32=0`` for ONNX Runtime's CUDA
provider; ``allow_tf32 = False`` for cuBLAS and cuDNN in PyTorch), and the
``fp16`` option leaves it alone. The runtime refuses non-integer pixels, so a
GPU kernel that still breaks exactness fails loudly rather than silently.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from ..errors import ConfigError
from ..learned.runtime import OnnxRuntimeBackend, TorchBackend
from .builder import EXACT_GRAPHS
from .registry import gpu_reason

log = logging.getLogger(__name__)


def probe_onnxruntime_cuda() -> tuple[bool, str]:
    has_gpu, found = gpu_reason()
    if not has_gpu:
        return False, found
    if importlib.util.find_spec("onnxruntime") is None:
        return False, "onnxruntime is not installed"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False, "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return True, f"onnxruntime {onnxruntime.__version__} CUDA provider, {found}"


def probe_torch_cuda() -> tuple[bool, str]:
    has_gpu, found = gpu_reason()
    if not has_gpu:
        return False, found
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} is a CPU-only build"
    return True, f"torch {torch.__version__} CUDA {torch.version.cuda}, {found}"


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    name = "onnxruntime-cuda"

    def __init__(self, release, threads: int = 0, options: dict | None = None) -> None:
        super().__init__(release, threads)
        self.device = int((options or {}).get("device", 0))
        if "CUDAExecutionProvider" not in self._ort.get_available_providers():
            raise ConfigError("onnxruntime-cuda requested, but this onnxruntime has no CUDAExecutionProvider "
                              "(pip install onnxruntime-gpu matching your CUDA)")

    def _session(self, graph: str):
        if graph not in self._sessions:
            options = self._ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            path = self.release.graph_path(graph)
            if not path.is_file():
                raise ConfigError(f"ONNX graph {path} of model {self.release.model_id} is missing")
            cuda_options = {"device_id": self.device, "cudnn_conv_algo_search": "EXHAUSTIVE"}
            if graph in EXACT_GRAPHS:
                cuda_options["use_tf32"] = "0"  # on by default on Ampere and later
            providers = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
            session = self._ort.InferenceSession(str(path), options, providers=providers)
            if "CUDAExecutionProvider" not in session.get_providers():
                raise ConfigError(f"ONNX Runtime could not start its CUDA provider for {path.name} "
                                  "(CUDA / cuDNN libraries missing?)")
            self._sessions[graph] = session
        return self._sessions[graph]


class TorchCudaBackend(TorchBackend):
    name = "torch-cuda"

    def __init__(self, release, threads: int = 0, options: dict | None = None) -> None:
        super().__init__(release, threads)
        options = dict(options or {})
        torch = self._torch
        if not torch.cuda.is_available():
            raise ConfigError(f"torch-cuda requested, but torch {torch.__version__} sees no CUDA GPU")
        self.device = torch.device("cuda", int(options.get("device", 0)))
        self.fp16 = bool(options.get("fp16", False))
        self.channels_last = bool(options.get("channels_last", False))
        self.cuda_graphs = bool(options.get("cuda_graphs", False))
        self.stream = torch.cuda.Stream(self.device)
        # TF32 would round the integer-exact decoder's products; the fp16 option is the fast path.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        for graph, module in self._modules.items():
            module.to(self.device)
            if self.fp16 and graph not in EXACT_GRAPHS:
                module.half()
            if self.channels_last:
                module.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed frame sizes: let cuDNN pick the fastest kernels
        self._graphs: dict[tuple, tuple] = {}  # (graph, shapes) -> (CUDAGraph, static inputs, static outputs)
        log.info("torch-cuda on %s: fp16=%s channels_last=%s cuda_graphs=%s",
                 torch.cuda.get_device_name(self.device), self.fp16, self.channels_last, self.cuda_graphs)

    def _to_device(self, array: np.ndarray, half: bool = False):
        torch = self._torch
        tensor = torch.from_numpy(np.ascontiguousarray(array)).pin_memory().to(self.device, non_blocking=True)
        if tensor.is_floating_point() and half:
            tensor = tensor.half()
        if self.channels_last and tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _outputs_to_numpy(self, outputs) -> list[np.ndarray]:
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        arrays = []
        for output in outputs:
            if output.is_floating_point():
                output = output.float()
            arrays.append(output.contiguous().cpu().numpy())
        return arrays

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        module = self._modules.get(graph)
        if module is None:
            raise ConfigError(f"model {self.release.model_id} has no graph {graph!r}")
        torch = self._torch
        names = self.input_names(graph)
        half = self.fp16 and graph not in EXACT_GRAPHS
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            if not self.cuda_graphs:
                outputs = module(*[self._to_device(feeds[n], half) for n in names])
                self.stream.synchronize()
                return self._outputs_to_numpy(outputs)
            key = (graph,) + tuple((n, tuple(np.shape(feeds[n]))) for n in names)
            if key not in self._graphs:
                self._graphs[key] = self._capture(module, [self._to_device(feeds[n], half) for n in names])
            cuda_graph, static_inputs, static_outputs = self._graphs[key]
            for static, name in zip(static_inputs, names):
                static.copy_(self._to_device(feeds[name], half))
            cuda_graph.replay()
            self.stream.synchronize()
            return self._outputs_to_numpy(static_outputs)

    def _capture(self, module, inputs):
        """Warm up on a side stream, then capture one CUDA graph for these shapes (PyTorch's recipe)."""
        torch = self._torch
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                module(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            outputs = module(*inputs)
        log.info("captured a CUDA graph for input shapes %s", [tuple(t.shape) for t in inputs])
        return cuda_graph, inputs, outputs if isinstance(outputs, (tuple, list)) else (outputs,)
