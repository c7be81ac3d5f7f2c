"""benchmarks/camera_learned.py: its core on synthetic frames (consistency of the
numbers it computes) and its agreement with the reference-codec benchmark."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import REPO_ROOT, synthetic_rgb

from sensor_codec.bench import runner
from sensor_codec.errors import ConfigError
from sensor_codec.frames import CameraFrame


def _load(name: str):
    """A benchmark script as a module (benchmarks/ is a folder of programs, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("camera_learned")


def _green_classes(rgb: np.ndarray) -> np.ndarray:
    """A stand-in segmenter: 3 classes by green level."""
    return np.digitize(rgb[:, :, 1], (85, 170)).astype(np.uint8)


def _frames(count: int, height: int = 176, width: int = 192):
    out = []
    for seed in range(count):
        rgb = synthetic_rgb(height, width, seed=seed)
        out.append(runner.BenchFrame(CameraFrame(rgb, "rgb8", 0, "cam"), f"f{seed}",
                                     labels=_green_classes(rgb)))
    return out


def test_classical_sweeps_are_the_reference_benchmarks_plus_lower_rates():
    bench = _load("camera_learned")
    reference = _load("reference_codecs").CAMERA_SPECS
    assert bench.REFERENCE_SPECS == tuple(s for s in reference if s != "png")
    assert bench.CLASSICAL_SPECS == bench.LOW_RATE_SPECS + bench.REFERENCE_SPECS
    # every low-rate sweep extends a reference codec below its lowest setting
    for low in bench.LOW_RATE_SPECS:
        codec, values = low.split(":")[:2]
        ref = next(s for s in bench.REFERENCE_SPECS if s.startswith(codec + ":"))
        name, ref_values = ref.split(":")[1].split("=")
        low_values = [int(v) for v in values.split("=")[1].split(",")]
        ref_low = min(int(v) for v in ref_values.split(","))
        # qp grows as quality falls; every other knob is a quality
        assert all(v > max(int(x) for x in ref_values.split(",")) for v in low_values) \
            if name == "qp" else all(v < ref_low for v in low_values)


def test_core_on_synthetic_frames_with_the_segmenter_that_made_the_labels(bench):
    frames = _frames(2)
    settings = runner.parse_codec_specs(["jpeg:quality=20,60,95", "webp:quality=40,90"])
    report = bench.evaluate(frames, settings, _green_classes, 3)
    # Labels are the segmenter's own output on the originals: mIoU exactly 1.
    assert report["original"]["miou"] == 1.0 and report["original"]["class_iou"] == [1.0] * 3
    assert report["frames"] == 2 and report["preservation"] is None and report["bd_rates"] == []
    rows = {(r["codec"], r["setting"]): r for r in report["summary"]}
    assert len(rows) == 5
    for row in rows.values():
        assert 0.0 < row["miou"] <= 1.0 and len(row["class_iou"]) == 3
        assert 0.9 < row["ms_ssim"] < 1.0 and 20.0 < row["psnr"] < 50.0
    jpeg = [rows[("jpeg", f"quality={q}")] for q in (20, 60, 95)]
    assert jpeg[0]["bpp"] < jpeg[1]["bpp"] < jpeg[2]["bpp"]
    assert jpeg[0]["psnr"] < jpeg[1]["psnr"] < jpeg[2]["psnr"]
    # Fewer decoded pixels cross a class boundary as quality rises.
    assert jpeg[0]["miou"] <= jpeg[2]["miou"] and jpeg[2]["miou"] > 0.9


def test_bd_rates_of_a_codec_against_itself_are_zero_with_full_overlap(bench):
    frames = _frames(1)
    report = bench.evaluate(frames, runner.parse_codec_specs(["jpeg:quality=30,60,90"]),
                            _green_classes, 3)
    twin = [dict(r, codec=bench.LEARNED) for r in report["summary"]]
    rows = bench._comparisons(report["summary"] + twin, bench.LEARNED)
    assert {(r["anchor"], r["quality"]) for r in rows} == {("jpeg", "psnr"), ("jpeg", "ms_ssim_db")}
    for row in rows:
        assert row["bd_rate_percent"] == pytest.approx(0.0, abs=1e-9)
        assert row["bd_quality"] == pytest.approx(0.0, abs=1e-9)
        assert row["overlap"]["test_fraction"] == row["overlap"]["anchor_fraction"] == 1.0
        assert row["limited_overlap"] is False
    psnr_row = next(r for r in rows if r["quality"] == "psnr")
    # Equal to JPEG does not meet "at most -40 % against JPEG".
    assert psnr_row["bar_percent"] == -40.0 and psnr_row["bar_met"] is False


def test_learned_codec_in_the_core_gives_preservation_at_its_lowest_level(bench, tmp_path):
    frames = _frames(1)
    from sensor_codec.learned.release import resolve_release

    model_id = resolve_release("camera").model_id
    settings = runner.parse_codec_specs([bench.learned_spec(model_id, [0, 7], 1),
                                         "jpeg:quality=1,30,60,90"])
    report = bench.evaluate(frames, settings, _green_classes, 3)
    learned = {r["settings"]["quality"]: r for r in report["summary"] if r["codec"] == bench.LEARNED}
    assert learned[0]["bpp"] < learned[7]["bpp"] and learned[0]["psnr"] < learned[7]["psnr"]
    sp = report["preservation"]
    assert sp["level"] == 0 and sp["miou_original"] == 1.0
    assert sp["ratio"] == pytest.approx(learned[0]["miou"]) and sp["bar_met"] == (sp["ratio"] >= 0.9)
    # the classical rows listed beside it are exactly those within twice its rate
    jpeg = [r for r in report["summary"] if r["codec"] == "jpeg"]
    expected = sorted((r for r in jpeg if r["bpp"] <= 2 * sp["bpp"]), key=lambda r: r["bpp"])
    assert expected and [(r["setting"], r["ratio"]) for r in sp["classical_nearby"]] == [
        (r["setting"], pytest.approx(r["miou"])) for r in expected]
    assert {(r["anchor"], r["quality"]) for r in report["bd_rates"]} == {
        ("jpeg", "psnr"), ("jpeg", "ms_ssim_db")}
    # The report the script prints and the files it writes come from these numbers.
    report.update(backbone_id="stand-in", timing=None)
    text = bench.format_report(report)
    assert f"= {100 * sp['ratio']:.1f} %" in text and "quality=7" in text
    assert "classical codecs at up to 2x that rate" in text
    charts = bench.write_charts(report, tmp_path)
    assert sorted(p.name for p in charts) == ["camera_learned_miou_vs_bpp.png",
                                              "camera_learned_ms_ssim_vs_bpp.png",
                                              "camera_learned_psnr_vs_bpp.png"]
    assert json.loads(json.dumps(runner.json_ready(report), allow_nan=False))["frames"] == 1


def test_levels_option(bench):
    assert bench._levels(None, 8) == list(range(8))
    assert bench._levels("4,0,4", 8) == [0, 4]
    for bad in ("8", "a", ""):
        with pytest.raises(ConfigError, match="levels"):
            bench._levels(bad, 8)


def test_upscale_to_960x720(bench):
    big = bench.upscale_2x(synthetic_rgb(360, 480, seed=2))
    assert big.shape == (720, 960, 3) and big.dtype == np.uint8
    # Pixel-centre bilinear: a ramp of step 8 becomes a ramp of step 4 (borders repeat),
    # a flat image stays flat.
    ramp = np.repeat((8 * np.arange(6, dtype=np.uint8))[None, :, None], 3, axis=2)
    row = bench.upscale_2x(np.repeat(ramp, 2, axis=0))[0, :, 0]
    assert row.tolist() == [0, 2, 6, 10, 14, 18, 22, 26, 30, 34, 38, 40]
    flat = np.full((3, 5, 3), 77, np.uint8)
    assert (bench.upscale_2x(flat) == 77).all()
