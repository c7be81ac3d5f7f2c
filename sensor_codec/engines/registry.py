"""The GPU backends' table: name -> factory, availability probe, place in ``auto``.

``sensor_codec.learned.runtime`` owns the CPU backends (``onnxruntime``,
``torch``) and consults this table for the rest. ``auto`` tries, in order::

    tensorrt > onnxruntime-cuda > torch-cuda > onnxruntime (CPU) > torch (CPU)

and the caller logs the winner with the reasons the better ones were skipped.

A backend name may carry options after a colon, comma separated: flags
(``torch-cuda:fp16,channels_last,cuda_graphs``) or ``key=value``
(``tensorrt:precision=int8,workspace_mib=1024,dla_core=0``). Unknown names and
options raise ``ConfigError`` listing what exists.

Probes look for a CUDA driver with a device first (ctypes on ``libcuda``, no
Python package imported), so a CPU-only machine answers without importing
torch, onnxruntime or tensorrt.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ConfigError

CPU_FALLBACK = ("onnxruntime", "torch")  # runtime.py's own backends, after the GPU ones


@dataclass(frozen=True)
class BackendSpec:
    """One GPU backend: where its class lives and what options it takes."""

    name: str
    module: str           # imported only to create or probe the backend
    factory: str          # class in ``module``: cls(release, threads, options) -> Backend
    probe: str            # function in ``module``: () -> (usable, reason)
    options: dict = field(default_factory=dict)  # option -> type (bool for flags)
    description: str = ""


BACKEND_TABLE: dict[str, BackendSpec] = {
    spec.name: spec for spec in (
        BackendSpec("tensorrt", "sensor_codec.engines.tensorrt_backend", "TensorRTBackend",
                    "probe", {"precision": str, "fp16": bool, "int8": bool, "device": int,
                              "workspace_mib": int, "dla_core": int, "gpu_fallback": bool,
                              "engines": str, "rebuild": bool},
                    "TensorRT engines (built from the ONNX graphs and cached per GPU)"),
        BackendSpec("onnxruntime-cuda", "sensor_codec.engines.cuda_backends", "OnnxRuntimeCudaBackend",
                    "probe_onnxruntime_cuda", {"device": int},
                    "ONNX Runtime with its CUDA execution provider"),
        BackendSpec("torch-cuda", "sensor_codec.engines.cuda_backends", "TorchCudaBackend",
                    "probe_torch_cuda", {"device": int, "fp16": bool, "channels_last": bool,
                                         "cuda_graphs": bool},
                    "PyTorch on CUDA; optional fp16, channels-last, CUDA graphs"),
    )
}
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "torch-cuda")


def names() -> list[str]:
    return list(BACKEND_TABLE)


def parse_backend_name(name: str) -> tuple[str, dict]:
    """``"torch-cuda:fp16,device=1"`` -> ``("torch-cuda", {"fp16": True, "device": 1})``.

    Only names in the table may carry options; values are converted to the
    option's type.
    """
    base, _, option_text = name.partition(":")
    base = base.strip()
    if base not in BACKEND_TABLE:
        if option_text:
            raise ConfigError(f"backend {base!r} takes no options (got {name!r}); "
                              f"options exist for {names()}")
        return base, {}
    allowed = BACKEND_TABLE[base].options
    options: dict = {}
    for item in filter(None, (part.strip() for part in option_text.split(","))):
        key, has_value, raw = item.partition("=")
        key = key.strip()
        if key not in allowed:
            raise ConfigError(f"backend {base!r} has no option {key!r}; it takes {sorted(allowed)}")
        kind = allowed[key]
        if kind is bool:
            if not has_value or raw.strip().lower() in ("1", "true", "yes", "on"):
                options[key] = True
            elif raw.strip().lower() in ("0", "false", "no", "off"):
                options[key] = False
            else:
                raise ConfigError(f"backend option {key}={raw!r} is not a boolean (use true/false)")
        elif not has_value:
            raise ConfigError(f"backend option {key!r} needs a value ({key}=...)")
        elif kind is int:
            try:
                options[key] = int(raw)
            except ValueError:
                raise ConfigError(f"backend option {key}={raw!r} is not an integer") from None
        else:
            options[key] = raw.strip()
    return base, options


def is_registered(name: str) -> bool:
    return name.partition(":")[0].strip() in BACKEND_TABLE


def create(name: str, release, threads: int = 0):
    """An instance of the registered backend ``name`` (options included) for ``release``."""
    base, options = parse_backend_name(name)
    spec = BACKEND_TABLE[base]
    cls = getattr(importlib.import_module(spec.module), spec.factory)
    return cls(release, threads, options)


def probe(name: str) -> tuple[bool, str]:
    """(usable here, why) for a registered backend, importing only its own module."""
    spec = BACKEND_TABLE[parse_backend_name(name)[0]]
    return getattr(importlib.import_module(spec.module), spec.probe)()


def auto_choice(probes: dict[str, Callable[[], tuple[bool, str]]] | None = None
                ) -> tuple[str | None, str]:
    """The best usable GPU backend and why, or ``(None, why each was skipped)``.

    ``probes`` replaces the real availability checks (tests, dry runs).
    """
    if probes is None:
        has_gpu, found = gpu_reason()
        if not has_gpu:  # answer without importing torch / onnxruntime / tensorrt
            return None, f"no GPU backend usable ({found})"
    skipped = []
    for name in AUTO_ORDER:
        check = probes[name] if probes is not None else functools.partial(probe, name)
        usable, reason = check()
        if usable:
            prefix = f"; skipped {'; '.join(skipped)}" if skipped else ""
            return name, f"auto: {name} is the best usable backend ({reason}){prefix}"
        skipped.append(f"{name}: {reason}")
    return None, "no GPU backend usable (" + "; ".join(skipped) + ")"


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """CUDA devices the driver reports, 0 without a driver; no Python CUDA package needed."""
    candidates = [ctypes.util.find_library("cuda"), "libcuda.so.1", "libcuda.so", "nvcuda.dll"]
    for candidate in filter(None, candidates):
        try:
            driver = ctypes.CDLL(candidate)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def gpu_reason() -> tuple[bool, str]:
    """(a CUDA device is present, what was found) for the probes."""
    count = cuda_device_count()
    if count == 0:
        return False, "no CUDA driver or GPU found"
    return True, f"{count} CUDA device(s)"
