"""cuda-python helpers for the TensorRT backend (TensorRT samples' ``common.py`` patterns).

* every call goes through ``check``: cuda-python returns ``(error, *values)``;
  anything but ``cudaSuccess`` raises ``CudaError`` carrying the CUDA error
  name (``cudaErrorMemoryAllocation``), the call and CUDA's own description;
* ``PinnedBuffer``: page-locked host memory (``cudaMallocHost``) seen as a
  numpy array, so asynchronous copies really overlap;
* ``DeviceBuffer``: ``cudaMalloc``; ``Stream``: one non-blocking stream per backend;
* ``copy_to_device`` / ``copy_to_host``: ``cudaMemcpyAsync`` on that stream.

The ``cuda`` bindings are imported on first use (``cuda.bindings.runtime`` in
cuda-python >= 12.6 and 13.x, the older ``cuda.cudart`` before), never at module
import. Conventions relied on (cuda-python's own examples, ``helper_cuda.py``):
every call returns a tuple whose first item is a ``cudaError_t``, a call with no
result returns ``(error,)``; flags such as ``cudaStreamNonBlocking`` are module
constants; ``cudaGetErrorName(error)`` returns ``(status, bytes)``. The error's
integer is read through ``.value`` because older bindings used a plain ``Enum``
(``int()`` of which raises), newer ones an ``IntEnum``.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from .errors import BackendUnavailableError, CudaError


@functools.lru_cache(maxsize=1)
def cudart():
    """The CUDA runtime bindings module."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise BackendUnavailableError(
                "cuda-python is not installed; pip install cuda-python (its major version must "
                "match the CUDA driver: 12.x on JetPack 6, 13.x on CUDA 13 drivers)") from None
    return runtime


def error_code(error) -> int:
    """The integer of a ``cudaError_t`` (plain ``Enum`` in old bindings, ``IntEnum`` in new)."""
    return int(getattr(error, "value", error))


def error_name(error) -> str:
    """``cudaErrorMemoryAllocation`` for an error enum (or its integer value)."""
    rt = cudart()
    try:
        status, name = rt.cudaGetErrorName(error)
    except (TypeError, ValueError):
        return getattr(error, "name", f"cudaError({error_code(error)})")
    if status != rt.cudaError_t.cudaSuccess or name is None:
        return getattr(error, "name", f"cudaError({error_code(error)})")
    return name.decode() if isinstance(name, bytes) else str(name)


def error_string(error) -> str:
    rt = cudart()
    try:
        status, text = rt.cudaGetErrorString(error)
    except (TypeError, ValueError):
        return ""
    if status != rt.cudaError_t.cudaSuccess or text is None:
        return ""
    return text.decode() if isinstance(text, bytes) else str(text)


def check(call: str, result):
    """Unpack a cuda-python result: raise ``CudaError`` on failure, else return
    the value (one), the values (several) or None."""
    if isinstance(result, tuple):
        error, values = result[0], result[1:]
    else:
        error, values = result, ()
    if error != cudart().cudaError_t.cudaSuccess:
        raise CudaError(call, error_name(error), error_code(error), error_string(error))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_count() -> int:
    return int(check("cudaGetDeviceCount", cudart().cudaGetDeviceCount()))


def set_device(index: int) -> None:
    count = device_count()
    if not 0 <= index < count:
        raise BackendUnavailableError(f"CUDA device {index} requested, {count} present")
    check("cudaSetDevice", cudart().cudaSetDevice(index))


def device_info(index: int = 0) -> dict:
    """{"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "memory_bytes": ...}."""
    props = check("cudaGetDeviceProperties", cudart().cudaGetDeviceProperties(index))
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return {"name": str(name).strip(), "compute_capability": f"{props.major}.{props.minor}",
            "memory_bytes": int(props.totalGlobalMem), "integrated": bool(props.integrated)}


class Stream:
    """A non-blocking CUDA stream (one per backend instance, so nodes do not serialise)."""

    def __init__(self) -> None:
        rt = cudart()
        self.handle = check("cudaStreamCreateWithFlags",
                            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))

    @property
    def pointer(self) -> int:
        """The raw handle as an integer (what ``execute_async_v3`` and
        ``set_optimization_profile_async`` take as ``stream_handle``)."""
        return int(self.handle)

    def synchronize(self) -> None:
        check("cudaStreamSynchronize", cudart().cudaStreamSynchronize(self.handle))

    def close(self) -> None:
        if self.handle is not None:
            check("cudaStreamDestroy", cudart().cudaStreamDestroy(self.handle))
            self.handle = None


class DeviceBuffer:
    """``nbytes`` of device memory."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.pointer = int(check("cudaMalloc", cudart().cudaMalloc(self.nbytes)))

    def free(self) -> None:
        if self.pointer:
            check("cudaFree", cudart().cudaFree(self.pointer))
            self.pointer = 0


class PinnedBuffer:
    """Page-locked host memory viewed as a numpy array of ``shape`` and ``dtype``."""

    def __init__(self, shape: tuple[int, ...], dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.capacity = max(int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize, 1)
        self.pointer = int(check("cudaMallocHost", cudart().cudaMallocHost(self.capacity)))
        raw = ctypes.cast(self.pointer, ctypes.POINTER(ctypes.c_uint8))
        self._bytes = np.ctypeslib.as_array(raw, (self.capacity,))
        self.array = self.view(shape)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The first bytes as an array of ``shape`` (must fit the allocation)."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        if nbytes > self.capacity:
            raise CudaError("PinnedBuffer.view", "cudaErrorInvalidValue", 1,
                            f"{nbytes} bytes asked of a {self.capacity}-byte pinned buffer")
        return self._bytes[:nbytes].view(self.dtype).reshape(shape)

    def free(self) -> None:
        if self.pointer:
            check("cudaFreeHost", cudart().cudaFreeHost(self.pointer))
            self.pointer = 0


def copy_to_device(device_pointer: int, host: np.ndarray, stream: Stream) -> None:
    rt = cudart()
    check("cudaMemcpyAsync(host->device)",
          rt.cudaMemcpyAsync(device_pointer, host.ctypes.data, host.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle))


def copy_to_host(host: np.ndarray, device_pointer: int, stream: Stream) -> None:
    rt = cudart()
    check("cudaMemcpyAsync(device->host)",
          rt.cudaMemcpyAsync(host.ctypes.data, device_pointer, host.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle))


class TensorBuffers:
    """Grow-only pinned host + device buffer pair per tensor name."""

    def __init__(self) -> None:
        self._host: dict[str, PinnedBuffer] = {}
        self._device: dict[str, DeviceBuffer] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> tuple[np.ndarray, int]:
        """(host array of ``shape``, device pointer) with room for it."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        host = self._host.get(name)
        if host is None or host.capacity < nbytes or host.dtype != dtype:
            if host is not None:
                host.free()
                self._device.pop(name).free()
            host = self._host[name] = PinnedBuffer(shape, dtype)
            self._device[name] = DeviceBuffer(nbytes)
        return host.view(tuple(shape)), self._device[name].pointer

    def free(self) -> None:
        for buffer in list(self._host.values()) + list(self._device.values()):
            buffer.free()
        self._host.clear()
        self._device.clear()
