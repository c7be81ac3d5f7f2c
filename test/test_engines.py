"""Engines: backend table and auto choice, engine names / sidecars / stale decisions,
shapes and profiles, int8 calibration feeds, CUDA error translation, the fused
backbone + camera encoder graph, the engines CLI; TensorRT itself where it imports."""

from __future__ import annotations

import ctypes
import enum
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sensor_codec.engines import registry
from sensor_codec.engines.artefacts import (
    EngineKey,
    Sidecar,
    decide,
    default_engines_dir,
    file_sha256,
    sidecar_path,
    slug,
)
from sensor_codec.engines.calibration import (
    CalibrationSource,
    RecordingBackend,
    calibration_batches,
    fit_to_resolution,
    folder_frames,
)
from sensor_codec.engines.errors import BackendUnavailableError, CudaError, EngineError
from sensor_codec.engines.shapes import (
    Resolution,
    ShapePlan,
    graph_input_shapes,
    plan_from_feed_shapes,
    profile_index_for,
)
from sensor_codec.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CAMVID_VAL = REPO.parent / "shared" / "data" / "camvid" / "val"
CAMERA_MANIFEST = {"id": "camera-0123456789ab", "latent_channels": 96,
                   "inputs": {"encoder": ["image", "tap", "gain"], "decoder": ["y_hat", "inv_gain"]}}


# ------------------------------------------------------------------ backend table

def test_backend_names_parse_flags_and_values():
    assert registry.parse_backend_name("torch-cuda:fp16,channels_last, cuda_graphs") == (
        "torch-cuda", {"fp16": True, "channels_last": True, "cuda_graphs": True})
    assert registry.parse_backend_name("tensorrt:precision=fp16,workspace_mib=2048,dla_core=1,gpu_fallback=false") \
        == ("tensorrt", {"precision": "fp16", "workspace_mib": 2048, "dla_core": 1, "gpu_fallback": False})
    assert registry.parse_backend_name("onnxruntime") == ("onnxruntime", {})
    with pytest.raises(ConfigError, match="has no option 'fp8'.*fp16"):
        registry.parse_backend_name("torch-cuda:fp8")
    with pytest.raises(ConfigError, match="not an integer"):
        registry.parse_backend_name("tensorrt:dla_core=zero")
    with pytest.raises(ConfigError, match="needs a value"):
        registry.parse_backend_name("tensorrt:workspace_mib")
    with pytest.raises(ConfigError, match="takes no options"):
        registry.parse_backend_name("onnxruntime:fp16")


def _probes(**usable):
    return {name: (lambda name=name: (usable.get(name.replace("-", "_"), False),
                                      f"{name} {'ok' if usable.get(name.replace('-', '_')) else 'missing'}"))
            for name in registry.AUTO_ORDER}


@pytest.mark.parametrize("usable, expected", [
    ({"tensorrt": True, "onnxruntime_cuda": True, "torch_cuda": True}, "tensorrt"),
    ({"onnxruntime_cuda": True, "torch_cuda": True}, "onnxruntime-cuda"),
    ({"torch_cuda": True}, "torch-cuda"),
    ({}, None),
])
def test_auto_prefers_tensorrt_then_ort_cuda_then_torch_cuda(usable, expected):
    chosen, why = registry.auto_choice(_probes(**usable))
    assert chosen == expected
    if expected == "torch-cuda":
        assert why.startswith("auto: torch-cuda is the best usable backend (torch-cuda ok)")
        assert "tensorrt: tensorrt missing" in why and "onnxruntime-cuda: onnxruntime-cuda missing" in why
    if expected is None:
        assert why.count("missing") == 3


def test_runtime_auto_falls_back_to_cpu_and_says_why(monkeypatch):
    from sensor_codec.learned import runtime

    monkeypatch.setattr(registry, "auto_choice", lambda probes=None: (None, "no GPU backend usable (test)"))
    chosen, why = runtime.choose_backend("auto")
    assert chosen == "onnxruntime" and "fastest CPU path" in why and "no GPU backend usable (test)" in why
    monkeypatch.setattr(registry, "auto_choice", lambda probes=None: ("torch-cuda", "auto: torch-cuda (test)"))
    assert runtime.choose_backend("auto") == ("torch-cuda", "auto: torch-cuda (test)")
    with pytest.raises(ConfigError, match="not one of.*tensorrt.*torch-cuda"):
        runtime.choose_backend("cuda")


def test_make_backend_creates_a_registered_backend_and_logs_the_choice(monkeypatch, caplog):
    from sensor_codec.learned import runtime
    from sensor_codec.learned.release import ModelRelease

    fake = types.ModuleType("sensor_codec_test_fake_backend")

    class FakeBackend(runtime.Backend):
        name = "fake-gpu"

        def __init__(self, release, threads=0, options=None):
            super().__init__(release, threads)
            self.options = options

        def run(self, graph, feeds):
            return [feeds["x"] * 2]

    fake.FakeBackend = FakeBackend
    fake.probe = lambda: (True, "fake GPU present")
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    spec = registry.BackendSpec("fake-gpu", fake.__name__, "FakeBackend", "probe", {"fp16": bool})
    monkeypatch.setitem(registry.BACKEND_TABLE, "fake-gpu", spec)
    monkeypatch.setattr(registry, "AUTO_ORDER", ("fake-gpu",))
    monkeypatch.setattr(registry, "gpu_reason", lambda: (True, "1 CUDA device(s)"))
    release = ModelRelease("backbone-000000000000", "backbone", Path("."), {"inputs": {"g": ["x"]}})
    with caplog.at_level(logging.INFO, logger="sensor_codec.learned.runtime"):
        backend = runtime.make_backend(release, "auto")
    assert isinstance(backend, FakeBackend) and backend.options == {}
    assert "runs on fake-gpu (auto: fake-gpu is the best usable backend (fake GPU present))" in caplog.text
    backend = runtime.make_backend(release, "fake-gpu:fp16")
    assert backend.options == {"fp16": True}
    assert backend.run("g", {"x": np.arange(3)}).pop().tolist() == [0, 2, 4]


def test_no_gpu_answers_without_importing_gpu_libraries():
    code = ("import sys\n"
            "from sensor_codec.engines import registry\n"
            "import sensor_codec.engines.tensorrt_backend, sensor_codec.engines.builder, "
            "sensor_codec.engines.cuda_runtime, sensor_codec.engines.cli, sensor_codec.engines.fused, "
            "sensor_codec.engines.cuda_backends, sensor_codec.engines.calibration\n"
            "registry.cuda_device_count.cache_clear()\n"
            "print(registry.auto_choice()[0] if registry.cuda_device_count() == 0 else 'gpu')\n"
            "print(sorted(m for m in ('tensorrt', 'cuda', 'torch', 'onnxruntime') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    first, modules = out.stdout.strip().splitlines()
    if first != "gpu":
        assert first == "None"
    assert modules == "[]"


# ------------------------------------------------------------------ shapes

def test_resolution_parsing_and_padding():
    assert Resolution.parse("960x720") == Resolution(960, 720)
    assert Resolution.parse(" 1920 X 1080 ").padded() == (1088, 1920)
    assert Resolution(960, 720).padded() == (768, 960)
    for bad in ("960", "960x", "axb", "8x8", "100000x10"):
        with pytest.raises(ConfigError):
            Resolution.parse(bad)


def test_graph_input_shapes_follow_the_codec_padding():
    res = Resolution(960, 720)
    assert graph_input_shapes(CAMERA_MANIFEST, "encoder", res) == {
        "image": (1, 3, 768, 960), "tap": (1, 128, 96, 120), "gain": (1, 96, 48, 60)}
    assert graph_input_shapes(CAMERA_MANIFEST, "decoder", res) == {
        "y_hat": (1, 96, 48, 60), "inv_gain": (1, 96, 48, 60)}
    assert graph_input_shapes({}, "backbone", res) == {"image": (1, 3, 720, 960)}
    fused = graph_input_shapes({"latent_channels": 96}, "fused_encoder", Resolution(1920, 1080))
    assert fused["image"] == (1, 3, 1080, 1920) and fused["gain"] == (1, 96, 1, 1)
    assert fused["class_weights"] == (11,) and fused["thresholds"] == (3,)
    # An integer-synthesis release declares one decoder input, the latent-sized integer grid.
    assert graph_input_shapes({"latent_channels": 96, "inputs": {"decoder": ["grid"]}}, "decoder", res) == {
        "grid": (1, 96, 48, 60)}
    with pytest.raises(ConfigError, match="declares inputs"):
        graph_input_shapes({"latent_channels": 8, "inputs": {"encoder": ["image", "y"]}}, "encoder", res)
    with pytest.raises(ConfigError, match="no shape rule"):
        graph_input_shapes(CAMERA_MANIFEST, "hyper", res)


def test_shape_plans_profiles_and_tags():
    fixed = ShapePlan.fixed([Resolution(1920, 1080), Resolution(960, 720), Resolution(960, 720)])
    assert fixed.tag == "960x720_1920x1080"
    profiles = fixed.profiles(CAMERA_MANIFEST, "decoder")
    assert len(profiles) == 2
    assert profiles[1]["y_hat"] == ((1, 96, 68, 120),) * 3
    dynamic = ShapePlan.parse_dynamic("640x480:960x720:1920x1080")
    assert dynamic.tag == "dyn640x480-960x720-1920x1080"
    (profile,) = dynamic.profiles({}, "backbone")
    assert profile["image"] == ((1, 3, 480, 640), (1, 3, 720, 960), (1, 3, 1080, 1920))
    assert profile_index_for(profiles, {"y_hat": (1, 96, 68, 120), "inv_gain": (1, 96, 68, 120)}) == 1
    assert profile_index_for(profiles, {"y_hat": (1, 96, 40, 60), "inv_gain": (1, 96, 40, 60)}) is None
    assert profile_index_for([profile], {"image": (1, 3, 600, 800)}) == 0
    assert profile_index_for([profile], {"image": (1, 3, 2000, 800)}) is None
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ShapePlan.parse_dynamic("960x720:640x480:1920x1080")
    with pytest.raises(ConfigError, match="at least one"):
        ShapePlan.fixed([])
    assert plan_from_feed_shapes({"image": (1, 3, 64, 96)}, {"inputs": {"backbone": ["image"]}}, "backbone") \
        == {"image": ((1, 3, 64, 96),) * 3}


# ------------------------------------------------------------------ artefacts

def _key(**changes) -> EngineKey:
    fields = {"model_id": "camera-1a2b3c4d5e6f", "model_sha256": "1a2b3c4d5e6f" + "0" * 52,
              "graph": "fused_encoder", "onnx_sha256": "f" * 64, "precision": "fp16", "shape_tag": "1920x1080",
              "profiles": EngineKey.freeze_profiles([{"image": ((1, 3, 1080, 1920),) * 3}]),
              "tensorrt_version": "10.3.0", "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7"}
    fields.update(changes)
    return EngineKey(**fields)


def _write_engine(folder: Path, key: EngineKey, payload: bytes = b"serialized-engine") -> Path:
    path = folder / key.filename
    path.write_bytes(payload)
    Sidecar(key=key, engine_sha256=file_sha256(path), build={"seconds": 1.0}).write(path)
    return path


def test_engine_names_carry_model_hash_tensorrt_version_and_gpu():
    key = _key()
    assert key.filename == "camera-1a2b3c4d5e6f-fused_encoder-fp16-1920x1080-trt10.3.0-orin-nvgpu.engine"
    assert _key(dla_core=0, precision="int8").filename.endswith("-int8-1920x1080-dla0-trt10.3.0-orin-nvgpu.engine")
    assert slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        _key(precision="fp8")


def test_sidecar_round_trip(tmp_path):
    key = _key(calibration="/data|/cam|64|0")
    path = _write_engine(tmp_path, key)
    data = json.loads(sidecar_path(path).read_text())
    assert data["key"]["tensorrt_version"] == "10.3.0" and data["key"]["gpu_name"] == "Orin (nvgpu)"
    assert data["key"]["profiles"] == [{"image": [[1, 3, 1080, 1920]] * 3}]
    assert data["engine_sha256"] == file_sha256(path)
    back = Sidecar.read(path)
    assert back.key == key and back.build == {"seconds": 1.0}
    sidecar_path(path).write_text("{not json")
    assert Sidecar.read(path) is None


def test_decide_load_build_and_rebuild_with_reasons(tmp_path):
    key = _key()
    first = decide(tmp_path, key)
    assert first.action == "build" and "no engine" in first.reasons[0]
    path = _write_engine(tmp_path, key)
    loaded = decide(tmp_path, key)
    assert loaded.action == "load" and loaded.path == path and "loading engine" in loaded.describe()
    assert decide(tmp_path, key, force=True).action == "rebuild"
    # Same file name, different recorded identity: each difference is named.
    for changes, reason in (({"onnx_sha256": "e" * 64}, "ONNX graph ffffffffffff != eeeeeeeeeeee"),
                            ({"model_sha256": "9" * 64}, "model weights"),
                            ({"compute_capability": "8.6"}, "compute capability 8.7 != 8.6"),
                            ({"calibration": "other"}, "int8 calibration data")):
        decision = decide(tmp_path, _key(**changes))
        assert decision.action == "rebuild" and reason in "; ".join(decision.reasons), decision.reasons
        assert decision.describe().startswith("rebuilding stale engine")
    # Tampered engine bytes.
    path.write_bytes(b"serialized-engine-truncated")
    decision = decide(tmp_path, key)
    assert decision.action == "rebuild" and "engine file hash" in decision.reasons[0]
    # Missing sidecar.
    sidecar_path(path).unlink()
    assert "sidecar" in decide(tmp_path, key).reasons[0]


def test_decide_names_engines_built_for_another_tensorrt_or_gpu(tmp_path):
    _write_engine(tmp_path, _key(tensorrt_version="8.6.2", gpu_name="Xavier"))
    decision = decide(tmp_path, _key())
    assert decision.action == "build"
    text = decision.describe()
    assert "trt8.6.2-xavier.engine" in text and "TensorRT version 8.6.2 != 10.3.0" in text
    assert "GPU Xavier != Orin" in text


def test_engines_folder_choice(tmp_path, monkeypatch):
    assert default_engines_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("SENSOR_CODEC_ENGINES", str(tmp_path / "env"))
    assert default_engines_dir() == tmp_path / "env"
    monkeypatch.delenv("SENSOR_CODEC_ENGINES")
    assert default_engines_dir() == REPO / "engines"  # a writable source checkout


# ------------------------------------------------------------------ calibration

def test_fit_to_resolution_crops_centre_and_resizes():
    rgb = np.arange(8 * 16 * 3, dtype=np.uint8).reshape(8, 16, 3)
    out = fit_to_resolution(rgb, Resolution(4, 4))  # 16x8 -> centre 8x8 crop -> 4x4
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == rgb[0, 4].tolist() and out[3, 3].tolist() == rgb[6, 10].tolist()
    tall = fit_to_resolution(rgb, Resolution(32, 8))
    assert tall.shape == (8, 32, 3) and tall[0, 0].tolist() == rgb[2, 0].tolist()


def test_folder_frames_are_a_seeded_choice(tmp_path):
    import imagecodecs

    for i in range(6):
        imagecodecs.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), 10 * i, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    first = [int(f[0, 0, 0]) for f in folder_frames(tmp_path, 3, seed=5)]
    again = [int(f[0, 0, 0]) for f in folder_frames(tmp_path, 3, seed=5)]
    other = [int(f[0, 0, 0]) for f in folder_frames(tmp_path, 3, seed=6)]
    assert first == again and len(set(first)) == 3 and first == sorted(first)
    assert set(first) <= {0, 10, 20, 30, 40, 50} and first != other
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no images"):
        list(folder_frames(empty, 1))
    with pytest.raises(ConfigError, match="at least 1 frame"):
        CalibrationSource(str(tmp_path), count=0)


def test_calibration_batches_check_shapes_and_stop_at_count():
    feeds = ({"a": np.full((1, 2), i, dtype=np.float64), "b": np.zeros(3)} for i in range(10))
    batches = list(calibration_batches(feeds, ["a", "b"], {"a": (1, 2), "b": (3,)}, 4))
    assert len(batches) == 4 and [float(b["a"][0, 0]) for b in batches] == [0, 1, 2, 3]
    assert all(b["a"].dtype == np.float32 and b["a"].flags.c_contiguous for b in batches)
    with pytest.raises(ConfigError, match="shape"):
        list(calibration_batches(iter([{"a": np.zeros((2, 2)), "b": np.zeros(3)}]), ["a", "b"],
                                 {"a": (1, 2), "b": (3,)}, 1))
    with pytest.raises(ConfigError, match="lacks input 'b'"):
        list(calibration_batches(iter([{"a": np.zeros((1, 2))}]), ["a", "b"], {"a": (1, 2), "b": (3,)}, 1))


def test_recording_backend_copies_only_the_target_graph():
    class Inner:
        name = "inner"

        def input_names(self, graph):
            return ["x"]

        def run(self, graph, feeds):
            return [feeds["x"] + 1]

    recorder = RecordingBackend(Inner(), "encoder")
    x = np.zeros(2)
    assert recorder.run("encoder", {"x": x})[0].tolist() == [1, 1]
    recorder.run("decoder", {"x": x})
    x += 5  # the recording is a copy
    assert len(recorder.recorded) == 1 and recorder.recorded[0]["x"].tolist() == [0, 0]


# ------------------------------------------------------------------ CUDA error translation

def test_cuda_failures_become_typed_errors_with_the_cuda_name():
    from sensor_codec.engines import cuda_runtime

    if importlib.util.find_spec("cuda") is None:
        with pytest.raises(BackendUnavailableError, match="cuda-python is not installed"):
            cuda_runtime.cudart()
        return
    rt = cuda_runtime.cudart()
    with pytest.raises(CudaError) as caught:
        cuda_runtime.check("cudaMalloc", (rt.cudaError_t.cudaErrorMemoryAllocation, None))
    assert caught.value.error_name == "cudaErrorMemoryAllocation" and caught.value.code == 2
    assert caught.value.call == "cudaMalloc"
    assert "cudaMalloc failed with cudaErrorMemoryAllocation (2)" in str(caught.value)
    assert cuda_runtime.check("x", (rt.cudaError_t.cudaSuccess, 7)) == 7
    assert cuda_runtime.check("x", (rt.cudaError_t.cudaSuccess, 1, 2)) == (1, 2)
    if registry.cuda_device_count() == 0:
        # No driver here: a real allocation fails with CUDA's own error name.
        with pytest.raises(CudaError) as caught:
            cuda_runtime.PinnedBuffer((4, 4), np.float32)
        assert caught.value.call == "cudaMallocHost"
        assert caught.value.error_name in ("cudaErrorInsufficientDriver", "cudaErrorNoDevice")


# ------------------------------------------------------------------ builder settings

def test_build_settings_validation():
    from sensor_codec.engines.builder import BuildSettings
    from sensor_codec.engines.tensorrt_backend import (
        on_demand_tag,
        settings_from_options,
    )

    with pytest.raises(EngineError, match="int8 engines need calibration"):
        BuildSettings(precision="int8")
    with pytest.raises(EngineError, match="too small"):
        BuildSettings(workspace_mib=1)
    with pytest.raises(EngineError, match="DLA core -1"):
        BuildSettings(dla_core=-1)
    assert settings_from_options({"fp16": True, "dla_core": 0}).precision == "fp16"
    assert settings_from_options({}).precision == "fp32"
    assert settings_from_options({"dla_core": 1}).precision == "fp16"  # DLA has no fp32
    with pytest.raises(EngineError, match="DLA has no fp32"):
        settings_from_options({"dla_core": 1, "precision": "fp32"})
    int8 = settings_from_options({"int8": True})  # run time: int8 engines are loaded, never calibrated
    assert int8.precision == "int8" and int8.load_only and int8.calibration is None
    assert on_demand_tag({"y_hat": (1, 96, 48, 60), "inv_gain": (1, 96, 48, 60)}) == "at60x48"
    assert on_demand_tag({"gain": (1, 96, 1, 1), "image": (1, 3, 200, 300), "thresholds": (3,)}) == "at300x200"


# ------------------------------------------------------------------ fused graph (a small real release)

def make_camera_release(out: Path) -> str:
    """A seeded, untrained camera release next to a copy of the shipped backbone
    (the fused graph's equivalence does not depend on training)."""
    import torch
    from safetensors.numpy import save_file

    from sensor_codec.learned import camera_codec as codec
    from sensor_codec.learned.export import (
        export_onnx,
        round_weights_to_half,
        state_numpy,
    )
    from sensor_codec.learned.release import (
        SHIPPED_MODELS,
        default_release,
        model_id_for,
        set_default,
        tensor_hash,
    )

    out.mkdir(parents=True, exist_ok=True)
    backbone = default_release("backbone", SHIPPED_MODELS)
    for path in SHIPPED_MODELS.glob(backbone.model_id + ".*"):
        shutil.copy(path, out / path.name)
    torch.manual_seed(0)
    net = codec.CameraCodecNet().eval()
    latent = codec.LATENT
    hp, wp = 128, 192
    latent_shape = (1, latent, hp // 16, wp // 16)
    # The integer-exact synthesis needs its grids fixed before freezing: seeded latents.
    net.g_s.calibrate([torch.randn(*latent_shape, generator=torch.Generator().manual_seed(1)) * 4])
    round_weights_to_half(net)
    tensors = state_numpy(net, prefix="net.")
    tensors.update(codec.frozen_tensors(net))
    model_id = model_id_for("camera", tensors)
    save_file(tensors, str(out / f"{model_id}.safetensors"))
    export_onnx(codec.EncoderGraph(net), (torch.rand(1, 3, hp, wp), torch.rand(1, 128, hp // 8, wp // 8),
                                          torch.ones(1, latent, hp // 16, wp // 16)),
                out / f"{model_id}-encoder.onnx", codec.ENCODER_INPUTS, codec.ENCODER_OUTPUTS,
                {"image": {2: "h", 3: "w"}, "tap": {2: "h8", 3: "w8"}, "gain": {2: "h16", 3: "w16"},
                 "y": {2: "h16", 3: "w16"}, "z": {2: "h64", 3: "w64"}})
    decoder, example = codec.decoder_graph(tensors), (torch.zeros(*latent_shape),)
    axes = {name: {2: "h16", 3: "w16"} for name in codec.DECODER_INPUTS}
    axes.update({name: {2: "h", 3: "w"} for name in codec.DECODER_OUTPUTS})
    export_onnx(decoder, example, out / f"{model_id}-decoder.onnx", codec.DECODER_INPUTS,
                codec.DECODER_OUTPUTS, axes)
    manifest = {"id": model_id, "kind": "camera", "sha256": tensor_hash(tensors), "backbone": backbone.model_id,
                "graphs": {"encoder": f"{model_id}-encoder.onnx", "decoder": f"{model_id}-decoder.onnx"},
                "inputs": {"encoder": codec.ENCODER_INPUTS, "decoder": codec.DECODER_INPUTS},
                "outputs": {"encoder": codec.ENCODER_OUTPUTS, "decoder": codec.DECODER_OUTPUTS},
                "latent_channels": latent, "levels": codec.LEVELS}
    (out / f"{model_id}.json").write_text(json.dumps(manifest))
    set_default("camera", model_id, out)
    return model_id


def test_frames(count: int = 3):
    """Real CamVid val frames (odd sizes on purpose) or seeded synthetic pictures."""
    from conftest import synthetic_rgb

    sizes = [(360, 480), (200, 300), (77, 131), (120, 160)][:count]
    if CAMVID_VAL.is_dir():
        import imagecodecs

        files = sorted(CAMVID_VAL.glob("*.png"))[::17]
        return [np.ascontiguousarray(imagecodecs.imread(str(f))[:h, :w]) for f, (h, w) in zip(files, sizes)]
    return [synthetic_rgb(h, w, seed=i) for i, (h, w) in enumerate(sizes)]


test_frames.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("models")
    make_camera_release(folder)
    return folder


@pytest.fixture(scope="module")
def fused(small_models, tmp_path_factory):
    from sensor_codec.engines.fused import export_fused

    return export_fused(tmp_path_factory.mktemp("fused"), models=str(small_models))


def test_fused_graph_equals_the_separate_graphs_on_onnxruntime(fused):
    import onnx

    from sensor_codec.engines.fused import compare_with_separate

    graph = onnx.load(str(fused.graph_path("fused_encoder")))
    assert [o.name for o in graph.graph.output] == ["semantic", "qmap", "y", "z"]
    assert [i.name for i in graph.graph.input] == ["image", "gain", "class_weights", "thresholds", "fraction_weight"]
    report = compare_with_separate(fused, test_frames(3), level=5, threads=2)
    assert report["frames"] == 3 and report["y_max_abs"] > 0.1
    assert report["semantic_mismatch_fraction"] == 0.0 and report["qmap_mismatch_fraction"] == 0.0
    assert report["y_max_abs_diff"] <= 1e-5 and report["z_max_abs_diff"] <= 1e-5


def test_fused_encoder_payload_matches_and_decodes_on_every_backend(fused, small_models):
    from sensor_codec.engines.fused import FusedEncoder
    from sensor_codec.learned.camera_runtime import LearnedCameraRuntime

    ort = LearnedCameraRuntime(models=str(small_models), backend="onnxruntime", threads=2)
    pt = LearnedCameraRuntime(models=str(small_models), backend="torch", threads=2)
    encoder = FusedEncoder(ort, fused, backend="onnxruntime", threads=2)
    for i, rgb in enumerate(test_frames(2)):
        for allocation in (True, False):
            packed = encoder.compress(rgb, 2 + i, semantic_allocation=allocation)
            reference = ort.compress(rgb, 2 + i, semantic_allocation=allocation)
            assert packed.metadata == reference.metadata
            assert packed.sections == reference.sections  # byte-identical payload
            assert np.array_equal(packed.semantic, reference.semantic)
            y_ort, qmap_ort, _ = ort.decode_latents(packed.sections, packed.metadata)
            y_pt, qmap_pt, _ = pt.decode_latents(packed.sections, packed.metadata)
            assert np.array_equal(y_ort, y_pt) and np.array_equal(qmap_ort, qmap_pt)
            if not allocation:
                assert np.all(qmap_ort == 2)


def test_fused_encoder_for_a_runtime_exports_its_graph_once(small_models, tmp_path, caplog):
    from sensor_codec.engines.fused import FusedEncoder
    from sensor_codec.learned.camera_runtime import LearnedCameraRuntime

    runtime = LearnedCameraRuntime(models=str(small_models), backend="onnxruntime", threads=2)
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines.fused"):
        first = FusedEncoder.for_runtime(runtime, "onnxruntime", 2, tmp_path)
    assert "exporting it" in caplog.text and first.release.manifest["camera"] == runtime.model_id
    onnx_file = first.release.graph_path("fused_encoder")
    stamp = onnx_file.stat().st_mtime_ns
    second = FusedEncoder.for_runtime(runtime, "onnxruntime", 2, tmp_path)
    assert second.release.model_id == first.release.model_id and onnx_file.stat().st_mtime_ns == stamp
    rgb = test_frames(2)[1]
    assert second.compress(rgb, 2).sections == runtime.compress(rgb, 2).sections


def test_fused_graph_torch_twin_agrees_with_onnx(fused):
    from sensor_codec.engines.fused import fused_feeds, separate_runtime
    from sensor_codec.learned.runtime import make_backend

    runtime = separate_runtime(fused)
    rgb = test_frames(3)[2]
    feeds = fused_feeds(runtime, rgb, 3)
    ort_out = make_backend(fused, "onnxruntime", 2).run("fused_encoder", feeds)
    torch_out = make_backend(fused, "torch", 2).run("fused_encoder", feeds)
    assert [o.shape for o in ort_out] == [o.shape for o in torch_out]
    assert ort_out[0].shape == (1, 77, 131) and ort_out[1].shape == (1, 4, 6) and ort_out[2].shape == (1, 96, 8, 12)
    assert (ort_out[0] == torch_out[0]).mean() > 0.999
    assert np.array_equal(ort_out[1], torch_out[1])
    assert np.abs(ort_out[2] - torch_out[2]).max() < 1e-3


def test_calibration_feeds_have_the_planned_shapes(fused, small_models):
    from sensor_codec.engines.calibration import graph_feeds
    from sensor_codec.learned.release import resolve_release

    resolution = Resolution(160, 120)
    camera = resolve_release("camera", None, str(small_models))
    frames = test_frames(2)
    for graph, release in (("encoder", camera), ("decoder", camera), ("fused_encoder", fused),
                           ("backbone", fused.backbone)):
        feeds = list(graph_feeds(graph, release, iter(frames), resolution, levels=[1, 6]))
        expected = graph_input_shapes(release.manifest, graph, resolution)
        assert len(feeds) == 2
        assert {k: v.shape for k, v in feeds[0].items()} == expected, graph
    assert not np.array_equal(feeds[0]["image"], feeds[1]["image"])


def _fake_tensorrt_machine(monkeypatch, version="10.3.0", gpu="Orin (nvgpu)"):
    """EngineCache without TensorRT or a GPU: version and device answered here, builds recorded."""
    from sensor_codec.engines import builder

    built = []

    def fake_build(onnx_path, profiles, settings, **kwargs):
        built.append((Path(onnx_path).name, profiles, settings.precision, kwargs.get("calibration_batches_list"),
                      kwargs.get("exact", False)))
        return f"engine for {Path(onnx_path).name} by TensorRT {version}".encode()

    monkeypatch.setattr(builder, "tensorrt_version", lambda: version)
    monkeypatch.setattr(builder.EngineCache, "gpu", lambda self: {"name": gpu, "compute_capability": "8.7"})
    monkeypatch.setattr(builder, "build_engine", fake_build)
    return built


def _encoder_feed_shapes(resolution: Resolution) -> dict:
    return graph_input_shapes({"latent_channels": 96}, "encoder", resolution)


def test_engine_cache_builds_loads_and_rebuilds_stale_engines(small_models, tmp_path, monkeypatch, caplog):
    from sensor_codec.engines.builder import BuildSettings, EngineCache
    from sensor_codec.learned.release import resolve_release

    camera = resolve_release("camera", None, str(small_models))
    settings = BuildSettings(precision="fp16", plan=ShapePlan.fixed([Resolution(960, 720), Resolution(1920, 1080)]))
    built = _fake_tensorrt_machine(monkeypatch, version="8.6.2")
    cache = EngineCache(tmp_path)
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines.builder"):
        engine, decision = cache.load_or_build(camera, "encoder", settings)
    assert decision.action == "build" and len(built) == 1 and built[0][2] == "fp16" and built[0][4] is False
    assert built[0][1][0]["image"] == ((1, 3, 768, 960),) * 3 and built[0][1][1]["tap"] == ((1, 128, 136, 240),) * 3
    assert decision.path.name == f"{camera.model_id}-encoder-fp16-960x720_1920x1080-trt8.6.2-orin-nvgpu.engine"
    assert decision.path.read_bytes() == engine and Sidecar.read(decision.path).key.tensorrt_version == "8.6.2"
    # Same machine: loaded, not rebuilt. A covering lookup finds it for a 1920x1080 feed.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines.builder"):
        again, decision = cache.load_or_build(camera, "encoder", settings)
    assert decision.action == "load" and again == engine and len(built) == 1 and "loading engine" in caplog.text
    found = cache.find_covering(camera, "encoder", settings, _encoder_feed_shapes(Resolution(1920, 1080)))
    assert found is not None and found[0] == engine and len(found[1]) == 2
    assert cache.find_covering(camera, "encoder", settings, _encoder_feed_shapes(Resolution(640, 480))) is None
    # TensorRT upgraded: the old engine is named as unusable and a new one is built.
    built = _fake_tensorrt_machine(monkeypatch, version="10.3.0")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines.builder"):
        _, decision = cache.load_or_build(camera, "encoder", settings)
    assert decision.action == "build" and len(built) == 1
    assert "TensorRT version 8.6.2 != 10.3.0" in caplog.text
    # The engine file was replaced behind the sidecar's back: rebuilt, with a warning saying why.
    decision.path.write_bytes(b"something else")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines.builder"):
        _, decision = cache.load_or_build(camera, "encoder", settings)
    assert decision.action == "rebuild" and "rebuilding stale engine" in caplog.text
    assert any(r.levelno == logging.WARNING and "engine file hash" in r.getMessage() for r in caplog.records)


def test_decoder_engines_are_exact_fp32_whatever_was_asked(small_models, tmp_path, monkeypatch, caplog):
    from sensor_codec.engines.builder import BuildSettings, EngineCache
    from sensor_codec.learned.release import resolve_release

    camera = resolve_release("camera", None, str(small_models))
    built = _fake_tensorrt_machine(monkeypatch)
    settings = BuildSettings(precision="fp16", plan=ShapePlan.fixed([Resolution(960, 720)]), dla_core=0)
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines.builder"):
        _, decision = EngineCache(tmp_path).load_or_build(camera, "decoder", settings)
    (name, profiles, precision, _, exact), = built
    assert precision == "fp32" and exact is True and name.endswith("-decoder.onnx")
    # Every declared decoder input is a latent-grid tensor at 1/16 of the padded frame.
    assert {n: p[0] for n, p in profiles[0].items()} == {
        n: (1, 96, 48, 60) for n in camera.manifest["inputs"]["decoder"]}
    assert "-decoder-fp32-960x720-trt10.3.0" in decision.path.name and "-dla" not in decision.path.name
    assert "fp32 without TF32 on the GPU (asked fp16, DLA core 0)" in caplog.text


def test_int8_build_calibrates_on_real_frames_at_the_planned_shape(small_models, tmp_path, monkeypatch):
    import imagecodecs

    from sensor_codec.engines.builder import BuildSettings, EngineCache
    from sensor_codec.learned.release import resolve_release

    images = tmp_path / "calib"
    images.mkdir()
    for i, rgb in enumerate(test_frames(3)):
        imagecodecs.imwrite(str(images / f"{i}.png"), rgb)
    camera = resolve_release("camera", None, str(small_models))
    built = _fake_tensorrt_machine(monkeypatch)
    settings = BuildSettings(precision="int8", plan=ShapePlan.fixed([Resolution(160, 120)]),
                             calibration=CalibrationSource(str(images), count=2, seed=1))
    _, decision = EngineCache(tmp_path / "eng").load_or_build(camera, "encoder", settings)
    (_, _, precision, batches, _), = built
    assert precision == "int8" and len(batches) == 2
    assert {k: v.shape for k, v in batches[0].items()} == {
        "image": (1, 3, 128, 192), "tap": (1, 128, 16, 24), "gain": (1, 96, 8, 12)}
    assert batches[0]["tap"].max() > 0 and batches[0]["gain"].min() > 0
    assert Sidecar.read(decision.path).key.calibration.endswith("|2|1")


# ------------------------------------------------------------------ CLI

def test_cli_backends_and_fuse(fused, small_models, tmp_path, capsys):
    import imagecodecs

    from sensor_codec.cli import main

    assert main(["engines", "backends"]) == 0
    out = capsys.readouterr().out
    assert "auto -> " in out and "tensorrt" in out and "torch-cuda" in out
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, rgb in enumerate(test_frames(2)):
        imagecodecs.imwrite(str(frames_dir / f"{i}.png"), rgb)
    assert main(["engines", "fuse", "--models", str(small_models), "--out", str(tmp_path / "eng"),
                 "--verify", str(frames_dir), "--count", "2"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert report["frames"] == 2 and report["y_max_abs_diff"] <= 1e-5
    assert (tmp_path / "eng" / f"{fused.model_id}.onnx").is_file()
    assert main(["engines", "list", "--out", str(tmp_path / "eng")]) == 0
    assert "no engines" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_cli_build_without_tensorrt_says_so(small_models, tmp_path, capsys):
    from sensor_codec.cli import main

    assert main(["engines", "build", "--graph", "decoder", "--resolution", "160x120", "--models",
                 str(small_models), "--out", str(tmp_path)]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err


# ------------------------------------------------------------------ TensorRT (where it imports)

def _tensorrt_ready() -> str:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt does not import here (not installable in this environment)"
    if importlib.util.find_spec("cuda") is None:
        return "cuda-python is not installed"
    if registry.cuda_device_count() == 0:
        return "no CUDA GPU"
    return ""


needs_tensorrt = pytest.mark.skipif(bool(_tensorrt_ready()), reason=_tensorrt_ready() or "ready")


@needs_tensorrt
def test_tensorrt_engine_matches_onnxruntime_and_is_cached(small_models, tmp_path, caplog):
    from sensor_codec.engines.calibration import graph_feeds
    from sensor_codec.engines.tensorrt_backend import TensorRTBackend
    from sensor_codec.learned.camera_runtime import LearnedCameraRuntime
    from sensor_codec.learned.release import resolve_release

    camera = resolve_release("camera", None, str(small_models))
    ort = LearnedCameraRuntime(release=camera, backend="onnxruntime")
    # The decoder's feeds exactly as the runtime builds them (whatever its input contract).
    (feeds,) = graph_feeds("decoder", camera, iter(test_frames(4)[3:]), Resolution(131, 77), levels=[4])
    expected = ort.backend.run("decoder", feeds)[0]
    with caplog.at_level(logging.INFO):
        backend = TensorRTBackend(camera, 0, {"engines": str(tmp_path)})
        (image,) = backend.run("decoder", feeds)
    assert "building engine" in caplog.text
    # fp32 without TF32: the integer-exact synthesis gives ONNX Runtime's numbers.
    assert image.shape == expected.shape and np.array_equal(image, expected)
    engines = list(tmp_path.glob("*.engine"))
    assert len(engines) == 1 and "trt" in engines[0].name and camera.model_id in engines[0].name
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = TensorRTBackend(camera, 0, {"engines": str(tmp_path)})
        again.run("decoder", feeds)
    assert "loading engine" in caplog.text
    # A changed sidecar (another TensorRT) makes the loader rebuild and say why.
    sidecar = json.loads(sidecar_path(engines[0]).read_text())
    sidecar["key"]["onnx_sha256"] = "0" * 64
    sidecar_path(engines[0]).write_text(json.dumps(sidecar))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        TensorRTBackend(camera, 0, {"engines": str(tmp_path)}).run("decoder", feeds)
    assert "rebuilding stale engine" in caplog.text and "ONNX graph" in caplog.text


@needs_tensorrt
def test_tensorrt_fused_engine_outputs_semantic_and_latents(fused, tmp_path):
    from sensor_codec.engines.builder import BuildSettings, EngineCache
    from sensor_codec.engines.fused import fused_feeds, separate_runtime
    from sensor_codec.engines.tensorrt_backend import TensorRTBackend
    from sensor_codec.learned.runtime import make_backend

    plan = ShapePlan.fixed([Resolution(160, 120)])
    cache = EngineCache(tmp_path)
    _, decision = cache.load_or_build(fused, "fused_encoder", BuildSettings(precision="fp32", plan=plan))
    assert decision.action == "build" and decision.path.is_file()
    runtime = separate_runtime(fused)
    rgb = test_frames(4)[3]
    feeds = fused_feeds(runtime, rgb, 4)
    outputs = TensorRTBackend(fused, 0, {"engines": str(tmp_path)}).run("fused_encoder", feeds)
    reference = make_backend(fused, "onnxruntime").run("fused_encoder", feeds)
    assert [o.shape for o in outputs] == [r.shape for r in reference]
    (semantic, qmap, y, z), (ref_semantic, ref_qmap, ref_y, ref_z) = outputs, reference
    assert semantic.shape == (1, 120, 160) and semantic.dtype == np.uint8 and (semantic == ref_semantic).mean() > 0.999
    assert qmap.shape == (1, 4, 6) and (qmap == ref_qmap).mean() > 0.99  # 160x120 pads to 192x128
    assert np.abs(y - ref_y).max() < 1e-2 * max(1.0, np.abs(ref_y).max()) and z.shape[1:] == ref_z.shape[1:]


# ------------------------------------------------------------------ fakes of cuda-python and TensorRT
#
# Strict stand-ins that expose only the documented names the engines code may use
# (cuda-python's runtime module; TensorRT's Python API and the patterns of its
# samples), so the CUDA / TensorRT plumbing runs here without a GPU: a misspelt
# call, a wrong argument order or a wrong copy direction fails these tests.



class FakeCudart(types.ModuleType):
    """cuda-python's runtime module: every call returns ``(cudaError_t, *values)``.
    Device memory is host memory registered as "device", so copies can be checked."""

    class cudaError_t(enum.Enum):  # a plain Enum, as in older bindings (int() of it raises)
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorMemoryAllocation = 2
        cudaErrorInsufficientDriver = 35
        cudaErrorNoDevice = 100
        cudaErrorInvalidResourceHandle = 400

    class cudaMemcpyKind(enum.Enum):
        cudaMemcpyHostToHost = 0
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStream_t:
        def __init__(self, handle: int) -> None:
            self._handle = handle

        def __int__(self) -> int:
            return self._handle

    cudaStreamNonBlocking = 1

    def __init__(self) -> None:
        super().__init__("cuda_bindings_runtime_fake")
        self.memory: dict[int, tuple[ctypes.Array, str]] = {}  # pointer -> (buffer, "pinned" | "device")
        self.streams: dict[int, int] = {}                       # handle -> flags
        self.copies: list[tuple[str, int, bool]] = []            # (kind, bytes, host side pinned)
        self.freed: list[str] = []
        self.fail: dict[str, FakeCudart.cudaError_t] = {}        # call name -> error to return once
        self._next_stream = 0x1000

    def _ok(self, call: str, *values):
        error = self.fail.pop(call, None)
        return (error,) if error is not None else (self.cudaError_t.cudaSuccess, *values)

    def _alloc(self, call: str, nbytes: int, kind: str):
        if not isinstance(nbytes, int) or nbytes <= 0:
            return (self.cudaError_t.cudaErrorInvalidValue,)
        result = self._ok(call)
        if result[0] is not self.cudaError_t.cudaSuccess:
            return result
        buffer = ctypes.create_string_buffer(nbytes)
        self.memory[ctypes.addressof(buffer)] = (buffer, kind)
        return (self.cudaError_t.cudaSuccess, ctypes.addressof(buffer))

    def _free(self, call: str, pointer: int, kind: str):
        if self.memory.get(pointer, (None, ""))[1] != kind:
            return (self.cudaError_t.cudaErrorInvalidValue,)
        del self.memory[pointer]
        self.freed.append(kind)
        return (self.cudaError_t.cudaSuccess,)

    def kind_of(self, pointer: int, nbytes: int) -> str:
        for start, (buffer, kind) in self.memory.items():
            if start <= pointer and pointer + nbytes <= start + ctypes.sizeof(buffer):
                return kind
        return "pageable"

    def read(self, pointer: int, nbytes: int) -> bytes:
        return ctypes.string_at(pointer, nbytes)

    def write(self, pointer: int, data: bytes) -> None:
        if self.kind_of(pointer, len(data)) != "device":
            raise AssertionError("TensorRT fake wrote outside device memory")
        ctypes.memmove(pointer, data, len(data))

    # --- the runtime API used by cuda_runtime.py
    def cudaGetErrorName(self, error):
        return (self.cudaError_t.cudaSuccess, error.name.encode())

    def cudaGetErrorString(self, error):
        return (self.cudaError_t.cudaSuccess, {2: b"out of memory"}.get(error.value, b"fake error"))

    def cudaGetDeviceCount(self):
        return self._ok("cudaGetDeviceCount", 1)

    def cudaSetDevice(self, device: int):
        return self._ok("cudaSetDevice") if device == 0 else (self.cudaError_t.cudaErrorInvalidValue,)

    def cudaGetDeviceProperties(self, device: int):
        props = types.SimpleNamespace(name=b"Orin (nvgpu)\0\0\0", major=8, minor=7, totalGlobalMem=1 << 34,
                                      integrated=1)
        return self._ok("cudaGetDeviceProperties", props)

    def cudaStreamCreateWithFlags(self, flags: int):
        self._next_stream += 16
        self.streams[self._next_stream] = flags
        return self._ok("cudaStreamCreateWithFlags", self.cudaStream_t(self._next_stream))

    def cudaStreamSynchronize(self, stream):
        return self._ok("cudaStreamSynchronize") if int(stream) in self.streams else (
            self.cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaStreamDestroy(self, stream):
        return (self.cudaError_t.cudaSuccess,) if self.streams.pop(int(stream), None) is not None else (
            self.cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaMallocHost(self, nbytes: int):
        return self._alloc("cudaMallocHost", nbytes, "pinned")

    def cudaMalloc(self, nbytes: int):
        return self._alloc("cudaMalloc", nbytes, "device")

    def cudaFreeHost(self, pointer: int):
        return self._free("cudaFreeHost", pointer, "pinned")

    def cudaFree(self, pointer: int):
        return self._free("cudaFree", pointer, "device")

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind, stream):
        if not isinstance(stream, self.cudaStream_t) or int(stream) not in self.streams:
            return (self.cudaError_t.cudaErrorInvalidResourceHandle,)
        if kind is self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            device, host = dst, src
        elif kind is self.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            device, host = src, dst
        else:
            return (self.cudaError_t.cudaErrorInvalidValue,)
        if self.kind_of(device, count) != "device" or self.kind_of(host, count) == "device":
            return (self.cudaError_t.cudaErrorInvalidValue,)  # pointers disagree with the direction
        ctypes.memmove(dst, src, count)
        self.copies.append((kind.name, count, self.kind_of(host, count) == "pinned"))
        return self._ok("cudaMemcpyAsync")


@pytest.fixture
def fake_cuda(monkeypatch):
    from sensor_codec.engines import cuda_runtime

    fake = FakeCudart()
    monkeypatch.setattr(cuda_runtime, "cudart", lambda: fake)
    return fake


def test_cuda_errors_from_the_bindings_become_typed_errors_with_the_cuda_name(fake_cuda):
    from sensor_codec.engines import cuda_runtime

    error = fake_cuda.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(CudaError) as caught:
        cuda_runtime.check("cudaMalloc", (error,))
    assert (caught.value.call, caught.value.error_name, caught.value.code) == ("cudaMalloc",
                                                                              "cudaErrorMemoryAllocation", 2)
    assert str(caught.value) == "cudaMalloc failed with cudaErrorMemoryAllocation (2): out of memory"
    assert cuda_runtime.check("cudaGetDeviceCount", fake_cuda.cudaGetDeviceCount()) == 1
    assert cuda_runtime.check("cudaFree", (fake_cuda.cudaError_t.cudaSuccess,)) is None
    assert cuda_runtime.check("x", (fake_cuda.cudaError_t.cudaSuccess, 1, 2)) == (1, 2)
    # A failing allocation inside a helper names the call and CUDA's error.
    fake_cuda.fail["cudaMallocHost"] = error
    with pytest.raises(CudaError, match="cudaMallocHost failed with cudaErrorMemoryAllocation"):
        cuda_runtime.PinnedBuffer((4, 4), np.float32)
    with pytest.raises(BackendUnavailableError, match="CUDA device 3 requested, 1 present"):
        cuda_runtime.set_device(3)
    assert cuda_runtime.device_info(0) == {"name": "Orin (nvgpu)", "compute_capability": "8.7",
                                           "memory_bytes": 1 << 34, "integrated": True}


def test_pinned_buffers_and_async_copies_on_one_nonblocking_stream(fake_cuda):
    from sensor_codec.engines import cuda_runtime

    stream = cuda_runtime.Stream()
    assert fake_cuda.streams[stream.pointer] == fake_cuda.cudaStreamNonBlocking
    buffers = cuda_runtime.TensorBuffers()
    data = np.random.default_rng(3).standard_normal((2, 3, 5)).astype(np.float32)
    host, device = buffers.get("x", data.shape, np.float32)
    assert fake_cuda.kind_of(host.ctypes.data, host.nbytes) == "pinned"
    np.copyto(host, data)
    cuda_runtime.copy_to_device(device, host, stream)
    back, back_device = buffers.get("y", data.shape, np.float32)
    ctypes.memmove(back_device, device, data.nbytes)  # the "kernel": y = x
    cuda_runtime.copy_to_host(back, back_device, stream)
    stream.synchronize()
    assert np.array_equal(back, data)
    assert fake_cuda.copies == [("cudaMemcpyHostToDevice", 120, True), ("cudaMemcpyDeviceToHost", 120, True)]
    # Same or smaller shape: the same buffers; larger: new ones, the old freed.
    assert buffers.get("x", (2, 3, 4), np.float32)[1] == device
    assert buffers.get("x", (4, 3, 5), np.float32)[1] != device and fake_cuda.freed == ["pinned", "device"]
    with pytest.raises(CudaError, match="cudaErrorInvalidValue"):
        cuda_runtime.PinnedBuffer((2,), np.float32).view((3,))
    buffers.free()
    stream.close()
    assert fake_cuda.streams == {} and fake_cuda.freed.count("device") == 3
    # A copy whose pointers contradict its direction is refused by CUDA, and says so.
    pinned = cuda_runtime.PinnedBuffer((4,), np.float32)
    other = cuda_runtime.Stream()
    with pytest.raises(CudaError, match=r"cudaMemcpyAsync\(host->device\) failed with cudaErrorInvalidValue"):
        cuda_runtime.copy_to_device(pinned.pointer, pinned.array, other)


def _fake_tensorrt(version: str, cudart: FakeCudart, *, dla_cores: int = 0, parse_ok: bool = True,
                   build_ok: bool = True) -> types.ModuleType:
    """TensorRT's Python API as documented (Builder, OnnxParser, IBuilderConfig,
    IOptimizationProfile, IInt8EntropyCalibrator2, Runtime, ICudaEngine,
    IExecutionContext). Engines execute their ONNX graph with ONNX Runtime, reading
    and writing the fake device memory at the addresses bound to each tensor."""
    import onnx
    import onnxruntime

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []      # (config summary, calibration batches seen)
    trt.runtimes = []

    class Severity(enum.IntEnum):  # pybind11 enums convert with int(), as TensorRT's samples rely on
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity
    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"FP16": 0, "INT8": 1, "GPU_FALLBACK": 4, "TF32": 9})
    trt.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4,
                                          "UINT8": 5, "INT64": 8})
    numpy_of = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
                trt.DataType.INT32: np.int32, trt.DataType.BOOL: np.bool_, trt.DataType.UINT8: np.uint8,
                trt.DataType.INT64: np.int64}
    from_onnx = {1: trt.DataType.FLOAT, 2: trt.DataType.UINT8, 7: trt.DataType.INT64, 6: trt.DataType.INT32}
    trt.nptype = lambda dtype: numpy_of[dtype]

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # TensorRT's parameter names
            if not (len(min) == len(opt) == len(max)):
                raise TypeError("set_shape(): min, opt and max must have the same rank")
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags = {trt.BuilderFlag.TF32}   # TensorRT enables TF32 by default
            self.pools = {}
            self.profiles = []
            self.int8_calibrator = None
            self.calibration_profile = None
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1

        def set_memory_pool_limit(self, pool, pool_size: int) -> None:
            if not isinstance(pool, trt.MemoryPoolType) or not isinstance(pool_size, int):
                raise TypeError("set_memory_pool_limit(pool: MemoryPoolType, pool_size: int)")
            self.pools[pool] = pool_size

        def set_flag(self, flag) -> None:
            self.flags.add(trt.BuilderFlag(flag))

        def clear_flag(self, flag) -> None:
            self.flags.discard(trt.BuilderFlag(flag))

        def get_flag(self, flag) -> bool:
            return flag in self.flags

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile) -> bool:
            if not isinstance(profile, IOptimizationProfile):
                raise TypeError("set_calibration_profile(profile: IOptimizationProfile)")
            self.calibration_profile = profile
            return True

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs = []
            self.model = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int):
            return types.SimpleNamespace(name=self.inputs[index])

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            if not isinstance(logger, ILogger):
                raise TypeError("OnnxParser(network, logger: ILogger)")
            self.network = network
            self.errors = [] if parse_ok else ["In node 3 (Resize): UNSUPPORTED_NODE"]

        def parse(self, model: bytes) -> bool:
            if not isinstance(model, bytes) or not parse_ok:
                return False
            graph = onnx.load_model_from_string(model).graph
            initialisers = {i.name for i in graph.initializer}
            self.network.inputs = [i.name for i in graph.input if i.name not in initialisers]
            self.network.model = model
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int):
            return self.errors[index]

    trt.OnnxParser = OnnxParser

    class Builder:
        num_DLA_cores = dla_cores
        platform_has_fast_fp16 = True

        def __init__(self, logger) -> None:
            if not isinstance(logger, ILogger):
                raise TypeError("Builder(logger: ILogger)")

        def create_network(self, flags: int = 0):
            if int(version.split(".")[0]) < 10 and flags != 1 << 0:
                raise TypeError("TensorRT 8 needs EXPLICIT_BATCH for ONNX networks")
            return Network(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            if not build_ok:
                return None
            for profile in config.profiles:
                if sorted(profile.shapes) != sorted(network.inputs):
                    raise TypeError(f"profile covers {sorted(profile.shapes)}, network inputs {network.inputs}")
            batches = []
            if trt.BuilderFlag.INT8 in config.flags:
                calibrator = config.int8_calibrator
                if not isinstance(calibrator, IInt8EntropyCalibrator2):
                    raise TypeError("int8 needs an IInt8EntropyCalibrator2")
                if calibrator.read_calibration_cache() is None:
                    names = list(reversed(network.inputs))  # TensorRT's order, not necessarily the graph's
                    shapes = {n: config.calibration_profile.shapes[n][1] for n in names}
                    while True:
                        pointers = calibrator.get_batch(names)
                        if not pointers:
                            break
                        batches.append({n: np.frombuffer(cudart.read(p, 4 * int(np.prod(shapes[n]))),
                                                         np.float32).reshape(shapes[n]).copy()
                                        for n, p in zip(names, pointers)})
                    calibrator.write_calibration_cache(b"fake-calibration-table")
            summary = {"flags": sorted(f.name for f in config.flags), "network_flags": network.flags,
                       "workspace": config.pools.get(trt.MemoryPoolType.WORKSPACE),
                       "device": config.default_device_type.name, "dla_core": config.DLA_core,
                       "profiles": [{n: [list(s) for s in b] for n, b in p.shapes.items()} for p in config.profiles],
                       "calibration_profile": config.profiles.index(config.calibration_profile)
                       if config.calibration_profile is not None else None}
            trt.builds.append((summary, batches))
            return bytearray(b"FAKEENGINE" + json.dumps(summary).encode() + b"\n" + network.model)

    trt.Builder = Builder

    class IExecutionContext:
        def __init__(self, engine) -> None:
            self.engine = engine
            self.profile = 0
            self.shapes = {}
            self.addresses = {}

        def _profile(self) -> dict:
            return self.engine.summary["profiles"][self.profile]

        def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
            if not isinstance(stream_handle, int) or int(stream_handle) not in cudart.streams:
                raise TypeError("set_optimization_profile_async(profile_index: int, stream_handle: int)")
            if not 0 <= profile_index < self.engine.num_optimization_profiles:
                return False
            self.profile, self.shapes = profile_index, {}
            return True

        def set_input_shape(self, name: str, shape) -> bool:
            low, _, high = self._profile()[name]
            if len(shape) != len(low) or any(not lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def _run(self, feeds):
            return dict(zip(self.engine.outputs, self.engine.session.run(None, feeds)))

        def get_tensor_shape(self, name: str):
            if name in self.engine.inputs:
                return self.shapes.get(name, (-1,))
            if sorted(self.shapes) != sorted(self.engine.inputs):
                return (-1,)
            zeros = {n: np.zeros(s, numpy_of[self.engine.dtypes[n]]) for n, s in self.shapes.items()}
            return tuple(self._run(zeros)[name].shape)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if not isinstance(memory, int) or cudart.kind_of(memory, 1) != "device":
                return False
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not isinstance(stream_handle, int) or stream_handle not in cudart.streams:
                raise TypeError("execute_async_v3(stream_handle: int)")
            feeds = {}
            for name in self.engine.inputs:
                dtype = np.dtype(numpy_of[self.engine.dtypes[name]])
                count = int(np.prod(self.shapes[name]))
                feeds[name] = np.frombuffer(cudart.read(self.addresses[name], count * dtype.itemsize),
                                            dtype).reshape(self.shapes[name])
            for name, value in self._run(feeds).items():
                cudart.write(self.addresses[name], np.ascontiguousarray(value).tobytes())
            return True

    class ICudaEngine:
        def __init__(self, summary: dict, model: bytes) -> None:
            self.summary = summary
            graph = onnx.load_model_from_string(model).graph
            self.inputs = [i.name for i in graph.input]
            self.outputs = [o.name for o in graph.output]
            self.dtypes = {v.name: from_onnx[v.type.tensor_type.elem_type] for v in [*graph.input, *graph.output]}
            self.session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])

        @property
        def num_io_tensors(self) -> int:
            return len(self.inputs) + len(self.outputs)

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.summary["profiles"])

        def get_tensor_name(self, index: int) -> str:
            return (self.inputs + self.outputs)[index]

        def get_tensor_mode(self, name: str):
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str):
            return self.dtypes[name]

        def create_execution_context(self):
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger) -> None:
            if not isinstance(logger, ILogger):
                raise TypeError("Runtime(logger: ILogger)")
            self.DLA_core = -1
            trt.runtimes.append(self)

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            if not data.startswith(b"FAKEENGINE"):
                return None
            header, model = data[len(b"FAKEENGINE"):].split(b"\n", 1)
            self.deserialized = json.loads(header)
            self.dla_core_at_deserialise = self.DLA_core
            return ICudaEngine(self.deserialized, model)

    trt.Runtime = Runtime
    return trt


@pytest.fixture
def fake_trt(fake_cuda, monkeypatch):
    """Install a fake TensorRT 10.3 (``fake_trt.install(version=...)`` for another)."""
    from sensor_codec.engines import tensorrt_backend

    def install(version: str = "10.3.0", **kwargs):
        trt = _fake_tensorrt(version, fake_cuda, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(tensorrt_backend._TensorRTLogger, "_instance", None)
        return trt

    trt = install()
    trt.install = install
    return trt


def _tiny_release(folder: Path):
    """A two-input, two-output ONNX graph (float and uint8 outputs, dynamic H/W) as a release."""
    import onnx
    from onnx import TensorProto, helper

    from sensor_codec.learned.release import ModelRelease

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["scaled"]),
         helper.make_node("Add", ["scaled", "one"], ["y"]),
         helper.make_node("Greater", ["x", "zero"], ["positive"]),
         helper.make_node("Cast", ["positive"], ["mask"], to=TensorProto.UINT8)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "h", "w"]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "h", "w"]),
         helper.make_tensor_value_info("mask", TensorProto.UINT8, [1, 2, "h", "w"])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
         helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "tiny-0123456789ab.onnx"))
    manifest = {"id": "tiny-0123456789ab", "kind": "tiny", "sha256": "ab" * 32,
                "graphs": {"tiny": "tiny-0123456789ab.onnx"}, "inputs": {"tiny": ["x", "scale"]},
                "outputs": {"tiny": ["y", "mask"]}}
    return ModelRelease("tiny-0123456789ab", "tiny", folder, manifest)


def _tiny_feeds(height: int, width: int, seed: int = 0) -> dict:
    x = np.random.default_rng(seed).standard_normal((1, 2, height, width)).astype(np.float32)
    return {"x": x, "scale": np.array([3.0], np.float32)}


def test_tensorrt_backend_runs_engines_through_pinned_buffers_and_caches_them(fake_trt, fake_cuda, tmp_path,
                                                                              caplog):
    from sensor_codec.engines.tensorrt_backend import TensorRTBackend

    release = _tiny_release(tmp_path / "model")
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines"):
        backend = TensorRTBackend(release, 0, {"engines": str(tmp_path / "eng"), "precision": "fp16"})
        y, mask = backend.run("tiny", _tiny_feeds(6, 10))
    feeds = _tiny_feeds(6, 10)
    assert np.allclose(y, feeds["x"] * 3 + 1) and mask.dtype == np.uint8
    assert np.array_equal(mask, (feeds["x"] > 0).astype(np.uint8))
    assert "tensorrt backend: Orin (nvgpu) (sm 8.7), fp16" in caplog.text and "building engine" in caplog.text
    (summary, _), = fake_trt.builds
    assert summary["flags"] == ["FP16", "TF32"] and summary["network_flags"] == 0
    assert summary["workspace"] == 1024 << 20 and summary["device"] == "GPU"
    assert summary["profiles"] == [{"x": [[1, 2, 6, 10]] * 3, "scale": [[1]] * 3}]
    # Inputs went host->device from pinned memory, outputs came back into pinned memory,
    # all on the backend's one non-blocking stream.
    assert all(pinned for _, _, pinned in fake_cuda.copies)
    assert [kind for kind, _, _ in fake_cuda.copies] == ["cudaMemcpyHostToDevice"] * 2 + ["cudaMemcpyDeviceToHost"] * 2
    assert list(fake_cuda.streams.values()) == [fake_cuda.cudaStreamNonBlocking]
    # Another frame size: a second (on-demand) engine; the first stays in use for its size.
    y2, _ = backend.run("tiny", _tiny_feeds(4, 4, seed=1))
    assert y2.shape == (1, 2, 4, 4) and len(fake_trt.builds) == 2
    backend.run("tiny", _tiny_feeds(6, 10, seed=2))
    assert len(fake_trt.builds) == 2
    names = sorted(p.name for p in (tmp_path / "eng").glob("*.engine"))
    assert names == ["tiny-0123456789ab-tiny-fp16-at10x6-trt10.3.0-orin-nvgpu.engine",
                     "tiny-0123456789ab-tiny-fp16-at4x4-trt10.3.0-orin-nvgpu.engine"]
    backend.close()
    assert fake_cuda.streams == {} and not any(kind == "device" for _, kind in fake_cuda.memory.values())
    # A new process finds the engine on disk and loads it, saying so; no build.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines"):
        again = TensorRTBackend(release, 0, {"engines": str(tmp_path / "eng"), "precision": "fp16"})
        y3, _ = again.run("tiny", feeds)
    assert np.array_equal(y3, y) and len(fake_trt.builds) == 2 and "loading engine" in caplog.text
    # TensorRT upgraded: the engine is stale, rebuilt for the new version, and the log says why.
    fake_trt.install(version="10.4.1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sensor_codec.engines"):
        TensorRTBackend(release, 0, {"engines": str(tmp_path / "eng"), "precision": "fp16"}).run("tiny", feeds)
    assert "TensorRT version 10.3.0 != 10.4.1" in caplog.text and "building engine" in caplog.text


def test_tensorrt_engine_profiles_switch_on_one_context(fake_trt, fake_cuda, tmp_path):
    from sensor_codec.engines.builder import BuildSettings, EngineCache
    from sensor_codec.engines.tensorrt_backend import TensorRTBackend

    release = _tiny_release(tmp_path / "model")
    profiles = [{"x": ((1, 2, 4, 4),) * 3, "scale": ((1,),) * 3},
                {"x": ((1, 2, 8, 8), (1, 2, 16, 16), (1, 2, 32, 32)), "scale": ((1,),) * 3}]
    backend = TensorRTBackend(release, 0, {"engines": str(tmp_path / "eng")})
    backend.preload("tiny", profiles)
    for height, width in ((4, 4), (20, 12), (4, 4), (32, 8)):
        y, _ = backend.run("tiny", _tiny_feeds(height, width))
        assert y.shape == (1, 2, height, width)
    assert len(fake_trt.builds) == 1 and fake_trt.builds[0][0]["flags"] == ["TF32"]  # fp32 by default
    with pytest.raises(EngineError, match="do not cover"):
        backend._runners["tiny"][0].infer(_tiny_feeds(40, 40), ["y", "mask"])
    # The cache knows what it built: a covering lookup finds the two-profile engine.
    cache = EngineCache(tmp_path / "eng")
    found = cache.find_covering(release, "tiny", BuildSettings(precision="fp32"), {"x": (1, 2, 9, 30), "scale": (1,)})
    assert found is not None and found[1][1]["x"][2] == (1, 2, 32, 32)


@pytest.mark.parametrize("version, network_flags", [("8.6.1", 1), ("10.3.0", 0)])
def test_build_engine_configures_tensorrt_as_documented(fake_trt, tmp_path, version, network_flags):
    from sensor_codec.engines.builder import BuildSettings, build_engine

    trt = fake_trt.install(version=version, dla_cores=2)
    release = _tiny_release(tmp_path / "model")
    onnx_path = release.graph_path("tiny")
    profile = {"x": ((1, 2, 4, 4), (1, 2, 8, 8), (1, 2, 16, 16)), "scale": ((1,),) * 3}
    build_engine(onnx_path, [profile], BuildSettings(precision="fp16", workspace_mib=256, dla_core=1))
    summary = trt.builds[-1][0]
    assert summary["network_flags"] == network_flags  # EXPLICIT_BATCH before TensorRT 10 only
    assert summary["flags"] == ["FP16", "GPU_FALLBACK", "TF32"] and summary["workspace"] == 256 << 20
    assert summary["device"] == "DLA" and summary["dla_core"] == 1
    assert summary["profiles"] == [{"x": [[1, 2, 4, 4], [1, 2, 8, 8], [1, 2, 16, 16]], "scale": [[1]] * 3}]
    build_engine(onnx_path, [profile], BuildSettings(precision="fp16", dla_core=0, gpu_fallback=False))
    assert trt.builds[-1][0]["flags"] == ["FP16", "TF32"]
    build_engine(onnx_path, [profile], BuildSettings(precision="fp32"), exact=True)
    assert trt.builds[-1][0]["flags"] == [] and trt.builds[-1][0]["device"] == "GPU"
    with pytest.raises(EngineError, match="exact engine must be fp32"):
        build_engine(onnx_path, [profile], BuildSettings(precision="fp16"), exact=True)
    with pytest.raises(EngineError, match="DLA core 2 requested, this device has 2"):
        build_engine(onnx_path, [profile], BuildSettings(precision="fp16", dla_core=2))
    with pytest.raises(EngineError, match="needs --precision fp16 or int8"):
        BuildSettings(precision="fp32", dla_core=0)
    with pytest.raises(EngineError, match="no shape given for input 'scale'"):
        build_engine(onnx_path, [{"x": profile["x"]}], BuildSettings(precision="fp32"))
    trt = fake_trt.install(version=version, parse_ok=False)
    with pytest.raises(EngineError, match="cannot parse .*UNSUPPORTED_NODE"):
        build_engine(onnx_path, [profile], BuildSettings(precision="fp32"))
    fake_trt.install(version=version, build_ok=False)
    with pytest.raises(EngineError, match="failed to build an engine"):
        build_engine(onnx_path, [profile], BuildSettings(precision="fp32"))


def test_int8_calibrator_hands_tensorrt_device_pointers_and_caches_the_table(fake_trt, fake_cuda, tmp_path):
    from sensor_codec.engines.builder import BuildSettings, build_engine

    release = _tiny_release(tmp_path / "model")
    profile = {"x": ((1, 2, 8, 8),) * 3, "scale": ((1,),) * 3}
    rng = np.random.default_rng(7)
    batches = [{"x": rng.standard_normal((1, 2, 8, 8)).astype(np.float32),
                "scale": np.array([i], np.float32)} for i in range(3)]
    cache = tmp_path / "tiny.calib"
    settings = BuildSettings(precision="int8", calibration=CalibrationSource(str(tmp_path)))
    build_engine(release.graph_path("tiny"), [profile], settings, calibration_batches_list=batches,
                 calibration_cache=cache)
    summary, seen = fake_trt.builds[-1]
    assert summary["flags"] == ["FP16", "INT8", "TF32"] and summary["calibration_profile"] == 0
    assert len(seen) == 3
    for fed, sent in zip(batches, seen):  # matched by name, whatever order TensorRT asks in
        assert np.array_equal(fed["x"], sent["x"]) and np.array_equal(fed["scale"], sent["scale"])
    assert cache.read_bytes() == b"fake-calibration-table"
    # Calibrator device buffers and stream are released after the build.
    assert fake_cuda.streams == {} and not any(kind == "device" for _, kind in fake_cuda.memory.values())
    # Second build: TensorRT reads the cache and asks for no batch.
    build_engine(release.graph_path("tiny"), [profile], settings, calibration_batches_list=batches,
                 calibration_cache=cache)
    assert fake_trt.builds[-1][1] == []
    # No cache path: calibrates every time and writes nothing next to the model.
    build_engine(release.graph_path("tiny"), [profile], settings, calibration_batches_list=batches)
    assert len(fake_trt.builds[-1][1]) == 3 and sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "tiny-0123456789ab.onnx"]


def test_tensorrt_backend_on_a_dla_core(fake_trt, tmp_path):
    from sensor_codec.engines.tensorrt_backend import TensorRTBackend

    trt = fake_trt.install(dla_cores=2)
    release = _tiny_release(tmp_path / "model")
    backend = TensorRTBackend(release, 0, {"engines": str(tmp_path), "dla_core": 1})
    y, _ = backend.run("tiny", _tiny_feeds(4, 8))
    assert np.allclose(y, _tiny_feeds(4, 8)["x"] * 3 + 1)
    summary = trt.builds[-1][0]
    # DLA runs fp16 (or int8): fp16 unless asked otherwise; unsupported layers fall back to the GPU.
    assert summary["device"] == "DLA" and summary["dla_core"] == 1 and "FP16" in summary["flags"]
    assert "GPU_FALLBACK" in summary["flags"]
    assert trt.runtimes[-1].dla_core_at_deserialise == 1  # IRuntime::setDLACore before deserialising
    assert [p.name for p in tmp_path.glob("*.engine")] == [
        "tiny-0123456789ab-tiny-fp16-at8x4-dla1-trt10.3.0-orin-nvgpu.engine"]


def test_fused_engine_through_the_tensorrt_backend_gives_the_reference_payload(fake_trt, fused, small_models,
                                                                                tmp_path):
    """One engine, two outputs: the semantic map and the latents come out of the fused
    engine (run here by the TensorRT fake) and code to the CPU runtime's exact bytes."""
    from sensor_codec.engines.fused import FusedEncoder
    from sensor_codec.learned.camera_runtime import LearnedCameraRuntime

    runtime = LearnedCameraRuntime(models=str(small_models), backend="onnxruntime", threads=2)
    encoder = FusedEncoder(runtime, fused, backend=f"tensorrt:engines={tmp_path},precision=fp16")
    rgb = test_frames(3)[1]
    packed = encoder.compress(rgb, 3)
    reference = runtime.compress(rgb, 3)
    assert packed.sections == reference.sections and np.array_equal(packed.semantic, reference.semantic)
    (summary, _), = fake_trt.builds
    assert sorted(summary["profiles"][0]) == ["class_weights", "fraction_weight", "gain", "image", "thresholds"]
    (engine,) = tmp_path.glob("*.engine")
    assert engine.name == f"{fused.model_id}-fused_encoder-fp16-at300x200-trt10.3.0-orin-nvgpu.engine"


# ------------------------------------------------------------------ engines build: arguments, bags

def _build_args(*argv: str):
    import argparse

    from sensor_codec.engines.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, "engines")
    return parser.parse_args(["build", *argv])


def test_engines_build_arguments_become_build_settings(tmp_path):
    from sensor_codec.engines.cli import build_settings

    settings = build_settings(_build_args("--precision", "fp16", "--resolution", "1920x1080",
                                          "--resolution", "960x720", "--workspace-mib", "2048", "--dla-core", "0"))
    assert settings.precision == "fp16" and settings.plan.tag == "960x720_1920x1080"
    assert settings.workspace_mib == 2048 and settings.dla_core == 0 and settings.gpu_fallback is True
    settings = build_settings(_build_args("--precision", "int8", "--dynamic", "640x480:960x720:1920x1080",
                                          "--calib-images", str(tmp_path), "--calib-count", "8", "--calib-seed", "3"))
    assert settings.plan.dynamic[1] == Resolution(960, 720) and settings.calibration.count == 8
    assert settings.calibration.identity == f"{tmp_path.resolve()}||8|3" and not settings.calibration.is_bag
    settings = build_settings(_build_args("--precision", "int8", "--resolution", "960x720",
                                          "--calib-bag", str(tmp_path / "drive.mcap"), "--calib-topic", "/cam"))
    assert settings.calibration.is_bag and settings.calibration.topic == "/cam"
    for argv, message in (
            (("--precision", "int8", "--resolution", "960x720"), "int8 engines need calibration frames"),
            (("--precision", "int8", "--resolution", "960x720", "--calib-bag", "b.mcap"), "needs --calib-topic"),
            (("--resolution", "960x720", "--calib-images", "x"), "apply to --precision int8 only"),
            (("--resolution", "960x720", "--calib-topic", "/cam"), "--calib-bag only"),
            (("--precision", "int8", "--resolution", "960x720", "--calib-images", "a", "--calib-bag", "b",
              "--calib-topic", "/c"), "not both"),
            (("--resolution", "960x720", "--no-gpu-fallback"), "--dla-core builds only"),
            (("--precision", "fp32", "--resolution", "960x720", "--dla-core", "0"), "DLA has no fp32"),
            (("--resolution", "960x720", "--workspace-mib", "8"), "too small"),
            (("--dynamic", "960x720:640x480:1920x1080",), "min <= opt <= max"),
            (("--resolution", "960",), "not WIDTHxHEIGHT")):
        with pytest.raises((ConfigError, EngineError), match=message):
            build_settings(_build_args(*argv))
    with pytest.raises(SystemExit):  # argparse: a shape plan is required, and only one kind
        _build_args("--resolution", "960x720", "--dynamic", "640x480:960x720:1920x1080")


def _write_camera_bag(path: Path, frames: list[np.ndarray], topic: str = "/cam/image") -> None:
    from sensor_codec.bag.io import BagWriter
    from sensor_codec.frames import CameraFrame
    from sensor_codec.messages import frame_to_image, rosbags_types

    types_ = rosbags_types()
    with BagWriter(path) as writer:
        for i, rgb in enumerate(frames):
            # bgr8 on the wire: calibration must see RGB again.
            writer.write(topic, 1_000 + i, frame_to_image(
                CameraFrame(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", 1_000 + i, "cam"), types_))
            writer.write("/other", 1_000 + i, frame_to_image(CameraFrame(rgb[:, :, 0], "mono8", 0, "x"), types_))


def test_calibration_frames_from_a_rosbag(tmp_path):
    from sensor_codec.engines.calibration import bag_frames, source_frames

    rng = np.random.default_rng(11)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    bag = tmp_path / "drive"
    _write_camera_bag(bag, frames)
    source = CalibrationSource(str(bag), topic="/cam/image", count=2)
    assert source.is_bag
    got = list(source_frames(source))
    assert len(got) == 2 and all(np.array_equal(a, b) for a, b in zip(got, frames))
    from sensor_codec.errors import BagError

    with pytest.raises(BagError, match=r"no topic\(s\) \['/cam/missing'\]; it has \['/cam/image', '/other'\]"):
        list(bag_frames(bag, "/cam/missing", 2))
    with pytest.raises(ConfigError, match="name its image topic"):
        list(bag_frames(bag, "", 2))
    batches = list(calibration_batches(({"image": f.transpose(2, 0, 1)[None] / 255.0} for f in got),
                                       ["image"], {"image": (1, 3, 24, 32)}, 5))
    assert len(batches) == 2 and batches[1]["image"].dtype == np.float32
    assert np.allclose(batches[1]["image"][0, :, 5, 7], frames[1][5, 7] / 255.0)


def test_engines_build_int8_from_a_rosbag_and_fp16_defaults(fake_trt, fused, small_models, tmp_path, capsys):
    """``sensor-codec engines build`` end to end, with TensorRT's calls answered by the fake."""
    from sensor_codec.cli import main

    out = tmp_path / "engines"
    bag = tmp_path / "drive"
    _write_camera_bag(bag, test_frames(3))
    assert main(["engines", "build", "--graph", "backbone", "--precision", "int8", "--resolution", "96x64",
                 "--calib-bag", str(bag), "--calib-topic", "/cam/image", "--calib-count", "2",
                 "--models", str(small_models), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("built: ")
    summary, seen = fake_trt.builds[-1]
    assert "INT8" in summary["flags"] and summary["calibration_profile"] == 0 and len(seen) == 2
    assert seen[0]["image"].shape == (1, 3, 64, 96) and 0.0 <= seen[0]["image"].min() <= seen[0]["image"].max() <= 1.0
    assert not np.array_equal(seen[0]["image"], seen[1]["image"])
    assert len(list(out.glob("*.calib"))) == 1
    # At run time the tensorrt backend loads that int8 engine; a size nobody calibrated for is refused.
    from sensor_codec.engines.tensorrt_backend import TensorRTBackend
    from sensor_codec.learned.runtime import image_to_input, make_backend

    backbone = fused.backbone
    builds = len(fake_trt.builds)
    int8 = TensorRTBackend(backbone, 0, {"engines": str(out), "int8": True})
    feeds = {"image": image_to_input(np.ascontiguousarray(test_frames(1)[0][:64, :96]))}
    semantic, _ = int8.run("backbone", feeds)
    reference = make_backend(backbone, "onnxruntime").run("backbone", feeds)
    assert np.array_equal(semantic, reference[0]) and len(fake_trt.builds) == builds
    with pytest.raises(ConfigError, match="no usable int8 engine .* build it first"):
        int8.run("backbone", {"image": np.zeros((1, 3, 48, 64), np.float32)})
    # Defaults: the fused encoder (fp16) and the decoder (always exact fp32).
    assert main(["engines", "build", "--resolution", "160x120", "--models", str(small_models), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["built", "built"]
    assert "-fused_encoder-fp16-160x120-trt10.3.0-" in lines[0] and "-decoder-fp32-160x120-trt10.3.0-" in lines[1]
    assert [b[0]["flags"] for b in fake_trt.builds[-2:]] == [["FP16", "TF32"], []]
    assert main(["engines", "build", "--resolution", "160x120", "--models", str(small_models), "--out", str(out)]) == 0
    assert [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()] == ["up to date", "up to date"]
    assert main(["engines", "list", "--out", str(out)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("TensorRT 10.3.0 on Orin (nvgpu) (sm 8.7)") == 3 and " int8 96x64," in listing


# ------------------------------------------------------------------ import boundaries

def test_only_the_tensorrt_backend_imports_tensorrt_and_only_cuda_runtime_the_cuda_bindings():
    import re

    pattern = {"tensorrt": re.compile(r"^\s*(import tensorrt\b|from tensorrt\b)", re.MULTILINE),
               "cuda": re.compile(r"^\s*(import cuda\b|from cuda(\.| )\S* ?import)", re.MULTILINE)}
    found = {"tensorrt": [], "cuda": []}
    for path in sorted([*(REPO / "sensor_codec").rglob("*.py"), *(REPO / "nodes").rglob("*.py")]):
        text = path.read_text()
        for name, regex in pattern.items():
            if regex.search(text):
                found[name].append(str(path.relative_to(REPO)))
    assert found == {"tensorrt": ["sensor_codec/engines/tensorrt_backend.py"],
                     "cuda": ["sensor_codec/engines/cuda_runtime.py"]}
