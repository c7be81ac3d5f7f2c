"""Typed errors of the engines subpackage."""

from __future__ import annotations

from ..errors import ConfigError, SensorCodecError


class EngineError(SensorCodecError):
    """Building, loading or running a TensorRT engine failed."""


class BackendUnavailableError(ConfigError):
    """A backend was asked for by name, but its library or a GPU is missing."""


class CudaError(EngineError):
    """A CUDA runtime call failed; carries the CUDA error name (``cudaErrorMemoryAllocation``...)."""

    def __init__(self, call: str, error_name: str, code: int, detail: str = "") -> None:
        self.call = call
        self.error_name = error_name
        self.code = code
        message = f"{call} failed with {error_name} ({code})"
        super().__init__(f"{message}: {detail}" if detail else message)
