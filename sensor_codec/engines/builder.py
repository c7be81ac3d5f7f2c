"""ONNX -> TensorRT engine, and the engine cache that loads, builds or rebuilds.

Written against the TensorRT Python API (8.6 and 10.x)::

    builder = trt.Builder(logger); network = builder.create_network(flags)
    trt.OnnxParser(network, logger).parse(onnx bytes)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, bytes)
    config.set_flag(trt.BuilderFlag.FP16 / INT8 / GPU_FALLBACK)
    config.int8_calibrator = IInt8EntropyCalibrator2 subclass; config.set_calibration_profile(p)
    profile = builder.create_optimization_profile(); profile.set_shape(name, min, opt, max)
    config.add_optimization_profile(profile)
    config.default_device_type = trt.DeviceType.DLA; config.DLA_core = n
    builder.build_serialized_network(network, config)

(TensorRT's Python API reference for Builder / IBuilderConfig /
IOptimizationProfile / IInt8EntropyCalibrator2, and the efficientdet sample's
``build_engine.py``.) The module comes from ``tensorrt_backend.import_tensorrt``
inside the functions, never at module import.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .artefacts import (
    PRECISIONS,
    Decision,
    EngineKey,
    Sidecar,
    decide,
    default_engines_dir,
    file_sha256,
)
from .calibration import (
    CalibrationSource,
    calibration_batches,
    graph_feeds,
    source_frames,
)
from .errors import EngineError
from .shapes import ShapePlan

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MIB = 1024
# Graphs whose output must not depend on the backend (the camera decoder's synthesis is
# integer-exact in float32): built fp32 with TF32 off (TensorRT enables TF32 by default),
# on the GPU, whatever precision or DLA core was asked for the other graphs.
EXACT_GRAPHS = ("decoder",)


def import_tensorrt():
    """The ``tensorrt`` module (imported by ``tensorrt_backend``, the only module that does)."""
    from .tensorrt_backend import import_tensorrt as _import

    return _import()


def tensorrt_version() -> str:
    return import_tensorrt().__version__


def trt_logger():
    from .tensorrt_backend import trt_logger as _logger

    return _logger()


@dataclass(frozen=True)
class BuildSettings:
    """How to build: precision, shapes, Jetson options, int8 calibration."""

    precision: str = "fp16"
    plan: ShapePlan | None = None
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    dla_core: int | None = None
    gpu_fallback: bool = True
    calibration: CalibrationSource | None = None
    device: int = 0
    load_only: bool = False  # use engines built earlier (int8 at run time: calibration is a build step)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if self.precision == "int8" and self.calibration is None and not self.load_only:
            raise EngineError("int8 engines need calibration frames: pass an image folder or a rosbag "
                              "(--calib-images DIR or --calib-bag BAG --calib-topic TOPIC)")
        if self.workspace_mib < 16:
            raise EngineError(f"workspace of {self.workspace_mib} MiB is too small (>= 16)")
        if self.dla_core is not None and self.dla_core < 0:
            raise EngineError(f"DLA core {self.dla_core} must be >= 0")
        if self.dla_core is not None and self.precision == "fp32":
            # TensorRT's DLA guide: DLA runs FP16 and INT8 layers only.
            raise EngineError(f"DLA core {self.dla_core} needs --precision fp16 or int8 (DLA has no fp32)")


def settings_for_graph(graph: str, settings: BuildSettings) -> BuildSettings:
    """``settings`` as they apply to ``graph``: exact graphs always fp32 on the GPU."""
    if graph not in EXACT_GRAPHS or (settings.precision == "fp32" and settings.dla_core is None):
        return settings
    log.info("%s engine: fp32 without TF32 on the GPU (asked %s%s): its integer-exact output must match "
             "every other backend", graph, settings.precision,
             f", DLA core {settings.dla_core}" if settings.dla_core is not None else "")
    return replace(settings, precision="fp32", calibration=None, dla_core=None, load_only=False)


def engine_key(release, graph: str, settings: BuildSettings, profiles: list[dict], gpu: dict,
               trt_version: str, shape_tag: str | None = None) -> EngineKey:
    onnx_path = release.graph_path(graph)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX graph {onnx_path} of {release.model_id} is missing; export it first")
    calibration = ""
    if settings.precision == "int8" and settings.calibration is not None:
        calibration = settings.calibration.identity
    return EngineKey(model_id=release.model_id, model_sha256=str(release.manifest.get("sha256", "")),
                     graph=graph, onnx_sha256=file_sha256(onnx_path), precision=settings.precision,
                     shape_tag=shape_tag or (settings.plan.tag if settings.plan else "custom"),
                     profiles=EngineKey.freeze_profiles(profiles), tensorrt_version=trt_version,
                     gpu_name=gpu["name"], compute_capability=gpu["compute_capability"],
                     dla_core=settings.dla_core, calibration=calibration)


def _network_flags(trt) -> int:
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated and
    # ignored); TensorRT 8.x needs it for ONNX models.
    if int(str(trt.__version__).split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def calibration_cache_path(engine_path: Path, calibration_identity: str) -> Path:
    """Where the int8 calibration cache of an engine goes: named by the calibration
    data, so other frames (same engine name) never reuse another run's scales."""
    digest = hashlib.sha256(calibration_identity.encode()).hexdigest()[:12]
    return engine_path.with_name(f"{engine_path.stem}.{digest}.calib")


def _make_calibrator(trt, batches: list[dict[str, np.ndarray]], input_names: list[str],
                     cache_path: Path | None):
    """An IInt8EntropyCalibrator2 that feeds ``batches`` through device buffers
    (TensorRT's int8 samples' pattern); ``cache_path`` None: no calibration cache."""
    from . import cuda_runtime

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT requires the explicit base call
            self.batches = batches
            self.index = 0
            self.buffers = {name: cuda_runtime.DeviceBuffer(batches[0][name].nbytes) for name in input_names}
            self.stream = cuda_runtime.Stream()

        def get_batch_size(self) -> int:
            return 1  # the graphs have an explicit batch of 1

        def get_batch(self, names, *args):
            """Device pointers holding the next batch, one per name in ``names``
            (TensorRT's order), or None when the batches are used up."""
            if self.index >= len(self.batches):
                return None
            batch = self.batches[self.index]
            self.index += 1
            for name in names:
                cuda_runtime.copy_to_device(self.buffers[name].pointer, batch[name], self.stream)
            self.stream.synchronize()
            return [self.buffers[name].pointer for name in names]

        def read_calibration_cache(self):
            if cache_path is not None and cache_path.is_file():
                log.info("int8 calibration: reusing the cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if cache_path is None:
                return
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(cache))
            log.info("int8 calibration: wrote the cache %s", cache_path)

        def release(self) -> None:
            for buffer in self.buffers.values():
                buffer.free()
            self.stream.close()

    return EntropyCalibrator()


def build_engine(onnx_path: str | Path, profiles: list[dict], settings: BuildSettings, *,
                 calibration_batches_list: list[dict] | None = None, calibration_cache: Path | None = None,
                 exact: bool = False) -> bytes:
    """Serialised engine for ``onnx_path`` with one optimisation profile per entry of
    ``profiles``; ``exact``: strict fp32 (TF32 cleared), for integer-exact graphs."""
    if exact and settings.precision != "fp32":
        raise EngineError(f"an exact engine must be fp32, not {settings.precision}")
    trt = import_tensorrt()
    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if exact:
        config.clear_flag(trt.BuilderFlag.TF32)  # set by default; TF32 rounds products to 10 bits
    if settings.precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in TensorRT 10
            log.warning("this GPU has no fast fp16; building %s anyway", settings.precision)
        config.set_flag(trt.BuilderFlag.FP16)  # int8 engines fall back to fp16, not fp32
    network_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    trt_profiles = []
    for profile_shapes in profiles:
        profile = builder.create_optimization_profile()
        for name in network_inputs:
            if name not in profile_shapes:
                raise EngineError(f"no shape given for input {name!r} of {onnx_path}")
            low, typical, high = profile_shapes[name]
            profile.set_shape(name, tuple(low), tuple(typical), tuple(high))
        config.add_optimization_profile(profile)
        trt_profiles.append(profile)
    calibrator = None
    if settings.precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            log.warning("this GPU has no fast int8; the engine may be slower than fp16")
        if not calibration_batches_list:
            raise EngineError("int8 build without calibration batches")
        if int(str(trt.__version__).split(".")[0]) >= 10:
            log.info("TensorRT %s: calibrator-based (implicit) int8 is deprecated but supported; "
                     "the calibrator below is used as in TensorRT's int8 samples", trt.__version__)
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, calibration_batches_list, network_inputs, calibration_cache)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(trt_profiles[0])
    if settings.dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise EngineError(f"DLA core {settings.dla_core} requested, this device has no DLA")
        if settings.dla_core >= builder.num_DLA_cores:
            raise EngineError(f"DLA core {settings.dla_core} requested, this device has "
                              f"{builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        if settings.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.release()
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} "
                          f"({settings.precision}, {len(profiles)} profile(s)); see the TensorRT log above")
    return bytes(serialized)


class EngineCache:
    """Engines of one folder: load a matching one, else build (or rebuild a stale one), saying which."""

    def __init__(self, folder: str | Path | None = None, *, device: int = 0) -> None:
        self.folder = default_engines_dir(folder)
        self.device = device

    def gpu(self) -> dict:
        from . import cuda_runtime

        return cuda_runtime.device_info(self.device)

    def key(self, release, graph: str, settings: BuildSettings, profiles: list[dict],
            shape_tag: str | None = None) -> EngineKey:
        trt_version = tensorrt_version()  # first: "TensorRT is not installed" beats a CUDA error
        return engine_key(release, graph, settings, profiles, self.gpu(), trt_version, shape_tag)

    def find_covering(self, release, graph: str, settings: BuildSettings,
                      shapes: dict[str, tuple[int, ...]]) -> tuple[bytes, list[dict]] | None:
        """A valid cached engine (e.g. from 'engines build') whose profiles cover ``shapes``."""
        from .artefacts import related_engines
        from .shapes import profile_index_for

        settings = settings_for_graph(graph, settings)
        probe_key = self.key(release, graph, settings, [], "any")
        for sidecar in related_engines(self.folder, probe_key):
            recorded = sidecar.key
            if recorded.precision != settings.precision or recorded.dla_core != settings.dla_core:
                continue
            profiles = recorded.profile_dicts()
            if profile_index_for(profiles, shapes) is None:
                continue
            wanted = self.key(release, graph, settings, profiles, recorded.shape_tag)
            if settings.precision == "int8":  # any calibration the user chose when building
                wanted = EngineKey.from_json(dict(wanted.to_json(), calibration=recorded.calibration))
            decision = decide(self.folder, wanted)
            if decision.action == "load":
                log.info("%s", decision.describe())
                return decision.path.read_bytes(), profiles
            log.info("cached engine %s not used: %s", decision.path.name, "; ".join(decision.reasons))
        return None

    def load_or_build(self, release, graph: str, settings: BuildSettings, profiles: list[dict] | None = None,
                      *, force: bool = False, models: str | None = None,
                      shape_tag: str | None = None) -> tuple[bytes, Decision]:
        """(serialised engine, what was done and why)."""
        settings = settings_for_graph(graph, settings)
        if profiles is None:
            if settings.plan is None:
                raise EngineError("an engine needs camera resolutions or explicit profiles")
            profiles = settings.plan.profiles(release.manifest, graph)
        wanted = self.key(release, graph, settings, profiles, shape_tag)
        decision = decide(self.folder, wanted, force=force)
        if decision.action == "load":
            log.info("%s", decision.describe())
            return decision.path.read_bytes(), decision
        if settings.load_only:
            raise ConfigError(f"no usable {settings.precision} engine for {release.model_id} {graph} in "
                              f"{self.folder} ({'; '.join(decision.reasons)}); build it first: sensor-codec "
                              f"engines build --graph {graph} --precision {settings.precision} --resolution WxH "
                              "(int8: with --calib-images DIR or --calib-bag BAG --calib-topic TOPIC)")
        # A stale engine is worth a warning: someone upgraded TensorRT, swapped the GPU or the model.
        log.log(logging.WARNING if decision.action == "rebuild" else logging.INFO, "%s", decision.describe())
        batches = None
        calibration_cache = None
        if settings.precision == "int8":
            calibration_cache = calibration_cache_path(decision.path, wanted.calibration)
            if force and calibration_cache.is_file():
                calibration_cache.unlink()  # --rebuild recalibrates too
            batches = self._calibration(release, graph, settings, profiles, models)
        started = time.perf_counter()
        engine = build_engine(release.graph_path(graph), profiles, settings, calibration_batches_list=batches,
                              calibration_cache=calibration_cache, exact=graph in EXACT_GRAPHS)
        seconds = time.perf_counter() - started
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = decision.path.with_name(decision.path.name + ".tmp")
        temporary.write_bytes(engine)
        os.replace(temporary, decision.path)
        build = {"seconds": round(seconds, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "host": platform.node(), "user": getpass.getuser(), "workspace_mib": settings.workspace_mib,
                 "gpu_fallback": settings.gpu_fallback, "tf32": graph not in EXACT_GRAPHS,
                 "plan": settings.plan.to_json() if settings.plan else None,
                 "onnx": release.graph_path(graph).name, "reason": list(decision.reasons)}
        Sidecar(key=wanted, engine_sha256=file_sha256(decision.path), build=build).write(decision.path)
        log.info("built %s in %.0f s", decision.path.name, seconds)
        return engine, decision

    def _calibration(self, release, graph: str, settings: BuildSettings, profiles: list[dict],
                     models: str | None) -> list[dict]:
        """Calibration feeds at the first profile's opt shapes (the calibration profile)."""
        plan = settings.plan
        resolution = plan.dynamic[1] if plan and plan.dynamic else (plan.resolutions[0] if plan else None)
        if resolution is None:
            raise EngineError("int8 calibration needs a camera resolution")
        expected = {name: bounds[1] for name, bounds in profiles[0].items()}
        names = list(release.manifest["inputs"][graph])
        feeds = graph_feeds(graph, release, source_frames(settings.calibration), resolution, models=models)
        batches = list(calibration_batches(feeds, names, expected, settings.calibration.count))
        if not batches:
            raise EngineError(f"no calibration frames from {settings.calibration.path}")
        log.info("int8 calibration: %d frames from %s at %s", len(batches), settings.calibration.path, resolution)
        return batches
