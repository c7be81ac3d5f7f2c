"""Engines: backend table and auto choice, engine names / sidecars / stale decisions,
shapes and profiles, int8 calibration feeds, CUDA error translation, the fused
backbone + camera encoder graph, the engines CLI; TensorRT itself where it imports."""

from __future__ import annotations

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
            "sensor_codec.engines.cuda_runtime, sensor_codec.engines.cli, sensor_codec.engines.fused\n"
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
    with pytest.raises(ConfigError, match="build the int8 engine first"):
        settings_from_options({"int8": True})
    assert on_demand_tag({"y_hat": (1, 96, 48, 60), "inv_gain": (1, 96, 48, 60)}) == "at60x48"


# ------------------------------------------------------------------ fused graph (a small real release)

def make_camera_release(out: Path) -> str:
    """A seeded, untrained camera release next to a copy of the shipped backbone
    (the fused graph's equivalence does not depend on training). Follows the
    codec's own decoder contract (float or integer-exact synthesis)."""
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
    if hasattr(net.g_s, "calibrate"):  # integer-exact synthesis: fix its grids on seeded latents
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
    if hasattr(codec, "decoder_graph"):
        decoder, example = codec.decoder_graph(tensors), (torch.zeros(*latent_shape),)
    else:
        decoder, example = codec.DecoderGraph(net), (torch.rand(*latent_shape), torch.ones(*latent_shape))
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
    from sensor_codec.engines.tensorrt_backend import TensorRTBackend
    from sensor_codec.learned.camera_runtime import LearnedCameraRuntime
    from sensor_codec.learned.release import resolve_release

    from sensor_codec.engines.calibration import graph_feeds

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

    plan = ShapePlan.fixed([Resolution(160, 120)])
    cache = EngineCache(tmp_path)
    _, decision = cache.load_or_build(fused, "fused_encoder", BuildSettings(precision="fp32", plan=plan))
    assert decision.action == "build" and decision.path.is_file()
    runtime = separate_runtime(fused)
    rgb = test_frames(4)[3]
    feeds = fused_feeds(runtime, rgb, 4)
    semantic, qmap, y, z = TensorRTBackend(fused, 0, {"engines": str(tmp_path)}).run("fused_encoder", feeds)
    assert z.shape[1] == 48 and z.shape[2:] == (y.shape[2] // 4, y.shape[3] // 4)
    ref = runtime.compress(rgb, 4)
    assert semantic.shape == (1, 120, 160) and (semantic[0] == ref.semantic).mean() > 0.999
    assert qmap.shape == (1, 4, 5) and y.shape[1] == 96
