"""GPU inference for the learned models: TensorRT engines and CUDA backends.

Everything here plugs into ``sensor_codec.learned.runtime``'s backend
interface (``Backend.run(graph, feeds) -> outputs``) through the table in
``registry``. Importing this package loads nothing heavy: ``tensorrt`` and
the ``cuda`` bindings are imported only inside ``tensorrt_backend`` /
``cuda_runtime`` / ``builder`` when an engine is built or run, torch and
onnxruntime only inside their CUDA backends.

Modules:

* ``registry``: backend name -> factory + availability probe, the ``auto`` order.
* ``cuda_backends``: PyTorch CUDA (fp16, channels-last, CUDA graphs) and ONNX
  Runtime's CUDA execution provider.
* ``tensorrt_backend``: runs engines with pinned buffers and one stream.
* ``cuda_runtime``: cuda-python helpers; CUDA errors become ``CudaError``.
* ``builder``: ONNX -> engine (fp32/fp16/int8, profiles, DLA), the engine cache.
* ``artefacts``: engine names, JSON sidecars, stale-engine decisions.
* ``shapes``: input shapes of each graph for a camera resolution.
* ``calibration``: int8 calibration feeds from an image folder or a rosbag.
* ``fused``: the backbone and the camera encoder as one ONNX graph.
* ``cli``: ``sensor-codec engines build|list|fuse``.
"""
